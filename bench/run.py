"""The benchmark: ``make bench`` (PostgreSQL from DATABASE_URL, else an embedded server).

Measures in one run, on the same database and machine:

* burn-down: a backlog of no-op tasks drained by ``fullctl_poll_tasks -p 1/2/4``;
* the floor: the same claim/complete loop as raw SQL with psycopg, 1/2/4 processes;
* enqueue-to-start latency with idle workers (``-p 2 --poll-interval 30``);
* peak memory (VmHWM) of the poller's worker processes.

Every scenario starts from an empty task table. Figures are ratios to read side by side,
not promises: nothing here fails on a slow machine. See bench/README.md.
"""

import argparse
import math
import multiprocessing
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

EXAMPLE = Path(__file__).resolve().parent.parent / "example"
OP = "task_noop"
PROCESS_COUNTS = (1, 2, 4)


def setup_django() -> None:
    sys.path.insert(0, str(EXAMPLE))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# -- database helpers (Django is set up by then) ------------------------------


def sql(statement: str, params: list | None = None) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def reset() -> None:
    """A fresh database state: no task rows, no heartbeats."""
    from django_fullctl.models import Task, TaskHeartbeat

    tables = f"{TaskHeartbeat._meta.db_table}, {Task._meta.db_table}"
    sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


def enqueue_backlog(n: int) -> None:
    """Insert ``n`` pending no-op tasks in one transaction (what ``create_task`` would
    store) and analyze; the table trigger wakes idle workers as for ``create_task``."""
    from example_tasks.models import NoopTask

    from django_fullctl import conf

    rows = [
        NoopTask(op=OP, param={"args": [], "kwargs": {}}, source=conf.worker_id(),
                 max_attempts=conf.settings().default_max_attempts)
        for _ in range(n)
    ]
    NoopTask.objects.bulk_create(rows, batch_size=2000)
    sql(f"ANALYZE {NoopTask._meta.db_table}")


def completed() -> int:
    from django_fullctl.models import Task

    return Task.objects.filter(status="completed").count()


def row_span() -> tuple[datetime, datetime]:
    """First ``started`` and last ``finished`` of the rows: the burn-down as the rows saw it."""
    from django.db.models import Max, Min

    from django_fullctl.models import Task

    span = Task.objects.aggregate(first=Min("started"), last=Max("finished"))
    return span["first"], span["last"]


def listeners(since: datetime) -> int:
    """Idle workers: a worker LISTENs once its first claim found nothing."""
    from django_fullctl import notify

    return sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND query = %s AND backend_start >= %s", [f"LISTEN {notify.NEW_CHANNEL}", since],
    )[0][0]


def wait_for(check, what: str, timeout: float, poller: "Poller | None" = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if poller is not None and poller.proc.poll() is not None:
            raise SystemExit(f"poller exited ({poller.proc.returncode}) waiting for {what}:\n"
                             + poller.log_tail())
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


# -- the poller as a real subprocess -----------------------------------------------


class Poller:
    def __init__(self, processes: int, poll_interval: float):
        fd, path = tempfile.mkstemp(prefix="fullctl-bench-poller-", suffix=".log")
        self.log = Path(path)
        self.since = datetime.now(UTC)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "fullctl_poll_tasks", "-p", str(processes),
             "--poll-interval", str(poll_interval)],
            cwd=EXAMPLE, stdout=fd, stderr=subprocess.STDOUT,
        )
        os.close(fd)
        self.startup = 0.0  # seconds until every worker is idle
        self.exit_code: int | None = None

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text().splitlines()[-lines:])

    def worker_pids(self) -> list[int]:
        text = self.log.read_text()
        return [int(pid) for pid in re.findall(r"worker started worker=\S+:(\d+)", text)]

    def peak_rss_mib(self) -> list[float]:
        """VmHWM of each live worker process, in MiB."""
        peaks = []
        for pid in self.worker_pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue
            peaks.append(int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 1024)
        return peaks

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the supervisor and its workers."""
        return sum(cpu_seconds(pid) for pid in [self.proc.pid, *self.worker_pids()])

    def stop(self) -> int:
        """SIGTERM: the poller drains and exits 0."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.exit_code = self.proc.wait()
        self.log.unlink()
        return self.exit_code


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def poller(processes: int, poll_interval: float):
    """A running poller whose workers are all idle (listening) when the block starts."""
    running = Poller(processes, poll_interval)
    try:
        wait_for(lambda: listeners(running.since) >= processes,
                 f"{processes} idle workers", 120, running)
        running.startup = time.monotonic() - running.started
        yield running
    finally:
        if running.proc.poll() is None:
            code = running.stop()
            if code != 0:
                print(f"  ! poller exited with {code} after SIGTERM", flush=True)


# -- scenarios ------------------------------------------------------------------


def burn_down_orm(n: int, processes: int) -> dict:
    """Idle workers, then a backlog of ``n`` tasks appears (one commit + NOTIFY)."""
    reset()
    # a long poll interval: only the NOTIFY after the insert wakes the workers
    with poller(processes, poll_interval=600) as running:
        cpu = running.cpu_seconds()
        enqueue_backlog(n)
        wait_for(lambda: completed() >= n, f"{n} completed tasks", 900, running)
        cpu = running.cpu_seconds() - cpu
        memory = running.peak_rss_mib()
    first, last = row_span()
    return {"rate": n / (last - first).total_seconds(), "cpu": cpu / n, "memory": memory,
            "startup": running.startup, "exit": running.exit_code}


def raw_worker(params: dict, claim_sql: str, complete_sql: str, barrier) -> None:
    """One process of the floor: claim one row, then record it completed, with the
    library's own two statements; autocommit; until nothing is left."""
    worker_id = f"raw:{os.getpid()}"
    with psycopg.connect(**params, autocommit=True, row_factory=dict_row) as conn:
        barrier.wait()
        while True:
            now = datetime.now(UTC)
            row = conn.execute(claim_sql, [[OP], 1, worker_id, now, now, now]).fetchone()
            if row is None:
                return
            now = datetime.now(UTC)
            conn.execute(complete_sql, [None, 0.0, now, now, row["id"], row["attempt"], now])


def burn_down_raw(n: int, processes: int) -> dict:
    from django.db import connections

    from django_fullctl import notify
    from django_fullctl.models import Task

    reset()
    enqueue_backlog(n)
    # the library's own statements, the same text the poller sends
    claim_sql = Task.queue.statements["claim"]
    complete_sql = Task.queue.statements["complete"]
    params = notify.connection_params()
    connections.close_all()  # nothing of Django's crosses the fork
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    workers = [context.Process(target=raw_worker, args=(params, claim_sql, complete_sql, barrier))
               for _ in range(processes)]
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    for process in workers:
        process.start()
    for process in workers:
        process.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    if completed() != n:
        raise SystemExit(f"raw SQL loop completed {completed()} of {n} tasks")
    first, last = row_span()
    return {"rate": n / (last - first).total_seconds(), "cpu": cpu / n}


def latency(samples: int, pause: float) -> dict:
    """Idle workers; tasks created one at a time; ``started - created`` of each row."""
    from example_tasks.models import NoopTask

    from django_fullctl.models import Task

    reset()
    with poller(2, poll_interval=30) as running:
        for _ in range(samples):
            NoopTask.create_task()
            time.sleep(pause)
        wait_for(lambda: completed() >= samples, f"{samples} completed tasks", 120, running)
        memory = running.peak_rss_mib()
    ms = sorted((started - created).total_seconds() * 1000
                for created, started in Task.objects.values_list("created", "started"))
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": ms[-1],
            "memory": memory, "exit": running.exit_code}


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    return sorted_values[max(0, math.ceil(pct / 100 * len(sorted_values)) - 1)]


# -- report -----------------------------------------------------------------------


def describe_machine() -> str:
    version = sql("SHOW server_version")[0][0]
    return (f"PostgreSQL {version}, Python {platform.python_version()},"
            f" {os.cpu_count()} CPUs, {platform.machine()} {platform.system()}")


def mib(values: list[float]) -> str:
    return f"{max(values):.0f} MiB" if values else "?"


def report(n: int, orm: dict, raw: dict, lat: dict, samples: int, pause: float) -> None:
    print(f"\nBurn-down of {n} no-op tasks (tasks/s: first row started to last row finished)")
    print(f"{'processes':>9} {'ORM poller':>11} {'raw SQL':>8} {'ORM/raw':>8}"
          f" {'CPU ORM':>9} {'CPU raw':>9} {'start-up':>9} {'worker peak RSS':>16}")
    for p in PROCESS_COUNTS:
        o, r = orm[p], raw[p]
        print(f"{p:>9} {o['rate']:>11.0f} {r['rate']:>8.0f} {o['rate'] / r['rate']:>8.0%}"
              f" {o['cpu'] * 1000:>6.2f} ms {r['cpu'] * 1000:>6.2f} ms {o['startup']:>7.1f} s"
              f" {mib(o['memory']):>16}")
    print("  target: ORM/raw at least 70%.  CPU: client CPU time per task, of the poller's"
          " processes (supervisor + workers) and of the raw SQL processes")
    print(f"\nEnqueue-to-start latency: poller -p 2 --poll-interval 30 idle, {samples} tasks"
          f" created {pause * 1000:g} ms apart, row started - created")
    print(f"  p50 {lat['p50']:.1f} ms   p99 {lat['p99']:.1f} ms   max {lat['max']:.1f} ms"
          f"   (target: p50 under 10 ms)   worker peak RSS {mib(lat['memory'])}")
    codes = sorted({r["exit"] for r in [*orm.values(), lat]})
    print(f"\nPoller exit codes after SIGTERM: {', '.join(map(str, codes))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=None, help="burn-down size (10000)")
    parser.add_argument("--samples", type=int, default=None, help="latency samples (200)")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between samples")
    parser.add_argument("--quick", action="store_true", help="1000 tasks, 50 samples")
    args = parser.parse_args()
    n = args.tasks or (1000 if args.quick else 10000)
    samples = args.samples or (50 if args.quick else 200)
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("needs PostgreSQL in DATABASE_URL: run `make bench`", file=sys.stderr)
        return 2
    setup_django()
    print(f"fullctl-tasks benchmark: {n} no-op tasks; {describe_machine()}", flush=True)
    orm, raw = {}, {}
    for p in PROCESS_COUNTS:
        orm[p] = burn_down_orm(n, p)
        print(f"  poller -p {p}: {orm[p]['rate']:6.0f} tasks/s", flush=True)
        raw[p] = burn_down_raw(n, p)
        print(f"  raw SQL x{p}:  {raw[p]['rate']:6.0f} tasks/s", flush=True)
    lat = latency(samples, args.pause)
    reset()
    report(n, orm, raw, lat, samples, args.pause)
    return 0


if __name__ == "__main__":
    sys.exit(main())
