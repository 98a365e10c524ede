"""Silent poller rows: the row of a poller that stopped refreshing it (its pod vanished,
it was killed) is deleted once its ``last_seen`` is older than
``TASK_ORPHANED_HEARTBEAT_TIMEOUT``, the tolerance a running task's heartbeat gets. Until
then readers already leave it out (``Poller.fleet.live``); the sweep keeps the table at
one row per live poller. One sweeper at a time (an advisory lock tried without waiting).
"""

import logging

from django_fullctl.models import Poller
from django_fullctl.poller.logs import event
from django_fullctl.poller.maintenance import MaintenanceService
from django_fullctl.pollers import silent_after


class SilentPollers(MaintenanceService):
    name = "silent poller rows"

    def interval(self) -> float:
        return min(silent_after() / 2, 15.0)

    def run(self) -> None:
        max_age = silent_after()
        for row in Poller.fleet.delete_silent(max_age):
            event("poller.removed", f"poller {row.host}:{row.pid} silent, row deleted",
                  logging.INFO, host=row.host, pid=row.pid,
                  last_seen=row.last_seen.isoformat(), reason=f"no refresh for {max_age:g}s")
