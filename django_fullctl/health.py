"""The checks behind the ``/health`` view: each a few indexed aggregate queries.

Each check returns a ``CheckResult``; none of them reads task parameters, so nothing a
task was given can leak through the endpoint.
"""

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from django.db import DatabaseError, connection
from django.db.models import Count, Min
from django.utils import timezone

from django_fullctl import conf
from django_fullctl.models import Task
from django_fullctl.states import TaskStatus

# ids listed in a failing heartbeat check; the count says how many there are in all
MAX_LISTED_IDS = 50


@dataclass
class CheckResult:
    ok: bool
    message: str
    details: dict = field(default_factory=dict)


def check_database() -> CheckResult:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return CheckResult(True, "reachable", {"vendor": connection.vendor})


def check_heartbeats() -> CheckResult:
    max_age = conf.settings().health_check_interval
    stale = sorted(item.id for item in Task.queue.stale_running(max_age))
    details = {"max_age_seconds": max_age, "stale_count": len(stale)}
    if stale:
        return CheckResult(
            False,
            f"{len(stale)} running task(s) without a heartbeat for {max_age:g}s",
            {**details, "stale_task_ids": stale[:MAX_LISTED_IDS]},
        )
    return CheckResult(True, "every running task has a fresh heartbeat", details)


def check_backlog() -> CheckResult:
    max_pending = conf.settings().backlog_max_pending
    max_age = conf.settings().backlog_max_age
    summary = Task.objects.filter(
        status=TaskStatus.PENDING, waiting=False, scheduled=False
    ).aggregate(
        pending=Count("id"), oldest=Min("created")
    )
    pending = summary["pending"]
    age = (timezone.now() - summary["oldest"]).total_seconds() if summary["oldest"] else 0.0
    details = {
        "pending": pending,
        "oldest_pending_age_seconds": round(age, 1),
        "max_pending": max_pending,
        "max_age_seconds": max_age,
    }
    if max_pending and pending > max_pending:
        message = f"{pending} runnable tasks pending (limit {max_pending})"
        return CheckResult(False, message, details)
    if max_age and age > max_age:
        return CheckResult(
            False, f"oldest runnable task waits for {age:.0f}s (limit {max_age:g}s)", details
        )
    return CheckResult(True, f"{pending} runnable task(s) pending", details)


CHECKS: dict[str, Callable[[], CheckResult]] = {
    "database": check_database,
    "heartbeats": check_heartbeats,
    "backlog": check_backlog,
}


def run_checks(exclude: Collection[str] = frozenset()) -> dict[str, CheckResult]:
    """Run every check not excluded; a database error fails the check, it never raises."""
    results = {}
    for name, check in CHECKS.items():
        if name in exclude:
            continue
        try:
            results[name] = check()
        except DatabaseError as exc:
            results[name] = CheckResult(False, f"database error: {type(exc).__name__}")
    return results
