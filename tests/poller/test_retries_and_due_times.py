"""Retries with backoff and delayed tasks, with real pollers: a retry is "back to pending
with a due time", released on time by the idle poller that knows of it."""

import re
import signal
from datetime import timedelta

import pytest
from django.db import connection
from example_tasks.models import SumTask

from fullctl.django.models import Task
from tests.testapp.models import FlakyTask, PatientTask, SlowOnceTask

pytestmark = pytest.mark.django_db(transaction=True)


def final(task: Task, timeout: float = 30) -> Task:
    return task.wait(timeout=timeout)


def attempt_starts(task: Task) -> list[float]:
    """Wall-clock start of every attempt: the failed ones from the history's messages."""
    starts = [float(re.search(r"started at ([0-9.]+)", e["error"]).group(1))
              for e in task.errors if e["error_class"] == "ConnectionError"]
    return [*starts, float(task.result_data)]


def test_backoff_delays_are_observed_and_the_history_kept(start_poller):
    # a 10-minute backstop poll: only the due time can wake the idle worker in time
    start_poller("-p", "1", "--poll-interval", "600")
    task = final(FlakyTask.create_task(3))
    assert task.status == "completed" and task.attempt == 4
    starts = attempt_starts(task)
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    # delay * factor ** (attempt - 1): 0.4, 0.8, 1.6 s (no jitter); never before the due
    # time, and the poller must be woken by it (the backstop is 10 minutes away)
    for gap, expected in zip(gaps, [0.4, 0.8, 1.6], strict=True):
        assert expected - 0.05 <= gap <= expected + 1.0, gaps
    assert [(e["attempt"], e["error_class"]) for e in task.errors] == [
        (1, "ConnectionError"), (2, "ConnectionError"), (3, "ConnectionError")]
    assert all("Traceback" in e["error"] and e["at"] for e in task.errors)


def test_the_last_attempt_fails_for_good(start_poller):
    start_poller("-p", "1")
    task = final(FlakyTask.create_task(10), timeout=40)
    assert task.status == "failed" and task.attempt == 4 and len(task.errors) == 4
    assert "ConnectionError" in task.error


def test_retry_later_asks_for_another_attempt(start_poller):
    start_poller("-p", "1")
    task = final(PatientTask.create_task())
    assert task.status == "completed" and task.result_data == 2
    [entry] = task.errors
    assert entry["error_class"] == "RetryLater" and "503" in entry["error"]


def test_a_timed_out_attempt_retries_when_the_policy_names_timeouts(start_poller):
    start_poller("-p", "1", env={"TASK_TIMEOUT_KILL_GRACE_SECONDS": "5"})
    task = final(SlowOnceTask.create_task())
    assert task.status == "completed" and task.attempt == 2
    assert task.errors[0]["error_class"] == "TaskTimedOut"


def test_a_sigkilled_attempt_counts_once_and_the_retry_goes_on(start_poller):
    """Attempt 1 kills its worker (rescued: an attempt used), attempt 2 raises (retried
    by the policy), attempt 3 succeeds: one counter for both kinds of failure."""
    poller = start_poller("-p", "1")
    task = final(FlakyTask.create_task(2, kill_on=1))
    assert task.status == "completed" and task.attempt == 3
    assert [(e["attempt"], e["error_class"]) for e in task.errors] == [
        (1, "WorkerLost"), (2, "ConnectionError")]
    assert "worker died (killed by SIGKILL)" in poller.output


def test_children_wait_while_their_parent_retries(start_poller):
    start_poller("-p", "2")
    parent = FlakyTask.create_task(1)
    child = SumTask.create_task(2, 3, parent=parent)
    assert final(child).status == "completed"
    parent.refresh_from_db()
    assert parent.status == "completed" and parent.attempt == 2
    doomed = FlakyTask.create_task(10)
    orphan = SumTask.create_task(1, 1, parent=doomed)
    assert final(orphan, timeout=40).status == "cancelled"
    assert final(doomed).status == "failed"


def test_a_delayed_task_starts_on_time(start_poller):
    poller = start_poller("-p", "1", "--poll-interval", "600")
    poller.wait_for_log("worker started")
    task = SumTask.configure(run_after=timedelta(seconds=2)).create_task(2, 2)
    assert task.scheduled and task.run_after is not None
    assert final(task).result == 4
    late = (task.started - task.run_after).total_seconds()
    # never early; woken by its due time (the backstop poll is 10 minutes away)
    assert 0 <= late < 1.0


def test_the_workers_mode_dispatcher_also_wakes_at_the_due_time(start_poller):
    start_poller("-w", "1", "--poll-interval", "600")
    task = SumTask.configure(run_after=timedelta(seconds=1)).create_task(1, 2)
    assert final(task).result == 3
    assert 0 <= (task.started - task.run_after).total_seconds() < 1.0


def test_due_times_come_from_the_database_clock(start_poller, postgresql_only):
    task = SumTask.configure(run_after=timedelta(seconds=30)).create_task(1, 1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXTRACT(EPOCH FROM %s - now())", [task.run_after])
        assert 29 <= float(cursor.fetchone()[0]) <= 30
    poller = start_poller("-p", "1", "--poll-interval", "0.2")
    # a task created after it and due now runs first: the scheduled one is not claimable
    assert final(SumTask.create_task(2, 2)).status == "completed"
    task.refresh_from_db()
    assert task.status == "pending" and task.scheduled
    poller.signal(signal.SIGTERM)
    assert poller.wait_exit() == 0
