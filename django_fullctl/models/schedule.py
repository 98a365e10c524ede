"""``TaskScheduleRun``: one row per tick of a periodic task that some poller handled.

The unique constraint on (schedule, tick) is what makes a tick fire once however many
pollers run: each poller inserts the tick's row with ``ON CONFLICT DO NOTHING`` and only
the one whose insert took creates the task, in the same transaction
(``poller/maintenance/schedules.py``). A row without a task is a baseline (the tick
before the schedule was first seen, which does not fire) or a tick skipped because the
task's limit was reached.
"""

from datetime import datetime
from typing import Any

from django.db import connection, models

from django_fullctl import registry, schedules


class TaskScheduleRun(models.Model):
    """A handled tick of a schedule (``schedules.Schedule``)."""

    class Outcome(models.TextChoices):
        FIRED = "fired", "fired"
        BASELINE = "baseline", "baseline (first seen, not fired)"
        SKIPPED = "skipped", "skipped (task limit reached)"

    schedule = models.CharField(max_length=255, help_text="the schedule's name")
    tick = models.DateTimeField(help_text="the cron tick this row stands for")
    task = models.ForeignKey(
        "django_fullctl.Task", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+", help_text="the task the tick created",
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.FIRED)
    created = models.DateTimeField(help_text="when a poller handled the tick (database clock)")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["schedule", "tick"], name="fullctl_schedule_tick_once"),
        ]
        verbose_name = "schedule run"

    def __str__(self) -> str:
        return f"{self.schedule} at {self.tick:%Y-%m-%d %H:%M:%S} ({self.outcome})"


def schedule_overview(now: datetime) -> list[dict[str, Any]]:
    """Every configured schedule with its next tick and its last handled tick (JSON-safe):
    what the admin and ``fullctl_tasks status`` show."""
    found = schedules.all_schedules(cls for _, cls in registry.registered())
    names = [schedule.name for schedule in found]
    last: dict[str, TaskScheduleRun] = {}
    runs = TaskScheduleRun.objects.filter(schedule__in=names).order_by("schedule", "-tick")
    if connection.features.can_distinct_on_fields:  # PostgreSQL: one row per schedule
        runs = runs.distinct("schedule")
    for run in runs:
        last.setdefault(run.schedule, run)
    overview = []
    for schedule in found:
        run = last.get(schedule.name)
        overview.append({
            "name": schedule.name,
            "op": schedule.op,
            "cron": schedule.cron,
            "source": schedule.source,
            "next_tick": schedules.next_tick(schedule, now).isoformat(),
            "last_tick": run.tick.isoformat() if run else None,
            "last_outcome": run.outcome if run else None,
            "last_task_id": run.task_id if run else None,
        })
    return overview

