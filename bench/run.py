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
from memory import core_pss, describe, pod_pss, poller_pids
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


def xact_commits() -> int:
    """Transactions committed in this database so far, by every backend whose counts have
    reached the statistics (a backend reports when it exits, or idle, at most once a
    second): read after the measured processes have disconnected."""
    sql("SELECT pg_stat_force_next_flush()")  # this backend's own counts, at its commit
    sql("SELECT pg_stat_clear_snapshot()")
    return sql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")[0][0]


def wait_disconnected(since: datetime) -> None:
    """Until every backend that connected since ``since`` (but this one) is gone, so
    their statistics have been reported."""
    wait_for(lambda: sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_start >= %s AND pid <> pg_backend_pid()", [since])[0][0] == 0,
        "the measured connections to close", 60)


def wait_for(check, what: str, timeout: float, poller: "Poller | None" = None) -> int:
    """Until ``check()``; returns how many times it was called (each call of the bench's
    own queries is one commit, which the commit counts leave out)."""
    deadline = time.monotonic() + timeout
    calls = 1
    while not check():
        calls += 1
        if poller is not None and poller.proc.poll() is not None:
            raise SystemExit(f"poller exited ({poller.proc.returncode}) waiting for {what}:\n"
                             + poller.log_tail())
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)
    return calls


# -- the poller as a real subprocess -----------------------------------------------


class Poller:
    def __init__(self, processes: int, poll_interval: float, env: dict | None = None):
        fd, path = tempfile.mkstemp(prefix="fullctl-bench-poller-", suffix=".log")
        self.log = Path(path)
        self.since = datetime.now(UTC)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "fullctl_poll_tasks", "-p", str(processes),
             "--poll-interval", str(poll_interval)],
            cwd=EXAMPLE, stdout=fd, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
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
def poller(processes: int, poll_interval: float, env: dict | None = None):
    """A running poller whose workers are all idle (listening) when the block starts."""
    running = Poller(processes, poll_interval, env)
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


def burn_down_orm(n: int, processes: int, env: dict | None = None) -> dict:
    """Idle workers, then a backlog of ``n`` tasks appears (one commit + NOTIFY)."""
    reset()
    # a long poll interval: only the NOTIFY after the insert wakes the workers
    with poller(processes, poll_interval=600, env=env) as running:
        cpu = running.cpu_seconds()
        commits = xact_commits()
        enqueue_backlog(n)  # two commits of the bench's own: the insert, ANALYZE
        own = 2 + wait_for(lambda: completed() >= n, f"{n} completed tasks", 900, running)
        cpu = running.cpu_seconds() - cpu
        memory = running.peak_rss_mib()
        pss = pod_pss(poller_pids(running.proc.pid))
    wait_disconnected(running.since)
    commits = xact_commits() - commits - own - 2  # and the two reads of the counter
    first, last = row_span()
    return {"rate": n / (last - first).total_seconds(), "cpu": cpu / n, "memory": memory,
            "startup": running.startup, "exit": running.exit_code, "commits": commits / n,
            "pss": pss}


def raw_worker(params: dict, claim_sql: str, picking: list, complete_sql: str,
               barrier) -> None:
    """One process of the floor: claim one row, then record it completed, with the
    library's own two statements; autocommit; until nothing is left."""
    worker_id = f"raw:{os.getpid()}"
    with psycopg.connect(**params, autocommit=True, row_factory=dict_row) as conn:
        barrier.wait()
        while True:
            now = datetime.now(UTC)
            row = conn.execute(claim_sql, [*picking, worker_id, now, now, now]).fetchone()
            if row is None:
                return
            now = datetime.now(UTC)
            conn.execute(complete_sql, [None, 0.0, now, now, row["id"], row["attempt"], now])


def burn_down_raw(n: int, processes: int) -> dict:
    from django.db import connections

    from django_fullctl import notify
    from django_fullctl.models import Task
    from django_fullctl.queue import claim_params

    reset()
    enqueue_backlog(n)
    # the library's own statements, the same text the poller sends
    claim_sql, picking = Task.queue.statements["claim"], claim_params([OP], 1)
    complete_sql = Task.queue.statements["complete"]
    params = notify.connection_params()
    connections.close_all()  # nothing of Django's crosses the fork
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    since = datetime.now(UTC)
    commits = xact_commits()
    workers = [
        context.Process(target=raw_worker,
                        args=(params, claim_sql, picking, complete_sql, barrier))
        for _ in range(processes)
    ]
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    for process in workers:
        process.start()
    for process in workers:
        process.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    wait_disconnected(since)
    commits = xact_commits() - commits - 2
    if completed() != n:
        raise SystemExit(f"raw SQL loop completed {completed()} of {n} tasks")
    first, last = row_span()
    return {"rate": n / (last - first).total_seconds(), "cpu": cpu / n, "commits": commits / n}


def latency(samples: int, pause: float) -> dict:
    """Idle workers; tasks created one at a time; ``started - created`` of each row."""
    from example_tasks.models import NoopTask

    from django_fullctl.models import Task

    reset()
    committed = {}  # task id -> when create_task() returned, its INSERT committed
    with poller(2, poll_interval=30) as running:
        for _ in range(samples):
            task = NoopTask.create_task()
            committed[task.pk] = datetime.now(UTC)
            time.sleep(pause)
        wait_for(lambda: completed() >= samples, f"{samples} completed tasks", 120, running)
        memory = running.peak_rss_mib()
    rows = Task.objects.values_list("pk", "created", "started")
    ms = sorted((started - created).total_seconds() * 1000 for _, created, started in rows)
    commit_ms = sorted((committed[pk] - created).total_seconds() * 1000
                       for pk, created, _ in rows)
    after_ms = sorted((started - committed[pk]).total_seconds() * 1000
                      for pk, _, started in rows)
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": ms[-1],
            "commit_p50": percentile(commit_ms, 50), "after_p50": percentile(after_ms, 50),
            "memory": memory, "exit": running.exit_code}


def copy_rows(count: int, template_pk: int, **overrides: object) -> None:
    """``count`` more rows like the row ``template_pk``, with ``overrides`` (column ->
    SQL literal), in one INSERT ... SELECT; then ANALYZE."""
    from django_fullctl.models import Task

    columns = [f.column for f in Task._meta.concrete_fields if not f.primary_key]
    values = [str(overrides.get(column, column)) for column in columns]
    table = Task._meta.db_table
    sql(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)}"
        f" FROM {table}, generate_series(1, %s) WHERE id = %s", [count, template_pk])
    sql(f"ANALYZE {table}")


def template_row(**create: object) -> int:
    from example_tasks.models import NoopTask

    return NoopTask.configure(**create).create_task().pk if create else NoopTask.create_task().pk


def claim_cost(setup, ops: list[str], repeats: int) -> dict:
    """One claim of ``ops`` (the library's own statement, rolled back) after ``setup()``
    filled the table: the median of its execution time on the server (``EXPLAIN
    ANALYZE``, which leaves out planning and the round trip, both the same for every
    table), the buffers it touched, and the median round trip of the statement prepared
    as the poller's are."""
    from django.db import connection, transaction

    from django_fullctl.models import Task
    from django_fullctl.queue import claim_params, hot_cursor

    reset()
    setup()
    statement = Task.queue.statements["claim"]
    now = datetime.now(UTC)
    params = [*claim_params(ops, 1), "bench:0", now, now, now]
    server, trips, claimed, plan = [], [], [], ""
    for _ in range(repeats):
        with transaction.atomic(), hot_cursor() as cursor:
            started = time.perf_counter()
            cursor.execute(statement, params, prepare=True)
            claimed = cursor.fetchall()
            trips.append((time.perf_counter() - started) * 1000)
            transaction.set_rollback(True)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            server.append(float(re.search(r"Execution Time: ([\d.]+) ms", plan)[1]))
            transaction.set_rollback(True)
    if len(claimed) != 1:
        raise SystemExit(f"the claim found {len(claimed)} rows, not 1")
    hits = re.findall(r"Buffers: shared hit=(\d+)", plan)
    return {"ms": sorted(server)[len(server) // 2], "trip": sorted(trips)[len(trips) // 2],
            "buffers": int(hits[0]) if hits else None}


RARE_OP = "task_rare"


def claim_cost_cases(pending: int, big: int) -> list[tuple[str, list[str], object]]:
    """The table shapes of the claim-cost table: (name, the claimer's ops, setup)."""
    from datetime import timedelta

    def runnable() -> None:
        enqueue_backlog(pending)

    def with_completed() -> None:
        enqueue_backlog(pending)
        copy_rows(big, template_row(), status="'completed'", finished="now()")

    def many_pending() -> None:
        enqueue_backlog(pending)
        copy_rows(big - pending, template_row())

    def with_future() -> None:
        enqueue_backlog(pending)
        copy_rows(big, template_row(run_after=timedelta(days=1)))

    def rare_op() -> None:
        enqueue_backlog(big // 10)  # other ops' rows, ahead of the rare op's in claim order
        copy_rows(pending, template_row(), op=f"'{RARE_OP}'")

    many = [OP, *(f"{OP}_{i}" for i in range(1, 30))]

    def spread() -> None:  # ``pending`` rows, as many of each of the ``many`` ops
        enqueue_backlog(pending // len(many))
        for op in many[1:]:
            copy_rows(pending // len(many), template_row(), op=f"'{op}'")

    return [
        (f"{pending} pending", [OP], runnable),
        (f"+ {big} completed", [OP], with_completed),
        (f"{big} pending", [OP], many_pending),
        (f"+ {big} not due yet", [OP], with_future),
        (f"rare op behind {big // 10} others", [RARE_OP], rare_op),
        (f"2 ops, rare behind {big // 10} others", [RARE_OP, "task_other"], rare_op),
        (f"{len(many)} ops, {pending} pending among them", many, spread),
    ]


def report_claim_cost(pending: int, big: int, repeats: int) -> None:
    rows = [(name, claim_cost(setup, ops, repeats))
            for name, ops, setup in claim_cost_cases(pending, big)]
    reset()
    base = rows[0][1]
    print(f"\nClaim cost: one claim, median of {repeats} (rolled back)")
    print(f"{'table':>34} {'server ms':>9} {'buffers':>8} {'ratio':>6} {'round trip':>10}")
    for name, row in rows:
        print(f"{name:>34} {row['ms']:>9.3f} {row['buffers'] or 0:>8} "
              f"{row['ms'] / base['ms']:>5.2f}x {row['trip']:>7.3f} ms")
    print("  server ms: EXPLAIN ANALYZE execution time; buffers: its shared hits; the ratio is"
          " of server ms;\n  round trip: the prepared statement from the client, as the"
          " poller sends it (the client and the network included)")
    print("  target: every ratio within 1.2x, but for the last row, which shows what a wide"
          " pool pays:\n  its claim reads and locks the head of each of its ops")


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


def report(
    n: int, orm: dict, raw: dict, spawned: dict, lat: dict, samples: int, pause: float
) -> None:
    print(f"\nBurn-down of {n} no-op tasks (tasks/s: first row started to last row finished)")
    print(f"{'processes':>9} {'poller':>7} {'floor':>6} {'ratio':>6} {'commits/task':>13}"
          f" {'CPU poller':>11} {'CPU floor':>10} {'start-up':>9} {'worker peak RSS':>16}")
    for p in PROCESS_COUNTS:
        o, r = orm[p], raw[p]
        commits = f"{o['commits']:.2f} / {r['commits']:.2f}"
        print(f"{p:>9} {o['rate']:>7.0f} {r['rate']:>6.0f} {o['rate'] / r['rate']:>5.2f}x"
              f" {commits:>13} {o['cpu'] * 1000:>8.2f} ms {r['cpu'] * 1000:>7.2f} ms"
              f" {o['startup']:>7.1f} s {mib(o['memory']):>16}")
    print("  target: poller at least 1.3x the floor at -p 1 and -p 2 (the floor: two statements"
          " per task, the library's claim text).\n  commits/task: poller / floor, the whole"
          " database (maintenance and heartbeats included; target 1.0 plus heartbeats).\n"
          "  CPU: client CPU per task, of the poller's processes and of the floor's")
    print(f"\nEnqueue-to-start latency: poller -p 2 --poll-interval 30 idle, {samples} tasks"
          f" created {pause * 1000:g} ms apart, row started - created")
    print(f"  p50 {lat['p50']:.1f} ms   p99 {lat['p99']:.1f} ms   max {lat['max']:.1f} ms"
          f"   worker peak RSS {mib(lat['memory'])}\n  of which creating the row until"
          f" create_task() returned (INSERT and its commit): p50 {lat['commit_p50']:.1f} ms;"
          f" from then until the claim: p50 {lat['after_p50']:.1f} ms"
          f"\n  target: p50 at most 1 ms")
    print("\nPod memory (PSS, /proc/PID/smaps_rollup) after the burn-down, workers from the"
          " fork server (TASK_WORKER_START=forkserver, the default) and spawned:")
    for name, row in (("forkserver", orm[4]), ("spawn", spawned)):
        print(f"  -p 4 {name:>10}: supervisor + 4 workers {core_pss(row['pss']) / 1024:.1f} MiB;"
              f" {describe(row['pss'])}")
    print("  target: supervisor + 4 workers at most 150 MB (143 MiB)")
    codes = sorted({r["exit"] for r in [*orm.values(), lat]})
    print(f"\nPoller exit codes after SIGTERM: {', '.join(map(str, codes))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=None, help="burn-down size (10000)")
    parser.add_argument("--samples", type=int, default=None, help="latency samples (200)")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between samples")
    parser.add_argument("--quick", action="store_true", help="1000 tasks, 50 samples")
    parser.add_argument("--big-rows", type=int, default=1_000_000,
                        help="rows of the large tables in the claim-cost table (1000000)")
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
        report_claim_cost(10_000, args.big_rows, 300)
        report_enqueue(5000)
        return 0
    orm, raw = {}, {}
    for p in PROCESS_COUNTS:
        orm[p] = burn_down_orm(n, p)
        print(f"  poller -p {p}: {orm[p]['rate']:6.0f} tasks/s", flush=True)
        raw[p] = burn_down_raw(n, p)
        print(f"  raw SQL x{p}:  {raw[p]['rate']:6.0f} tasks/s", flush=True)
    spawned = burn_down_orm(n, 4, env={"TASK_WORKER_START": "spawn"})
    print(f"  poller -p 4, spawned workers: {spawned['rate']:6.0f} tasks/s", flush=True)
    lat = latency(samples, args.pause)
    reset()
    report(n, orm, raw, spawned, lat, samples, args.pause)
    report_claim_cost(10_000, args.big_rows, 300)
    report_enqueue(5000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
