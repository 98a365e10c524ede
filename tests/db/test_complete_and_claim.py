"""A completion that claims the worker's next task in the same statement: the same rules as
a completion followed by a claim, and no claim at all when the completion lost its lease."""

import pytest
from example_tasks.models import EchoTask, SumTask

from django_fullctl.models import Task
from django_fullctl.states import Lease

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.portable]


def claim_one(op: str, worker: str = "host-a:1") -> Task:
    [task] = Task.queue.claim(worker, [op])
    return task


def test_the_completion_brings_the_next_task():
    first, second = SumTask.create_task(1, 1), SumTask.create_task(2, 2)
    running = claim_one("task_sum")
    assert running.pk == first.pk

    done, next_task = Task.queue.complete_and_claim(
        running.lease, 2, 0.01, "host-a:1", ["task_sum"]
    )

    assert done
    assert isinstance(next_task, SumTask) and next_task.pk == second.pk
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.result) == ("completed", 2)
    assert (second.status, second.attempt, second.queue_id) == ("running", 1, "host-a:1")
    assert next_task.lease == second.lease


def test_a_lost_lease_claims_nothing():
    first, second = SumTask.create_task(1, 1), SumTask.create_task(2, 2)
    running = claim_one("task_sum")
    # the supervisor gave up on this worker meanwhile: the task went back to pending
    assert Task.queue.requeue(running.lease, "worker lost")

    done, next_task = Task.queue.complete_and_claim(
        running.lease, 2, 0.01, "host-a:1", ["task_sum"]
    )

    assert (done, next_task) == (False, None)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == "pending" and first.result is None
    assert (second.status, second.attempt) == ("pending", 0)


def test_a_stale_attempt_claims_nothing():
    SumTask.create_task(1, 1)
    waiting = SumTask.create_task(2, 2)
    running = claim_one("task_sum")
    stale = Lease(running.pk, running.attempt + 1)
    assert Task.queue.complete_and_claim(stale, 2, 0.01, "host-a:1", ["task_sum"]) == (False, None)
    waiting.refresh_from_db()
    assert waiting.status == "pending"


def test_only_the_workers_ops_are_claimed():
    SumTask.create_task(1, 1)
    other = EchoTask.create_task("not ours")
    running = claim_one("task_sum")
    done, next_task = Task.queue.complete_and_claim(
        running.lease, 2, 0.01, "host-a:1", ["task_sum"]
    )
    assert (done, next_task) == (True, None)
    other.refresh_from_db()
    assert other.status == "pending"


def test_released_children_are_claimed_by_the_next_statement():
    parent = SumTask.create_task(1, 1)
    child = SumTask.create_task(2, 2, parent=parent)
    running = claim_one("task_sum")

    done, next_task = Task.queue.complete_and_claim(
        running.lease, 2, 0.01, "host-a:1", ["task_sum"]
    )

    assert done
    child.refresh_from_db()
    assert not child.waiting
    if next_task is None:  # PostgreSQL: released in this statement's own snapshot
        assert child.status == "pending"
        next_task = claim_one("task_sum")
    assert next_task.pk == child.pk


def test_higher_priority_first_as_for_a_claim():
    SumTask.create_task(1, 1)
    SumTask.create_task(5, 5)
    urgent = SumTask.create_task(9, 9)
    Task.objects.filter(pk=urgent.pk).update(priority=10)
    running = claim_one("task_sum")
    assert running.pk == urgent.pk
    _, next_task = Task.queue.complete_and_claim(running.lease, 18, 0.01, "w", ["task_sum"])
    assert next_task is not None and next_task.param["args"] == [1, 1]
