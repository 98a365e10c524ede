"""The small shared values of the queue: statuses, the lease, and how things ended.

They sit at the bottom of the layers so that every module above (models, queue,
runner, poller, operator) can name them without importing each other.
"""

import enum
from typing import NamedTuple


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def choices(cls) -> list[tuple[str, str]]:
        """(value, label) pairs for the model field and the admin's filter."""
        return [(status.value, status.value.title()) for status in cls]


FINAL_STATUSES = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
ACTIVE_STATUSES = (TaskStatus.PENDING, TaskStatus.RUNNING)


class Lease(NamedTuple):
    """The right to write a running task's row: its id and the attempt that was claimed.

    Every write after the claim is fenced on it (``id = %s AND attempt = %s AND status =
    'running'``), so a worker that lost its task (rescued, cancelled, claimed again)
    changes nothing, and a stop meant for one attempt can never hit the next.
    """

    task_id: int
    attempt: int

    def __str__(self) -> str:
        return f"task {self.task_id} attempt {self.attempt}"


class RunStatus(enum.Enum):
    """How one run of a task's code ended, before anything is recorded."""

    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    STOPPED = "stopped"  # the task was no longer this worker's (cancelled, rescued)


class RescueOutcome(enum.Enum):
    """What a rescue did with a task whose worker is gone."""

    REQUEUED = "requeued"
    FAILED = "failed"
