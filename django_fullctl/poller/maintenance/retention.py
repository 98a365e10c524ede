"""Retention: finished tasks older than ``TASK_RETENTION`` allows are deleted, per status,
in short batches (``TaskQueue.purge``: leaves before parents, never a task whose chain is
still active). One deleter at a time: each batch is its own short transaction that first
tries an advisory lock without waiting; a poller that does not get it stops for this round.
When a round used all its batches, the next comes after a second; otherwise after a minute.
"""

import time
from collections.abc import Callable

from django.db import connection, transaction

from django_fullctl import conf
from django_fullctl.db import is_postgresql
from django_fullctl.models import Task
from django_fullctl.poller.logs import event
from django_fullctl.poller.maintenance import MaintenanceService

_RETENTION_LOCK = 0x46C5


class Retention(MaintenanceService):
    name = "retention"

    batch = 500  # rows per delete statement
    batches_per_run = 2
    idle_interval = 60.0
    busy_interval = 1.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.resume_at = 0.0  # monotonic time of the next round

    def interval(self) -> float:
        # looked at every second; a round only starts at resume_at (the supervisor asks
        # for the interval before the round that would tell whether more is left)
        return self.busy_interval

    def run(self) -> None:
        if self.clock() < self.resume_at:
            return
        self.resume_at = self.clock() + self.idle_interval
        policy = conf.settings().task_retention
        deleted: dict[str, int] = {}
        batches = 0
        for status, older_than in sorted(policy.items()):
            while batches < self.batches_per_run:
                with transaction.atomic():
                    if not self._lock():
                        return
                    count = Task.queue.purge(
                        older_than, batch=self.batch, statuses=[status], max_batches=1
                    )
                if not count:  # parents whose last children just went come next
                    break
                batches += 1
                deleted[status] = deleted.get(status, 0) + count
        if batches >= self.batches_per_run:  # more may be left: the next round soon
            self.resume_at = self.clock() + self.busy_interval
        if deleted:
            event("retention.purged", "finished tasks deleted", count=sum(deleted.values()),
                  batches=batches, **{f"{status}": n for status, n in deleted.items()})

    @staticmethod
    def _lock() -> bool:
        if not is_postgresql():
            return True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s, 0)", [_RETENTION_LOCK])
            return bool(cursor.fetchone()[0])
