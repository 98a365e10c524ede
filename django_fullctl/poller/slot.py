"""What a spawned worker process receives from its supervisor: its config and its slot.

Kept free of Django imports, because the new interpreter must run ``django.setup()``
before any model module is imported (see ``spawn.worker_main``).
"""

import time
from dataclasses import dataclass
from multiprocessing.context import SpawnContext

from django_fullctl.states import Lease


@dataclass(frozen=True)
class WorkerConfig:
    self_claiming: bool
    ops: tuple[str, ...]
    max_tasks: int  # 0: unlimited
    poll_interval: float
    log_format: str
    verbosity: int = 1


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

    def __init__(self, context: SpawnContext):
        # id, attempt, timeout, since, last beat, tasks finished by this worker
        self.values = context.Array("d", 6)

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
