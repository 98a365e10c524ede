"""A self-claiming worker claims its next task with the completion of the last one; these
are the cases in which it must not: a drain, the last task before recycling (``-t``,
``--max-memory-per-process``). A task claimed by a worker that then exits would sit
running with nobody on it until the orphan rescue."""

import signal

import pytest
from example_tasks.models import SleepTask, SumTask
from helpers import worker_pid

from django_fullctl.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def finished(tasks: list[Task], timeout: float = 30.0) -> list[Task]:
    for task in tasks:
        task.wait(timeout=timeout)
    return tasks


def test_a_drain_during_a_task_claims_none_of_the_backlog(start_poller):
    poller = start_poller("-p", "1", "--grace-period", "30")
    long_task = SleepTask.create_task(1.5)
    backlog = [SumTask.create_task(i, i) for i in range(5)]
    claimed_log = poller.wait_for_log("task claimed")
    assert f"task={long_task.pk}" in claimed_log
    poller.signal(signal.SIGTERM)
    poller.wait_for_log("draining")
    assert poller.wait_exit(30) == 0
    long_task.refresh_from_db()
    assert long_task.status == "completed"
    for task in backlog:
        task.refresh_from_db()
        assert (task.status, task.attempt, task.queue_id) == ("pending", 0, None)


def test_a_recycling_worker_does_not_claim_with_its_last_task(start_poller):
    backlog = [SumTask.create_task(i, 0) for i in range(6)]
    poller = start_poller("-p", "1", "-t", "2")
    finished(backlog)
    for task in backlog:
        task.refresh_from_db()
        assert (task.status, task.attempt) == ("completed", 1)
    pids = [worker_pid(t) for t in backlog]
    assert len(set(pids)) == 3
    assert all(pids.count(pid) == 2 for pid in set(pids))
    poller.wait_for_log("recycled after 2 tasks")


def test_max_memory_per_process_recycles_after_the_task(start_poller):
    backlog = [SumTask.create_task(i, 0) for i in range(3)]
    # 1 MiB: every worker is over it, so each runs one task and is replaced
    poller = start_poller("-p", "1", "--max-memory-per-process", "1")
    finished(backlog)
    for task in backlog:
        task.refresh_from_db()
        assert (task.status, task.attempt) == ("completed", 1)
    assert len({worker_pid(t) for t in backlog}) == 3
    poller.wait_for_log("recycled at")


def test_a_negative_memory_limit_is_refused(start_poller):
    poller = start_poller("-p", "1", "--max-memory-per-process", "-5")
    assert poller.wait_exit(30) != 0
    assert "--max-memory-per-process must not be negative" in poller.output
