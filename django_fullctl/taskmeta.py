"""A task class's ``TaskMeta`` read into typed ``TaskOptions``, checked once at registration.

A bad value (``limit = "x"``, ``timeout = -1``, a qualifier that is not one) raises
``TaskRegistrationError`` naming the class, the field and the value when the class is
registered, instead of an unrelated error at every ``create_task``.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from django_fullctl.exceptions import TaskRegistrationError
from django_fullctl.qualifiers import Qualifier
from django_fullctl.retry import Retry
from django_fullctl.schedules import cron_problem


@dataclass(frozen=True)
class TaskOptions:
    """A task class's ``TaskMeta``, with the defaults filled in."""

    limit: int | None = None
    result_type: Callable[[Any], Any] | None = None
    qualifiers: list[Qualifier] = field(default_factory=list)
    timeout: int | None = None
    max_attempts: int | None = None
    priority: int = 0
    retry: Retry | None = None
    schedule: str | None = None  # a cron expression, in settings.TIME_ZONE


def _positive_int(value: Any) -> str | None:
    if value is None or (type(value) is int and value > 0):
        return None
    return "must be a positive whole number (or None)"


def _int(value: Any) -> str | None:
    return None if type(value) is int else "must be a whole number"


def _callable(value: Any) -> str | None:
    return None if value is None or callable(value) else "must be callable (a type or function)"


def _qualifiers(value: Any) -> str | None:
    if isinstance(value, list | tuple) and all(isinstance(q, Qualifier) for q in value):
        return None
    return "must be a list of qualifier objects (e.g. qualifiers.Setting(...))"


def _retry(value: Any) -> str | None:
    return None if value is None or isinstance(value, Retry) else "must be a Retry(...)"


def _schedule(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        if cron_problem(value) is None:
            return None
        return "must be a cron expression (five fields, or six with seconds first)"
    return "must be a cron expression such as \"0 3 * * *\""


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "limit": _positive_int,
    "result_type": _callable,
    "qualifiers": _qualifiers,
    "timeout": _positive_int,
    "max_attempts": _positive_int,
    "priority": _int,
    "retry": _retry,
    "schedule": _schedule,
}


def read_task_meta(cls: type) -> TaskOptions:
    """``cls.TaskMeta`` as ``TaskOptions``; raises TaskRegistrationError on a bad value."""
    meta = getattr(cls, "TaskMeta", None)
    values: dict[str, Any] = {}
    for each in fields(TaskOptions):
        if not hasattr(meta, each.name):
            continue
        value = getattr(meta, each.name)
        problem = _CHECKS[each.name](value)
        if problem:
            raise TaskRegistrationError(
                f"{cls.__qualname__}.TaskMeta.{each.name} {problem}, not {value!r}"
            )
        values[each.name] = list(value) if each.name == "qualifiers" else value
    return TaskOptions(**values)
