"""The fullctl backend of Django's Tasks API, end to end with real pollers, written only
against the framework's public API (``tasks_framework`` picks ``django.tasks`` on Django
6, the ``django_tasks`` backport on 5.2). ``make test-django6`` runs this module on Django 6."""

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.utils import timezone
from helpers import wait_for

from tests.testapp import django_tasks as jobs
from tests.testapp.tasks_framework import (
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
    signals,
)

pytestmark = pytest.mark.django_db(transaction=True)


def finished(result, timeout: float = 30.0):
    def done():
        result.refresh()
        return result.is_finished

    wait_for(done, timeout)
    return result


def test_the_backend_supports_everything():
    backend = default_task_backend
    assert backend.supports_defer and backend.supports_async_task
    assert backend.supports_get_result and backend.supports_priority
    assert backend.check() == []


def test_an_enqueue_that_is_rolled_back_leaves_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        result = jobs.add.enqueue(1, 2)
        assert jobs.add.get_result(result.id).status == TaskResultStatus.READY
        raise RuntimeError("roll back")
    with pytest.raises(TaskResultDoesNotExist):
        jobs.add.get_result(result.id)


def test_unknown_and_malformed_ids_do_not_exist():
    for result_id in ["nope", "", "1", "x" * 500]:
        with pytest.raises(TaskResultDoesNotExist):
            jobs.add.get_result(result_id)


def test_ready_running_successful(start_poller):
    result = jobs.slow_add.enqueue(2, 3, seconds=1.5)
    assert result.status == TaskResultStatus.READY and not result.is_finished
    assert isinstance(result.id, str) and len(result.id) >= 32
    assert result.args == [2, 3] and result.kwargs == {"seconds": 1.5}
    assert result.enqueued_at is not None and result.started_at is None
    start_poller("-p", "1")

    def running():
        result.refresh()
        return result.status == TaskResultStatus.RUNNING

    wait_for(running, 30)
    assert result.started_at is not None and result.attempts == 1
    finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5 and result.errors == []
    assert result.finished_at >= result.started_at >= result.enqueued_at
    assert result.last_attempted_at == result.started_at
    assert len(result.worker_ids) == 1 and result.worker_ids[0]
    again = jobs.slow_add.get_result(result.id)
    assert again.status == TaskResultStatus.SUCCESSFUL and again.return_value == 5


def test_a_failing_function_fails_with_its_exception_class(start_poller):
    start_poller("-p", "1")
    result = finished(jobs.fail.enqueue("it broke"))
    assert result.status == TaskResultStatus.FAILED
    with pytest.raises(ValueError):
        result.return_value  # noqa: B018 - the property raises
    [error] = result.errors
    assert error.exception_class is jobs.Boom
    assert error.exception_class_path == "tests.testapp.django_tasks.Boom"
    assert "it broke" in error.traceback and "Traceback" in error.traceback


def test_the_context_counts_the_attempt_after_a_sigkill(start_poller, tmp_path):
    marker = tmp_path / "attempts"
    poller = start_poller("-p", "1")
    result = finished(jobs.die_on_first_attempt.enqueue(str(marker)), timeout=60)
    assert marker.read_text().split() == ["1", "2"]
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 2
    assert result.attempts == 2 and len(result.worker_ids) == 2
    assert all(result.worker_ids), result.worker_ids
    # the lost attempt is in the history, as an importable exception class
    assert len(result.errors) == 1 and issubclass(result.errors[0].exception_class, Exception)
    assert "killed by SIGKILL" in poller.output


def test_an_async_function_completes(start_poller):
    start_poller("-p", "1")
    result = finished(jobs.async_add.enqueue(20, 22))
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 42


async def test_aenqueue_and_aget_result(start_poller):
    start_poller("-p", "1")
    result = await jobs.async_add.aenqueue(1, 2)
    assert result.status == TaskResultStatus.READY

    async def done():
        await result.arefresh()
        return result.is_finished

    async def wait():
        deadline = asyncio.get_running_loop().time() + 30
        while not await done():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)

    await wait()
    again = await jobs.async_add.aget_result(result.id)
    assert again.status == TaskResultStatus.SUCCESSFUL and again.return_value == 3
    # the thread sync_to_async ran the database calls in keeps its connection: close it
    await sync_to_async(connections.close_all, thread_sensitive=True)()


def test_run_after_is_honoured(start_poller):
    start_poller("-p", "1")
    due = timezone.now() + timedelta(seconds=2)
    result = jobs.add.using(run_after=due).enqueue(1, 1)
    assert result.task.run_after == due
    finished(result)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 2
    assert result.started_at >= due


def test_priorities_order_execution(start_poller):
    results = {
        priority: jobs.stamp.using(priority=priority).enqueue(priority)
        for priority in (-10, 0, 100, 50, -100)
    }
    start_poller("-p", "1")
    for result in results.values():
        finished(result)
    order = sorted(results, key=lambda p: results[p].started_at)
    assert order == [100, 50, 0, -10, -100]


def test_the_task_s_queue_and_priority_are_kept(start_poller):
    result = jobs.send_welcome.enqueue(42)
    assert result.task.queue_name == "emails" and result.task.priority == 10
    start_poller("-p", "1")
    assert finished(result).return_value == "welcome 42"


def test_invalid_tasks_are_rejected_with_the_framework_s_exceptions():
    with pytest.raises(InvalidTask):
        jobs.add.using(queue_name="no-such-queue")
    with pytest.raises(InvalidTask):
        jobs.add.using(priority=101)
    with pytest.raises(InvalidTask):
        jobs.add.using(run_after=timezone.now().replace(tzinfo=None))


def test_arguments_that_cannot_be_stored_are_refused():
    with pytest.raises(TypeError, match="JSON"):
        jobs.add.enqueue(object(), 1)


def test_signals_are_sent(start_poller, tmp_path):
    log = tmp_path / "signals.log"
    enqueued = []

    def receiver(sender, task_result, **kwargs):
        enqueued.append((task_result.id, task_result.status))

    signals.task_enqueued.connect(receiver)
    try:
        result = jobs.add.enqueue(3, 4)
    finally:
        signals.task_enqueued.disconnect(receiver)
    assert enqueued == [(result.id, TaskResultStatus.READY)]
    start_poller("-p", "1", env={"FULLCTL_TEST_SIGNAL_LOG": str(log)})
    finished(result)
    lines = wait_for(lambda: Path(log).exists() and len(log.read_text().splitlines()) >= 2 and
                     log.read_text().splitlines())
    assert lines == [
        f"started {result.id} RUNNING",
        f"finished {result.id} SUCCESSFUL stored=SUCCESSFUL",
    ]
