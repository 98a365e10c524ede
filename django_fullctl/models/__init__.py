"""The task models: ``Task`` and its heartbeat (``task``), and the queued-command task
(``command_task``), which every process that loads the app must know."""

from django_fullctl.models.command_task import CommandTask
from django_fullctl.models.task import Task, TaskHeartbeat
from django_fullctl.states import ACTIVE_STATUSES, FINAL_STATUSES, TaskStatus

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "CommandTask",
    "Task",
    "TaskHeartbeat",
    "TaskStatus",
]
