"""Periodic tasks: every poller looks at every schedule about once a second (sooner when
a tick is closer) and fires the latest tick at or before the database's ``now()``.

Exactly one task per tick, however many pollers run: the tick's ``TaskScheduleRun`` row
is inserted with ``ON CONFLICT DO NOTHING`` on its unique (schedule, tick), and only the
poller whose insert took creates the task, in the same transaction (a failed creation
rolls the row back too). Only the latest tick is looked at, so ticks missed while no
poller ran fire once, not one task each. A schedule that has no row yet gets a baseline
row for its latest tick, without a task: it first fires at the next tick, never for a
tick from before it was first seen. A tick whose task's ``TaskMeta.limit`` is reached is
recorded as skipped (``schedule.skipped``) and not retried.
"""

import logging
import time
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction

from django_fullctl import registry, schedules
from django_fullctl.exceptions import TaskLimitError, TaskNotRegistered
from django_fullctl.models import TaskScheduleRun
from django_fullctl.poller.logs import event
from django_fullctl.poller.maintenance import MaintenanceService
from django_fullctl.schedules import Schedule

# how many handled ticks of each schedule are kept (the admin and status show the last)
KEEP_RUNS = 50

BASELINE, FIRED, SKIPPED = "baseline", "fired", "skipped"  # TaskScheduleRun.Outcome


def database_now() -> datetime:
    """The database's clock: every poller agrees on the ticks whatever its pod's clock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_TIMESTAMP")
        now = cursor.fetchone()[0]
    if isinstance(now, str):  # SQLite: text, in UTC
        now = datetime.fromisoformat(now)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now


class ScheduleFiring(MaintenanceService):
    name = "schedules"

    def __init__(self, clock: Any = time.monotonic):
        self.clock = clock
        self.next_due: float | None = None  # monotonic time of the next tick of any schedule
        self.handled: dict[str, datetime] = {}  # the latest tick known to be done, per schedule
        self._schedules: list[Schedule] | None = None
        self.watching = False

    def schedules(self) -> list[Schedule]:
        if self._schedules is None:
            self._schedules = schedules.all_schedules(cls for _, cls in registry.registered())
        return self._schedules

    def interval(self) -> float:
        if self.next_due is None:
            return 1.0
        return max(0.02, min(1.0, self.next_due - self.clock()))

    def run(self) -> None:
        found = self.schedules()
        if not found:
            self.next_due = None
            return
        now = database_now()
        soonest = None
        for schedule in found:
            tick = schedules.previous_tick(schedule, now)
            following = schedules.next_tick(schedule, now)
            if soonest is None or following < soonest:
                soonest = following
            if tick is None or self.handled.get(schedule.name) == tick:
                continue
            self.fire(schedule, tick, now)
            self.handled[schedule.name] = tick
        if soonest is not None:
            self.next_due = self.clock() + (soonest - now).total_seconds()
        if not self.watching:  # once, after the first pass over every schedule
            self.watching = True
            event("schedules.watching", f"watching {len(found)} schedule(s)",
                  schedules=",".join(schedule.name for schedule in found))

    def fire(self, schedule: Schedule, tick: datetime, now: datetime) -> None:
        """Handle ``tick`` of ``schedule`` unless another poller already did."""
        try:
            task_class: Any = registry.get_task_class(schedule.op)
        except TaskNotRegistered:
            event("schedule.unknown_task", f"schedule {schedule.name}: no task class",
                  logging.WARNING, schedule=schedule.name, op=schedule.op)
            return
        runs = TaskScheduleRun.objects.filter(schedule=schedule.name)
        with transaction.atomic():
            last = runs.order_by("-tick").values_list("tick", flat=True).first()
            if last is not None and last >= tick:
                return
            outcome = BASELINE if last is None else FIRED
            run_id = self._insert(schedule.name, tick, outcome, now)
            if run_id is None:
                return  # another poller won this tick
            if outcome == BASELINE:
                event("schedule.baseline", f"schedule {schedule.name} first seen",
                      schedule=schedule.name, op=schedule.op, tick=tick.isoformat())
                return
            try:
                with transaction.atomic():
                    task = task_class.create_task(*schedule.args, **schedule.kwargs)
            except TaskLimitError as exc:
                TaskScheduleRun.objects.filter(pk=run_id).update(outcome=SKIPPED)
                event("schedule.skipped", f"schedule {schedule.name} skipped: {exc}",
                      logging.WARNING, schedule=schedule.name, op=schedule.op,
                      tick=tick.isoformat())
            else:
                TaskScheduleRun.objects.filter(pk=run_id).update(task_id=task.pk)
                event("schedule.fired", f"schedule {schedule.name} fired",
                      schedule=schedule.name, op=schedule.op, task=task.pk,
                      tick=tick.isoformat())
            self._forget_old(schedule.name)

    @staticmethod
    def _insert(name: str, tick: datetime, outcome: str, now: datetime) -> int | None:
        """Insert the tick's row; its id, or None when the tick's row already exists."""
        meta = TaskScheduleRun._meta
        table = meta.db_table
        at = meta.get_field("tick").get_db_prep_value(tick, connection)
        created = meta.get_field("created").get_db_prep_value(now, connection)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (schedule, tick, outcome, created)"
                " VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (schedule, tick) DO NOTHING RETURNING id",
                [name, at, outcome, created],
            )
            row = cursor.fetchone()
        return row[0] if row else None

    @staticmethod
    def _forget_old(name: str) -> None:
        runs = TaskScheduleRun.objects.filter(schedule=name)
        oldest_kept = runs.order_by("-tick").values_list("tick", flat=True)[
            KEEP_RUNS - 1 : KEEP_RUNS]
        if oldest_kept:
            runs.filter(tick__lt=oldest_kept[0]).delete()
