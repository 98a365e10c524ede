"""Retention with a real poller on PostgreSQL: finished tasks older than
``TASK_RETENTION`` allows go, in batches, leaves before parents; chains with an active task,
fresh tasks and statuses kept longer stay."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from helpers import wait_for

from fullctl.django.models import Task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgresql_only")]

RETENTION = {"completed": "7d", "failed": "30d", "cancelled": "7d"}


def finished(status: str, age: timedelta, **fields) -> Task:
    now = timezone.now()
    return Task(op="task_sum", param={"args": [1, 1], "kwargs": {}}, status=status,
                finished=now - age, started=now - age, **fields)


def purged_events(poller) -> list[dict]:
    records = [json.loads(line) for line in poller.output.splitlines() if line.startswith("{")]
    return [r for r in records if r.get("event") == "retention.purged"]


def test_retention_deletes_old_finished_tasks_in_batches(start_poller):
    old, fresh = timedelta(days=10), timedelta(hours=1)
    Task.objects.bulk_create([finished("completed", old) for _ in range(1200)])
    cancelled_old = Task.objects.bulk_create([finished("cancelled", old) for _ in range(3)])
    kept = Task.objects.bulk_create(
        [finished("completed", fresh) for _ in range(5)]  # younger than 7 days
        + [finished("failed", old) for _ in range(4)]     # failed tasks are kept 30 days
    )
    # a chain whose child is still active (pending, due in an hour): its old parent stays
    parent = Task.objects.create(**_fields(finished("completed", old)))
    child = Task.objects.create(op="task_sum", parent=parent, status="pending",
                                scheduled=True, run_after=timezone.now() + timedelta(hours=1))
    # a running parent: its old cancelled child stays too
    running = Task.objects.create(op="task_sum", status="running", attempt=1,
                                  started=timezone.now())
    orphan_child = Task.objects.create(**_fields(finished("cancelled", old)), parent=running)
    untouched = [t.pk for t in kept] + [parent.pk, child.pk, running.pk, orphan_child.pk]

    poller = start_poller("-p", "1", "--log-format", "json", settings={
        "TASK_RETENTION": RETENTION, "TASK_ORPHANED_HEARTBEAT_TIMEOUT": 3600,
    })
    wait_for(lambda: Task.objects.count() == len(untouched), timeout=30)
    wait_for(lambda: sum(e["count"] for e in purged_events(poller)) == 1203, timeout=10)
    assert set(Task.objects.values_list("pk", flat=True)) == set(untouched)
    assert not Task.objects.filter(pk__in=[t.pk for t in cancelled_old]).exists()
    events = purged_events(poller)
    # 500 rows per statement, two statements per round: at least two rounds
    assert len(events) >= 2
    assert all(e["count"] <= 1000 and e["batches"] <= 2 for e in events)
    assert events[0]["batches"] == 2  # a full round: the next one came a second later


def _fields(task: Task) -> dict:
    return {f: getattr(task, f) for f in ("op", "param", "status", "finished", "started")}
