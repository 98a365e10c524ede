"""``from fullctl.django.models import Task`` as documented; the models live in django_fullctl."""

from django_fullctl.exceptions import (
    TaskError,
    TaskLimitError,
    TaskNotRegistered,
    TaskRegistrationError,
    TaskStateError,
    TaskTimeout,
)
from django_fullctl.models import Task, TaskHeartbeat, TaskStatus

__all__ = [
    "Task",
    "TaskError",
    "TaskHeartbeat",
    "TaskLimitError",
    "TaskNotRegistered",
    "TaskRegistrationError",
    "TaskStateError",
    "TaskStatus",
    "TaskTimeout",
]
