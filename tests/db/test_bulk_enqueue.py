"""Creating tasks cheaply: one statement for a plain ``create_task``, one INSERT for a
batch with ``create_tasks``, the limit held for the whole batch, all or nothing."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from example_tasks.models import LimitedTask, SumTask

from django_fullctl import runner
from fullctl.django.models import Task, TaskLimitError

pytestmark = [pytest.mark.portable, pytest.mark.django_db(transaction=True)]


def test_a_plain_create_task_is_one_statement():
    with CaptureQueriesContext(connection) as queries:
        SumTask.create_task(1, 2)
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["INSERT"]


def test_create_tasks_inserts_a_batch_in_one_statement():
    with CaptureQueriesContext(connection) as queries:
        tasks = SumTask.create_tasks([((i, i), {}) for i in range(50)])
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    # SQLite caps the parameters of one statement: Django splits the batch there
    assert len(inserts) == 1 or connection.vendor != "postgresql"
    assert len(tasks) == 50 and (all(t.pk for t in tasks) or connection.vendor != "postgresql")
    assert Task.objects.filter(op="task_sum", status="pending").count() == 50
    assert runner.run_next(["task_sum"]).result == 0


def test_the_limit_holds_for_the_whole_batch_and_names_the_first_offender():
    LimitedTask.create_task("b")
    with pytest.raises(TaskLimitError) as caught:
        LimitedTask.create_tasks([(("a",), {}), (("b",), {}), (("c",), {})])
    assert caught.value.limit_id == "b"
    assert Task.objects.filter(op="task_limited").count() == 1  # nothing of the batch
    with pytest.raises(TaskLimitError, match="'d'"):
        LimitedTask.create_tasks([(("d",), {}), (("d",), {})])  # within the batch too
    assert len(LimitedTask.create_tasks([(("a",), {}), (("c",), {})])) == 2


def test_create_tasks_rolls_back_with_the_callers_transaction():
    with transaction.atomic():
        SumTask.create_tasks([((1, 1), {}), ((2, 2), {})])
        transaction.set_rollback(True)
    assert Task.objects.count() == 0


def test_create_tasks_through_configure_and_bad_calls():
    tasks = SumTask.configure(run_after=timedelta(hours=1), priority=3).create_tasks(
        [((1, 1), {}), ((2, 2), {})]
    )
    assert all(t.scheduled and t.priority == 3 for t in tasks)
    assert Task.queue.claim("w", ["task_sum"]) == []
    with pytest.raises(TypeError, match="call 1 of create_tasks"):
        SumTask.create_tasks([((1, 1), {}), (1, 1, 1)])
    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        SumTask.create_tasks([((object(), 1), {})])
    assert Task.objects.count() == 2


def test_a_batch_stores_what_one_at_a_time_would():
    """Row for row, ``create_tasks`` stores what ``create_task`` stores (only the ids and
    the timestamps differ), whatever varies between the calls of a batch."""
    parent = SumTask.create_task(0, 0)
    varied = [((1, 2), {}), ((3, 4), {}), ((5, 6), {})]
    creator = SumTask.configure(run_after=timedelta(hours=1), priority=7)
    singles = [creator.create_task(*args, parent=parent, timeout=9, **kw) for args, kw in varied]
    batch = creator.create_tasks(varied, parent=parent, timeout=9)
    skip = {"id", "created", "updated", "run_after"}
    fields = [f.attname for f in Task._meta.concrete_fields if f.attname not in skip]

    def stored(tasks):
        return [Task.objects.filter(pk=t.pk).values(*fields).get() for t in tasks]

    assert stored(batch) == stored(singles)
    for task in batch:
        fresh = Task.objects.get(pk=task.pk)
        assert fresh.created is not None and fresh.run_after is not None
        assert (task.pk, task.param) == (fresh.pk, fresh.param)
    # the instances returned are saved rows: they can be changed and saved again
    batch[0].priority = 1
    batch[0].save(update_fields=["priority"])
    assert Task.objects.get(pk=batch[0].pk).priority == 1
