"""Delayed tasks and the retry policy in one process: what ``configure`` accepts, what a
scheduled task costs the claim and the counts, and the backoff arithmetic."""

from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from example_tasks.models import SumTask

from django_fullctl import runner
from django_fullctl.management.commands.fullctl_tasks import status_report
from fullctl.django.models import Task
from fullctl.django.tasks import Retry, RetryLater

pytestmark = [pytest.mark.portable, pytest.mark.django_db(transaction=True)]


def test_a_naive_run_after_is_a_clear_error_under_use_tz():
    with pytest.raises(ValueError, match="naive datetime while USE_TZ"):
        SumTask.configure(run_after=datetime(2030, 1, 1, 3, 0))
    with pytest.raises(TypeError, match="run_after must be a datetime or a timedelta"):
        SumTask.configure(run_after="tomorrow")
    assert Task.objects.count() == 0


def test_configure_keeps_create_tasks_signature_and_sets_priority():
    task = SumTask.configure(priority=7).create_task(1, 2)
    assert task.priority == 7 and task.param == {"args": [1, 2], "kwargs": {}}
    assert not task.scheduled and task.run_after is None


def test_a_task_not_due_is_not_claimed_counted_or_run():
    later = SumTask.configure(run_after=timezone.now() + timedelta(hours=1)).create_task(1, 1)
    assert later.scheduled
    assert Task.queue.claim("w", ["task_sum"]) == []
    assert Task.queue.counts_by_op().get("task_sum") is None  # the operator scales for none
    report = status_report()
    assert report["ops"]["task_sum"]["scheduled"] == 1
    assert report["ops"]["task_sum"]["pending"] == 0


def test_a_run_after_in_the_past_runs_at_once():
    task = SumTask.configure(run_after=timezone.now() - timedelta(minutes=1)).create_task(2, 3)
    assert not task.scheduled
    assert runner.run_next(["task_sum"]).result == 5


def test_release_makes_due_tasks_claimable():
    task = SumTask.configure(run_after=timedelta(seconds=0.2)).create_task(1, 1)
    assert task.scheduled and Task.queue.release_due() == 0
    assert Task.queue.seconds_until_due(["task_sum"]) <= 0.2
    import time

    time.sleep(0.25)  # the due time passing is the behaviour under test
    assert Task.queue.release_due() == 1
    [claimed] = Task.queue.claim("w", ["task_sum"])
    assert claimed.pk == task.pk


def test_backoff_arithmetic_and_jitter_spread():
    policy = Retry(max_attempts=5, delay=1.0, factor=2.0, max_delay=6.0, jitter=False)
    assert [policy.delay_for(a) for a in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 6.0]
    jittered = Retry(delay=10.0, jitter=True)
    assert jittered.delay_for(1, rand=lambda: 0.0) == pytest.approx(9.0)
    assert jittered.delay_for(1, rand=lambda: 1.0) == pytest.approx(11.0)
    spread = {round(jittered.delay_for(1), 3) for _ in range(200)}
    assert len(spread) > 50 and min(spread) >= 9.0 and max(spread) <= 11.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"on": ("ConnectionError",)}, "exception classes"),
        ({"delay": -1}, "delay"),
        ({"factor": 0.5}, "factor"),
    ],
)
def test_a_bad_retry_policy_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Retry(**kwargs)
    with pytest.raises(ValueError, match="seconds >= 0"):
        RetryLater(delay=-1)
