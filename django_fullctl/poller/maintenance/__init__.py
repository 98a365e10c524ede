"""Maintenance services: background duties any poller may run, each in its own module with
its own interval. Each is safe to run in many pollers at once (a service that must run
alone takes an advisory lock without waiting, and the losers return at once)."""

import time
from collections.abc import Callable, Sequence

from django.db import DatabaseError

from django_fullctl.poller.database import database_error, reconnecting


class MaintenanceService:
    """One duty: ``run()`` every ``interval()`` seconds."""

    name = "maintenance"

    def interval(self) -> float:
        raise NotImplementedError

    def run(self) -> None:
        raise NotImplementedError


class Maintenance:
    """Runs each service when it is due; a database error skips that round of that service."""

    def __init__(
        self, services: Sequence[MaintenanceService], clock: Callable[[], float] = time.monotonic
    ):
        self.services = list(services)
        self.clock = clock
        self.due = {service.name: 0.0 for service in self.services}

    def run_due(self) -> None:
        now = self.clock()
        for service in self.services:
            if now < self.due[service.name]:
                continue
            self.due[service.name] = now + service.interval()
            try:
                reconnecting(service.run)
            except DatabaseError as exc:
                database_error("maintenance.skipped", f"{service.name} skipped", exc,
                               service=service.name)
