"""Shared fixtures. The database is real: PostgreSQL from ``DATABASE_URL`` (``make test``
starts a throwaway embedded server when it is unset), or SQLite for the portable subset."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection


def wait_for(condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.05):
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)


@pytest.fixture
def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL behaviour")


def run_threads(count: int, target: Callable[[int], object]) -> list:
    """Run ``target(i)`` in ``count`` threads released at once; return results or exceptions."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def body(i: int) -> None:
        from django.db import connections

        barrier.wait()
        try:
            results[i] = target(i)
        except Exception as exc:
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_database_url() -> str:
    """A DATABASE_URL for other processes, pointing at pytest-django's test database."""
    from urllib.parse import quote

    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    auth = quote(settings["USER"] or "")
    if settings["PASSWORD"]:
        auth += ":" + quote(settings["PASSWORD"])
    host, name = settings["HOST"] or "", quote(settings["NAME"])
    if host.startswith("/"):
        return f"postgresql://{auth}@/{name}?host={host}"
    return f"postgresql://{auth}@{host}:{settings['PORT'] or 5432}/{name}"


test_database_url.__test__ = False  # a helper, not a test


EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "example"


class PollerProcess:
    """A real ``manage.py fullctl_poll_tasks`` in its own process group, logging to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.log_file = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "fullctl_poll_tasks", *args],
            cwd=EXAMPLE_DIR, env=env, stdout=self.log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> str:
        return wait_for(lambda: text in self.output and self.output, timeout)

    def worker_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"worker started worker=\S+:(\d+)", self.output)]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            # drain, then a second signal: stop at once (tasks are requeued either way)
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(0.5)
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log_file.close()


@pytest.fixture
def start_poller(tmp_path):
    """Start pollers against the test database; each is stopped (and its group killed) after."""
    started: list[PollerProcess] = []

    def start(*args: str, settings: dict | None = None, env: dict | None = None):
        environment = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "PYTHONUNBUFFERED": "1",
            "TASK_TRACK_INTERVAL_SECONDS": "0.5",
            "FULLCTL_POOL_SETTINGS": json.dumps(settings or {}),
            **(env or {}),
        }
        poller = PollerProcess(list(args), environment, tmp_path / f"poller-{len(started)}.log")
        started.append(poller)
        return poller

    yield start
    for poller in started:
        poller.stop()


@pytest.fixture
def db_proxy():
    """A cuttable TCP path to the test database, and the DATABASE_URL that goes through it."""
    from urllib.parse import urlsplit, urlunsplit

    from netproxy import CuttableProxy

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL behaviour")
    settings = connection.settings_dict
    host = settings["HOST"] or "/var/run/postgresql"
    port = int(settings["PORT"] or 5432)
    target = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
    proxy = CuttableProxy(target)
    parts = urlsplit(test_database_url())
    auth = parts.netloc.rsplit("@", 1)[0]
    proxy.url = urlunsplit(
        (parts.scheme, f"{auth}@127.0.0.1:{proxy.port}", parts.path, "", "")
    )
    yield proxy
    proxy.close()
