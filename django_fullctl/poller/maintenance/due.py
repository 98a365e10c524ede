"""Due-time release: tasks scheduled for later (``run_after``, a retry's delay) become
claimable when their time comes, in one statement that wakes the pollers through the
table trigger. Idle workers also release at the due time they know of; this service is
the backstop for every op, one releaser at a time (an advisory lock tried without waiting).
"""

from django_fullctl.models import Task
from django_fullctl.poller.logs import event
from django_fullctl.poller.maintenance import MaintenanceService


class DueRelease(MaintenanceService):
    name = "due-time release"

    def interval(self) -> float:
        return 1.0

    def run(self) -> None:
        released = Task.queue.release_due()
        if released:
            event("tasks.released", "scheduled tasks are due", count=released)
