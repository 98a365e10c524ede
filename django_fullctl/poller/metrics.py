"""The poller's numbers: fixed tables of counters and histogram buckets in shared memory.

Every worker owns one table (in its ``Slot``, a ``multiprocessing`` Array of doubles),
written by the worker only, once per task (``record_outcome``) and on a database error;
nothing travels over a pipe. The supervisor owns one more table (``Totals``): its own
counts (restarts, rescues, timeouts it enforced, its database errors) and the numbers of
every worker it reaped, folded in at the reap. A scrape (``PollerCollector``) reads the
totals plus the live workers' tables, so a counter never goes backwards when a worker is
recycled.

The layout is fixed when the supervisor starts: its qualified ops (plus ``"-"`` for any
other), the outcomes, reasons and database operations below, and ``BUCKETS``. Labels are
bounded: never a task id, its arguments, a limit id, a pod or a pid.

This module imports no Django and no prometheus_client (the collector lives in
``collector.py``), so a spawned worker unpickles its slot cheaply.
"""

import bisect
from array import array
from collections.abc import Iterable, Sequence
from multiprocessing.context import BaseContext
from typing import Any

OUTCOMES = ("completed", "failed", "timed_out", "stopped", "discarded")
RETRY_REASONS = ("exception", "worker_died", "rescued")
RESTART_REASONS = ("died", "timed_out", "recycled")
# the event names passed to ``database.database_error``; anything else counts as "other"
DB_OPERATIONS = (
    "database.unavailable", "heartbeat.failed", "task.release_failed", "task.record_failed",
    "maintenance.skipped", "other",
)
# seconds; a task queue's runs and waits span milliseconds to an hour
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           300.0, 900.0, 3600.0)
OTHER_OP = "-"


class Layout:
    """Where each number lives in a table of ``size`` doubles, for one list of ops."""

    def __init__(self, ops: Sequence[str]):
        self.ops = (*ops, OTHER_OP)
        self.index = {op: i for i, op in enumerate(self.ops)}
        n = len(self.ops)
        self.hist_width = len(BUCKETS) + 2  # one per bucket, +Inf, then the sum
        offset = 0

        def block(size: int) -> int:
            nonlocal offset
            start, offset = offset, offset + size
            return start

        self.claimed = block(n)
        self.finished = block(n * len(OUTCOMES))
        self.retried = block(n * len(RETRY_REASONS))
        self.run_hist = block(n * self.hist_width)
        self.wait_hist = block(n * self.hist_width)
        self.db_errors = block(len(DB_OPERATIONS))
        self.restarts = block(len(RESTART_REASONS))
        self.size = offset

    def op_index(self, op: str | None) -> int:
        return self.index.get(op or "", len(self.ops) - 1)


class Table:
    """Adds to one table; ``values`` is a shared Array (a worker's) or a plain array."""

    def __init__(self, layout: Layout, values: Any):
        self.layout = layout
        self.values = values

    def add(self, position: int, amount: float = 1.0) -> None:
        self.values[position] += amount

    def count_claimed(self, op: str | None) -> None:
        self.add(self.layout.claimed + self.layout.op_index(op))

    def count_finished(self, op: str | None, outcome: str) -> None:
        position = self.layout.op_index(op) * len(OUTCOMES) + OUTCOMES.index(outcome)
        self.add(self.layout.finished + position)

    def count_retried(self, op: str | None, reason: str) -> None:
        position = self.layout.op_index(op) * len(RETRY_REASONS) + RETRY_REASONS.index(reason)
        self.add(self.layout.retried + position)

    def count_db_error(self, operation: str) -> None:
        name = operation if operation in DB_OPERATIONS else "other"
        self.add(self.layout.db_errors + DB_OPERATIONS.index(name))

    def count_restart(self, reason: str) -> None:
        self.add(self.layout.restarts + RESTART_REASONS.index(reason))

    def observe(self, start: int, op: str | None, seconds: float) -> None:
        base = start + self.layout.op_index(op) * self.layout.hist_width
        bucket = bisect.bisect_left(BUCKETS, seconds)  # le semantics: value <= bound
        self.add(base + bucket)
        self.add(base + self.layout.hist_width - 1, seconds)

    def snapshot(self) -> list[float]:
        return list(self.values[:])


class SharedTable(Table):
    """A worker's table in shared memory, written under the Array's lock (so a scrape
    never sees a histogram's count without its sum)."""

    def __init__(self, layout: Layout, context: BaseContext):
        super().__init__(layout, context.Array("d", layout.size))

    def add(self, position: int, amount: float = 1.0) -> None:
        with self.values.get_lock():
            self.values[position] += amount

    def record_outcome(
        self, op: str | None, outcome: str, duration: float, queue_wait: float | None,
        retried: bool,
    ) -> None:
        """One task's numbers, in one locked update (the Array's lock is an RLock)."""
        with self.values.get_lock():
            self.count_claimed(op)
            self.count_finished(op, outcome)
            if retried:
                self.count_retried(op, "exception")
            self.observe(self.layout.run_hist, op, max(duration, 0.0))
            if queue_wait is not None:
                self.observe(self.layout.wait_hist, op, max(queue_wait, 0.0))

    def snapshot(self) -> list[float]:
        with self.values.get_lock():
            return list(self.values[:])


class Totals(Table):
    """The supervisor's own table: its counts and the reaped workers' numbers."""

    def __init__(self, layout: Layout):
        super().__init__(layout, array("d", [0.0] * layout.size))

    def fold(self, numbers: Iterable[float]) -> None:
        for position, value in enumerate(numbers):
            self.values[position] += value


def sum_tables(tables: Iterable[Sequence[float]], size: int) -> list[float]:
    total = [0.0] * size
    for numbers in tables:
        for position, value in enumerate(numbers):
            total[position] += value
    return total


# -- this process's table (database errors are counted where they happen) -------------

_process_table: Table | None = None


def use_process_table(table: Table | None) -> None:
    """The table this process's database errors go to: a worker's slot, the supervisor's
    totals."""
    global _process_table
    _process_table = table


def count_db_error(operation: str) -> None:
    if _process_table is not None:
        _process_table.count_db_error(operation)


def count_retried(op: str | None, reason: str) -> None:
    if _process_table is not None:
        _process_table.count_retried(op, reason)
