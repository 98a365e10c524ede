"""The task models: ``Task`` and its heartbeat (``task``), the queued-command task
(``command_task``), which every process that loads the app must know, and the runs of
periodic schedules (``schedule``) and the rows the pollers keep of themselves
(``poller``). The Django Tasks call (``tasks_backend.calls``) is a
proxy of ``Task`` too; the app loads it when it is ready (``apps.py``)."""

from django_fullctl.models.command_task import CommandTask
from django_fullctl.models.poller import Poller
from django_fullctl.models.schedule import TaskScheduleRun
from django_fullctl.models.task import Task, TaskHeartbeat
from django_fullctl.states import ACTIVE_STATUSES, FINAL_STATUSES, TaskStatus

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "CommandTask",
    "Poller",
    "Task",
    "TaskHeartbeat",
    "TaskScheduleRun",
    "TaskStatus",
]
