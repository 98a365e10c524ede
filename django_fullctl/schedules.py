"""Periodic tasks: which schedules there are, and when they tick.

A schedule comes from a task class's ``TaskMeta.schedule`` (named after its op, without
arguments) or from an entry of ``TASK_SCHEDULES`` (named by its key, with arguments).
Cron expressions are read by ``cronsim``: five fields, or six with seconds first, in
``settings.TIME_ZONE``. A leaf: it imports no model and no registry (the task classes are
found through Django's app registry, or handed in), so the checks can use it too.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError
from django.conf import settings as django_settings
from django.utils import timezone

from django_fullctl import conf
from django_fullctl.exceptions import TaskRegistrationError


@dataclass(frozen=True)
class Schedule:
    """One periodic task: create ``op`` with ``args``/``kwargs`` at each tick of ``cron``."""

    name: str
    op: str
    cron: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = "TASK_SCHEDULES"  # or "TaskMeta" of the task class


def cron_problem(expression: Any) -> str | None:
    """Why ``expression`` is not a cron expression cronsim reads, or None."""
    if not isinstance(expression, str) or not expression.strip():
        return f"{expression!r} is not a cron expression"
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC")))
    except CronSimError as exc:
        return f"{expression!r} is not a cron expression cronsim reads ({exc})"
    return None


def _zone() -> Any:
    name = getattr(django_settings, "TIME_ZONE", None) or "UTC"
    return ZoneInfo(name)


def _local(now: datetime) -> datetime:
    if timezone.is_naive(now):
        now = timezone.make_aware(now, ZoneInfo("UTC"))
    return now.astimezone(_zone())


def next_tick(schedule: Schedule | str, now: datetime) -> datetime:
    """The first tick strictly after ``now`` (aware, in ``settings.TIME_ZONE``)."""
    cron = schedule.cron if isinstance(schedule, Schedule) else schedule
    return next(CronSim(cron, _local(now)))


def previous_tick(schedule: Schedule | str, now: datetime) -> datetime | None:
    """The latest tick at or before ``now`` (None if the expression never ticked)."""
    cron = schedule.cron if isinstance(schedule, Schedule) else schedule
    # cronsim's reverse walk starts strictly before its start: start one second after the
    # whole second of now, so a tick at exactly now counts
    start = _local(now).replace(microsecond=0) + timedelta(seconds=1)
    try:
        return next(CronSim(cron, start, reverse=True))
    except StopIteration:
        return None


def task_classes() -> list[type]:
    """The task classes Django knows (proxies of fullctl's Task with their own tag)."""
    from django.apps import apps

    return [
        model for model in apps.get_models()
        if getattr(model, "is_fullctl_task", False) and model._meta.proxy
        and "HandleRef" in model.__dict__
    ]


def all_schedules(classes: Iterable[type] | None = None) -> list[Schedule]:
    """Every schedule: the task classes' ``TaskMeta.schedule`` (``classes``, or those
    Django knows) and ``TASK_SCHEDULES``, in name order. A ``TASK_SCHEDULES`` entry with
    the name of an op replaces that class's own schedule."""
    found: dict[str, Schedule] = {}
    for cls in task_classes() if classes is None else classes:
        try:
            cron = cls.task_options().schedule  # type: ignore[attr-defined]
        except TaskRegistrationError:
            continue  # a class that never registered: its TaskMeta was refused already
        if cron:
            op = cls.HandleRef.tag  # type: ignore[attr-defined]
            found[op] = Schedule(name=op, op=op, cron=cron.strip(), source="TaskMeta")
    for name, entry in conf.settings().task_schedules.items():
        found[name] = Schedule(
            name=name, op=entry["task"], cron=entry["cron"].strip(),
            args=list(entry["args"]), kwargs=dict(entry["kwargs"]),
        )
    return [found[name] for name in sorted(found)]
