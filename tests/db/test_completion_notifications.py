"""A completion sends its notification only when someone waits on that task: a queue
nobody waits on pays no NOTIFY (and no wake-up of every listener) per task."""

import threading

import pytest
from example_tasks.models import SumTask

from django_fullctl import notify
from fullctl.django.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def completed_ids(listener) -> set[str]:
    return {n.payload for n in listener.notifies(timeout=0.3)}


def finish(task: Task) -> None:
    [claimed] = Task.queue.claim("w", [task.op])
    assert Task.queue.complete(claimed.lease, 3, 0.01)


def test_only_a_waited_task_notifies_its_completion(postgresql_only):
    listener = notify.listen(notify.DONE_CHANNEL)
    try:
        unwatched = SumTask.create_task(1, 2)
        finish(unwatched)
        assert str(unwatched.pk) not in completed_ids(listener)

        watched = SumTask.create_task(1, 2)
        Task.queue.watch(watched.pk)
        finish(watched)
        assert str(watched.pk) in completed_ids(listener)
    finally:
        listener.close()


def test_wait_marks_the_task_and_is_woken_by_its_completion(postgresql_only):
    task = SumTask.create_task(1, 2)
    waiter = threading.Thread(target=lambda: task.wait(timeout=20))
    waiter.start()
    try:
        from helpers import wait_for

        wait_for(lambda: Task.objects.filter(pk=task.pk, waited=True).exists(), timeout=10)
        finish(task)
    finally:
        waiter.join(20)
    assert not waiter.is_alive() and task.status == "completed"
