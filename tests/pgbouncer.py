"""A real PgBouncer in transaction mode in front of the test database, for the tests of
``TASK_DATABASE_POOLER = "transaction"`` (``make test`` installs Debian's ``pgbouncer``
as root; without it the ``pgbouncer`` fixture skips, saying so).

It is as strict as a transaction-mode pooler can be: every transaction may get any of a
few server connections, and each server connection is wiped with ``DISCARD ALL`` after
every transaction (``server_reset_query_always``), so whatever relies on the session
(a LISTEN, a prepared statement, a session advisory lock, a ``SET``, a temporary table,
a cursor ``WITH HOLD``) is gone by the next transaction instead of failing now and then.
It listens on its own port on 127.0.0.1, with its files in a temporary folder, and
connects to the test database the way Django does (TCP or the unix socket).
"""

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import EXAMPLE_DIR, process_env

# fewer server connections than the poller and its workers have clients: transactions of
# different clients take turns on the same server connections
SERVER_CONNECTIONS = 3


def binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


def version(path: str) -> tuple[int, ...]:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(n) for n in match.groups() if n is not None) if match else (0,)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PgBouncer:
    """One pgbouncer process for one database (the ``settings`` of a Django connection)."""

    def __init__(self, settings: dict):
        path = binary()
        if path is None:
            raise FileNotFoundError("pgbouncer")
        self.binary = path
        self.version = version(path)
        self.database = settings["NAME"]
        self.user = settings["USER"] or "postgres"
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="fullctl-pgbouncer-"))
        host = settings["HOST"] or "/var/run/postgresql"
        server = [f"host={host}", f"port={settings['PORT'] or 5432}", f"dbname={self.database}"]
        if settings["PASSWORD"]:  # the server asks for it; the client side trusts
            server += [f"user={self.user}", f"password={settings['PASSWORD']}"]
        lines = [
            "[databases]",
            f"{self.database} = {' '.join(server)}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {self.dir / 'users.txt'}",
            f"admin_users = {self.user}",
            "pool_mode = transaction",
            f"default_pool_size = {SERVER_CONNECTIONS}",
            "max_client_conn = 200",
            "server_reset_query = DISCARD ALL",
            "server_reset_query_always = 1",
            "ignore_startup_parameters = extra_float_digits",
        ]
        if self.version >= (1, 21):
            # 1.21 and later could keep prepared statements: not here, we test without
            lines.append("max_prepared_statements = 0")
        run_as = self._unix_user(host)
        if run_as:  # pgbouncer will not run as root: it switches to this user
            lines.append(f"user = {run_as}")
        (self.dir / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        (self.dir / "users.txt").write_text(f'"{self.user}" ""\n')
        if run_as:
            entry = pwd.getpwnam(run_as)
            for each in (self.dir, *self.dir.iterdir()):
                os.chown(each, entry.pw_uid, entry.pw_gid)
        self.log_path = self.dir / "pgbouncer.log"
        self.process: subprocess.Popen | None = None

    @staticmethod
    def _unix_user(host: str) -> str | None:
        """As root, the user to run as: the one that may open the server's unix socket (its
        folder's owner), else nobody."""
        if os.geteuid() != 0:
            return None
        if host.startswith("/"):
            owner = pwd.getpwuid(os.stat(host).st_uid).pw_name
            if owner != "root":
                return owner
        return "nobody"

    @property
    def url(self) -> str:
        """A DATABASE_URL for Django that goes through the pooler."""
        return f"postgresql://{quote(self.user)}@127.0.0.1:{self.port}/{quote(self.database)}"

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={self.database} user={self.user}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 20.0) -> None:
        import psycopg

        log = open(self.log_path, "ab")  # noqa: SIM115 - the process holds it
        self.process = subprocess.Popen(
            [self.binary, str(self.dir / "pgbouncer.ini")], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.process.returncode}:\n{self.log}")
            try:
                with psycopg.connect(self.conninfo, connect_timeout=2) as probe:
                    probe.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not answer:\n{self.log}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: immediate shutdown, server connections closed
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module", name="pgbouncer")
def pgbouncer_fixture(django_db_setup):
    """A transaction-mode PgBouncer in front of the test database, stopped after the module
    (before the test database is dropped: its server connections are gone by then)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PgBouncer sits in front of PostgreSQL")
    if binary() is None:
        pytest.skip("pgbouncer is not installed (as root, `make test` installs Debian's"
                    " pgbouncer package; or apt-get install pgbouncer)")
    bouncer = PgBouncer(dict(connection.settings_dict))
    try:
        bouncer.start()
        yield bouncer
    finally:
        with contextlib.suppress(Exception):
            bouncer.stop()


def direct_conninfo() -> str:
    """``TASK_LISTEN_DATABASE_URL`` for the test database itself: host and port named (the
    rest comes from the default database, whose port is the pooler's)."""
    from django.db import connection

    settings = connection.settings_dict
    return f"host={settings['HOST'] or '/var/run/postgresql'} port={settings['PORT'] or 5432}"


def pooled_settings(bouncer: PgBouncer, listen: bool = True) -> dict[str, str]:
    """The environment variables that put a Django process behind ``bouncer``
    (``TASK_DATABASE_POOLER=transaction``), listening straight to the test database when
    ``listen`` (``TASK_LISTEN_DATABASE_URL``)."""
    return {"DATABASE_URL": bouncer.url, "TASK_DATABASE_POOLER": "transaction",
            "TASK_LISTEN_DATABASE_URL": direct_conninfo() if listen else ""}


def pooled_env(bouncer: PgBouncer, listen: bool = True, **extra: str) -> dict[str, str]:
    """This process's environment for a Django process behind ``bouncer``."""
    return process_env(**pooled_settings(bouncer, listen), PYTHONUNBUFFERED="1", **extra)


def start_shell(code: str, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``manage.py shell -c code`` in the example project, output to ``log_path``."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", code], cwd=EXAMPLE_DIR, env=env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )


def run_shell(code: str, env: dict[str, str], timeout: float = 60.0) -> str:
    """Run ``code`` in ``manage.py shell``; its output, or an AssertionError with it."""
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=EXAMPLE_DIR, env=env,
        capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
