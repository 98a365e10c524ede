"""Orphan rescue: running tasks whose heartbeats stopped (their pod vanished, or the
worker hung) are requeued while attempts remain, else failed. One sweeper at a time
(``TaskQueue.rescue_orphans`` takes an advisory lock without waiting)."""

import logging

from django_fullctl import conf
from django_fullctl.models import Task
from django_fullctl.poller import metrics
from django_fullctl.poller.logs import event
from django_fullctl.poller.maintenance import MaintenanceService
from django_fullctl.states import RescueOutcome


class OrphanRescue(MaintenanceService):
    name = "orphan sweep"

    def interval(self) -> float:
        return min(conf.settings().orphaned_heartbeat_timeout / 2, 15.0)

    def run(self) -> None:
        max_age = conf.settings().orphaned_heartbeat_timeout
        for item, outcome in Task.queue.rescue_orphans(max_age):
            level = logging.WARNING if outcome is RescueOutcome.FAILED else logging.INFO
            if outcome is RescueOutcome.REQUEUED:
                metrics.count_retried(item.op, "rescued")
            event(f"task.{outcome.value}", f"orphaned task {outcome.value}", level,
                  task=item.id, op=item.op, worker=item.queue_id, attempt=item.attempt,
                  reason=f"no heartbeat for {max_age:g}s")
