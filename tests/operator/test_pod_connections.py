"""What one poller pod costs the database, counted on the server: a real ``fullctl_poll_tasks``
with every worker busy holds exactly the connections the connection budget charges it
(``pool.connections_for``, ``decisions.poller_connections``)."""

import pytest
from django.db import connection
from example_tasks.models import SleepTask
from fullctl_operator.decisions import poller_connections
from fullctl_operator.pool import connections_for
from helpers import wait_for

from fullctl.django.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def backends() -> int:
    """Connections to this database other than the test's own."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


def listening() -> int:
    """Connections waiting for new tasks (LISTEN)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                       " AND query LIKE 'LISTEN %%'")
        return cursor.fetchone()[0]


def heartbeats(count: int) -> dict[int, object] | None:
    """The running tasks' last heartbeats, once ``count`` tasks run."""
    running = Task.queue.running_tasks()
    return {t.id: t.heartbeat for t in running} if len(running) == count else None


def beaten_since(first: dict[int, object]) -> bool:
    """Every task's heartbeat moved on: its worker's heartbeat thread has written one."""
    now = heartbeats(len(first)) or {}
    return set(now) == set(first) and all(
        now[i] is not None and (first[i] is None or now[i] > first[i]) for i in first)


@pytest.mark.parametrize(("mode", "size"), [("--processes", 2), ("--workers", 2)])
def test_a_busy_pod_holds_what_the_budget_charges(start_poller, postgresql_only, mode, size):
    before = backends()
    start_poller(mode, str(size))
    # idle first, as a pod is between bursts: each self-claiming worker listens for new
    # tasks (--processes), or the supervisor's dispatcher does (--workers)
    wait_for(lambda: listening() == (size if mode == "--processes" else 1), timeout=30)
    for _ in range(size):
        SleepTask.create_task(5)
    # every worker busy, and its heartbeat thread has written a beat: the claim connection,
    # LISTEN (--processes) and the heartbeat thread's connection are all open now
    first = wait_for(lambda: heartbeats(size), timeout=30)
    wait_for(lambda: beaten_since(first), timeout=30)
    held = backends() - before
    expected = poller_connections(mode.lstrip("-"), size)
    assert held == expected
    if mode == "--processes":  # what the chart's pods run, and what the TaskPool assumes
        assert expected == connections_for(size) == 3 * size + 1
