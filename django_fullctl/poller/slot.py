"""What a spawned worker process receives from its supervisor: its config and its slot.

Kept free of Django imports, because the new interpreter must run ``django.setup()``
before any model module is imported (see ``spawn.worker_main``).
"""

import time
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.context import BaseContext
from typing import Any

from django_fullctl.poller.metrics import Layout, SharedTable, use_process_table
from django_fullctl.states import Lease, RunStatus


@dataclass(frozen=True)
class WorkerConfig:
    self_claiming: bool
    ops: tuple[str, ...]
    max_tasks: int  # 0: unlimited
    poll_interval: float
    log_format: str
    verbosity: int = 1
    max_memory_kib: int = 0  # recycle after a task once resident memory passes it; 0: never


@dataclass(frozen=True)
class RunningRef:
    """What the supervisor knows of a worker's running task."""

    lease: Lease
    timeout: float  # 0: none (or no longer enforced)
    since: float  # time.monotonic() (one clock for all processes of the machine)
    last_beat: float


class Slot:
    """Shared memory in which a worker shows its supervisor what it is running.

    The supervisor reads it when it needs to (timeouts, liveness, a dead worker), so a
    task costs no message and no wake-up of the supervisor.
    """

    def __init__(self, context: BaseContext, layout: Layout | None = None):
        # id, attempt, timeout, since, last beat, tasks finished by this worker
        self.values = context.Array("d", 6)
        # this worker's counters and histograms (see ``metrics``), read at scrape time
        self.metrics = SharedTable(layout or Layout(()), context)

    def __setstate__(self, state: dict) -> None:
        # only the worker process unpickles its slot: its database errors count here
        self.__dict__.update(state)
        use_process_table(self.metrics)

    def start(self, lease: Lease, timeout: int | None) -> None:
        now = time.monotonic()
        with self.values.get_lock():
            self.values[:5] = [lease.task_id, lease.attempt, timeout or 0, now, now]

    def stop_enforcing_timeout(self) -> None:
        """The run is over; only its outcome is being written."""
        self.values[2] = 0

    def beat(self) -> None:
        self.values[4] = time.monotonic()

    def clear(self) -> None:
        """The task is over and recorded: one more finished."""
        with self.values.get_lock():
            self.values[0] = 0
            self.values[5] += 1

    @property
    def finished(self) -> int:
        return int(self.values[5])

    def read(self) -> RunningRef | None:
        with self.values.get_lock():
            task_id, attempt, timeout, since, last_beat = self.values[:5]
        if not task_id:
            return None
        return RunningRef(Lease(int(task_id), int(attempt)), timeout, since, last_beat)

    def record(self, task: Any, outcome: Any, recorded: bool) -> None:
        """Count how ``task`` ended in this worker's metrics table: one claim, one finish
        by outcome, a retry when the failure is to be tried again, the run time and the
        queue wait (from the due time, ``run_after`` or else ``created``, to ``started``)."""
        if outcome.status is RunStatus.STOPPED:
            name = "stopped"
        elif not recorded:
            name = "discarded"
        else:
            name = outcome.status.value
        due = getattr(task, "run_after", None) or getattr(task, "created", None)
        started = getattr(task, "started", None)
        wait = None
        if isinstance(due, datetime) and isinstance(started, datetime):
            wait = (started - due).total_seconds()
        retried = recorded and getattr(outcome, "retry_in", None) is not None
        self.metrics.record_outcome(task.op, name, outcome.duration, wait, retried)
