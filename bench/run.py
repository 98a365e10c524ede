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


def add_future_rows(count: int) -> None:
    """``count`` rows scheduled for tomorrow, copied from one made by the library."""
    from datetime import timedelta

    from example_tasks.models import NoopTask

    from django_fullctl.models import Task

    template = NoopTask.configure(run_after=timedelta(days=1)).create_task()
    columns = ", ".join(f.column for f in Task._meta.concrete_fields if not f.primary_key)
    table = Task._meta.db_table
    sql(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table},"
        f" generate_series(2, %s) WHERE id = %s", [count, template.pk])
    sql(f"ANALYZE {table}")


def claim_cost(pending: int, future: int, repeats: int) -> dict:
    """One claim (the library's own statement, rolled back) with ``pending`` runnable rows
    and ``future`` rows not due yet: the median time and the buffers it touched."""
    from django.db import connection, transaction

    from django_fullctl.models import Task

    reset()
    enqueue_backlog(pending)
    if future:
        add_future_rows(future)
    statement = Task.queue.statements["claim"]
    params = [[OP], 1, "bench:0", datetime.now(UTC), datetime.now(UTC), datetime.now(UTC)]
    times = []
    for _ in range(repeats):
        with transaction.atomic(), connection.cursor() as cursor:
            started = time.perf_counter()
            cursor.execute(statement, params)
            cursor.fetchall()
            times.append((time.perf_counter() - started) * 1000)
            transaction.set_rollback(True)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        transaction.set_rollback(True)
    hits = re.findall(r"Buffers: shared hit=(\d+)", plan)
    return {"ms": sorted(times)[len(times) // 2], "buffers": int(hits[0]) if hits else None}


def report_claim_cost(pending: int, future: int, repeats: int) -> None:
    base = claim_cost(pending, 0, repeats)
    with_future = claim_cost(pending, future, repeats)
    reset()
    print(f"\nClaim cost: one claim, median of {repeats} (rolled back), {pending} runnable rows")
    print(f"{'case':>28} {'ms':>7} {'buffers':>8} {'ratio':>6}")
    for name, row in ((f"{pending} pending", base),
                      (f"+ {future} not due yet", with_future)):
        print(f"{name:>28} {row['ms']:>7.3f} {row['buffers'] or 0:>8} "
              f"{row['ms'] / base['ms']:>6.2f}x")
    print("  target: within 1.2x (rows not due stay out of the claim index)")


def enqueue_rates(n: int) -> dict[str, float]:
    """Tasks/s created: one ``create_task`` per transaction, ``n`` in one transaction,
    one ``create_tasks`` of ``n``, and a raw ``executemany`` of the same rows (the floor)."""
    from django.db import connection, transaction
    from example_tasks.models import NoopTask

    def timed(fn) -> float:
        reset()
        started = time.perf_counter()
        fn()
        return n / (time.perf_counter() - started)

    def raw() -> None:
        template = NoopTask.create_task()
        columns = [f.column for f in NoopTask._meta.concrete_fields if not f.primary_key]
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {', '.join(columns)} FROM {NoopTask._meta.db_table}"
                           " WHERE id = %s", [template.pk])
            row = cursor.fetchone()
            insert = (f"INSERT INTO {NoopTask._meta.db_table} ({', '.join(columns)})"
                      f" VALUES ({', '.join(['%s'] * len(columns))})")
            with transaction.atomic():
                cursor.executemany(insert, [row] * (n - 1))

    def one_transaction() -> None:
        with transaction.atomic():
            for _ in range(n):
                NoopTask.create_task()

    return {
        "create_task, one transaction each": timed(lambda: [NoopTask.create_task()
                                                            for _ in range(n)]),
        f"create_task x{n} in one transaction": timed(one_transaction),
        f"create_tasks of {n}": timed(lambda: NoopTask.create_tasks([((), {})] * n)),
        f"raw executemany of {n}": timed(raw),
    }


def report_enqueue(n: int) -> None:
    rates = enqueue_rates(n)
    reset()
    print(f"\nEnqueue: tasks/s created from one process ({n} tasks)")
    for name, rate in rates.items():
        print(f"{name:>40} {rate:>9.0f}")
    print("  target: create_tasks at least 20,000 tasks/s")


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
    parser.add_argument("--future-rows", type=int, default=1_000_000,
                        help="rows not due yet in the claim-cost table (1000000)")
    parser.add_argument("--claim-cost-only", action="store_true",
                        help="only the claim-cost table")
    args = parser.parse_args()
    n = args.tasks or (1000 if args.quick else 10000)
    samples = args.samples or (50 if args.quick else 200)
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("needs PostgreSQL in DATABASE_URL: run `make bench`", file=sys.stderr)
        return 2
    setup_django()
    print(f"fullctl-tasks benchmark: {n} no-op tasks; {describe_machine()}", flush=True)
    if args.claim_cost_only:
        report_claim_cost(10_000, args.future_rows, 300)
        report_enqueue(5000)
        return 0
    orm, raw = {}, {}
    for p in PROCESS_COUNTS:
        orm[p] = burn_down_orm(n, p)
        print(f"  poller -p {p}: {orm[p]['rate']:6.0f} tasks/s", flush=True)
        raw[p] = burn_down_raw(n, p)
        print(f"  raw SQL x{p}:  {raw[p]['rate']:6.0f} tasks/s", flush=True)
    lat = latency(samples, args.pause)
    reset()
    report(n, orm, raw, lat, samples, args.pause)
    report_claim_cost(10_000, args.future_rows, 300)
    report_enqueue(5000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
