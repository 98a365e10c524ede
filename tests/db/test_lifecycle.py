"""State transitions: chaining, cancelling, fencing, rescue, and waiting for results."""

import asyncio
import json
import threading
import time
from collections.abc import Callable

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections, transaction
from django.test.utils import override_settings
from django.utils import timezone
from example_tasks.models import EchoTask, FailTask, NoopTask, SumTask
from helpers import run_threads, wait_for

from django_fullctl import notify, runner
from django_fullctl.exceptions import TaskStateError
from django_fullctl.states import RescueOutcome
from fullctl.django.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def claim_one(op: str, worker: str = "host-a:1") -> Task:
    [task] = Task.queue.claim(worker, [op])
    return task


@pytest.mark.portable
def test_child_waits_for_its_parent():
    first_task = SumTask.create_task(1, 1)
    next_task = SumTask.create_task(2, 2, parent=first_task)
    assert next_task.waiting
    claimed = Task.queue.claim("w", ["task_sum"], limit=10)
    assert [t.pk for t in claimed] == [first_task.pk]
    runner.execute(claimed[0])
    next_task.refresh_from_db()
    assert not next_task.waiting
    assert runner.run_next().pk == next_task.pk


@pytest.mark.portable
def test_child_of_a_completed_parent_is_runnable_at_once():
    parent = SumTask.create_task(1, 1)
    runner.run_next()
    child = SumTask.create_task(1, 2, parent=parent)
    assert not child.waiting and child.status == "pending"


@pytest.mark.portable
def test_failed_parent_cancels_every_descendant():
    parent = FailTask.create_task()
    child = SumTask.create_task(1, 1, parent=parent)
    grandchild = SumTask.create_task(1, 2, parent=child)
    runner.run_next()
    for task in (child, grandchild):
        task.refresh_from_db()
        assert task.status == "cancelled"
    assert f"parent task {parent.pk} failed" in child.error
    assert f"parent task {child.pk}" in grandchild.error
    late_child = SumTask.create_task(1, 3, parent=parent)
    assert late_child.status == "cancelled"


@pytest.mark.portable
def test_cancel_pending_and_running_but_not_finished():
    pending = SumTask.create_task(1, 1)
    child = SumTask.create_task(1, 1, parent=pending)
    pending.cancel("not needed")
    assert pending.status == "cancelled" and pending.error == "not needed"
    child.refresh_from_db()
    assert child.status == "cancelled"

    running = EchoTask.create_task(1)
    claimed = claim_one("task_echo")
    running.cancel("stop it")
    assert running.status == "cancelled"
    assert not Task.queue.complete(claimed.lease, 1, 0.1)  # the worker's late result is ignored
    running.refresh_from_db()
    assert running.status == "cancelled" and running.result is None

    with pytest.raises(TaskStateError, match="cancelled"):
        running.cancel()


@pytest.mark.portable
def test_writes_are_fenced_on_the_attempt():
    task = EchoTask.create_task("x")
    first = claim_one("task_echo", "host-a:1")
    assert Task.queue.requeue(first.lease, "worker lost")
    second = claim_one("task_echo", "host-b:2")
    assert second.attempt == first.attempt + 1
    assert not Task.queue.complete(first.lease, "stale", 1.0)
    assert not Task.queue.fail(first.lease, "stale")
    assert not Task.queue.heartbeat(first.lease)
    assert Task.queue.complete(second.lease, "fresh", 1.0)
    task.refresh_from_db()
    assert task.status == "completed" and task.result == "fresh" and task.queue_id == "host-b:2"


@pytest.mark.portable
def test_rescue_requeues_while_attempts_remain_then_fails():
    task = EchoTask.create_task("x")
    assert task.max_attempts == 2
    first = claim_one("task_echo")
    assert Task.queue.rescue(first.lease, "worker died") == RescueOutcome.REQUEUED
    task.refresh_from_db()
    assert task.status == "pending" and task.attempt == 1
    second = claim_one("task_echo")
    assert Task.queue.rescue(second.lease, "worker died") == RescueOutcome.FAILED
    task.refresh_from_db()
    assert task.status == "failed"
    assert "worker died" in task.error and "2 attempt" in task.error
    assert Task.queue.rescue(second.lease, "again") is None


@pytest.mark.portable
def test_requeue_without_counting_the_attempt():
    task = EchoTask.create_task("x")
    claimed = claim_one("task_echo")
    assert Task.queue.requeue(claimed.lease, "draining", count_attempt=False)
    task.refresh_from_db()
    assert task.status == "pending" and task.attempt == 0


@pytest.mark.portable
def test_requeue_a_failed_task():
    task = FailTask.create_task()
    runner.run_next()
    task.refresh_from_db()
    task.requeue()
    assert task.status == "pending" and task.attempt == 0 and task.error is None
    with pytest.raises(TaskStateError):
        task.requeue()


@pytest.mark.portable
def test_orphan_rescue_by_stale_heartbeat():
    task = EchoTask.create_task("x")
    claimed = claim_one("task_echo", "gone-pod:7")
    assert Task.queue.heartbeat(claimed.lease)
    assert Task.queue.rescue_orphans(max_age=60) == []
    time.sleep(0.2)  # the behaviour under test: the heartbeat ages past max_age=0.1
    [(item, outcome)] = Task.queue.rescue_orphans(max_age=0.1)
    assert item.id == task.pk and item.host == "gone-pod" and outcome == RescueOutcome.REQUEUED
    task.refresh_from_db()
    assert task.status == "pending" and "gone-pod:7" in task.error


@pytest.mark.portable
def test_wait_times_out():
    task = SumTask.create_task(1, 1)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        task.wait(timeout=0.3)
    assert time.monotonic() - started >= 0.3


@pytest.mark.portable
def test_counts_by_op_only_count_runnable_pending():
    parent = SumTask.create_task(1, 1)
    SumTask.create_task(1, 1, parent=parent)
    EchoTask.create_task(1)
    claim_one("task_echo")
    assert Task.queue.counts_by_op() == {
        "task_sum": {"pending": 1, "running": 0},
        "task_echo": {"pending": 0, "running": 1},
    }


def complete_when(ready: Callable[[], object]) -> threading.Thread:
    """Run the pending ``task_sum`` in another thread as soon as ``ready()``."""

    def body():
        try:
            wait_for(ready)
            runner.run_next(["task_sum"])
        finally:
            connections.close_all()

    thread = threading.Thread(target=body)
    thread.start()
    return thread


def complete_later(task_id: int, delay: float) -> threading.Thread:
    # a fixed delay on purpose: the wait has to last while the event loop is watched
    started = time.monotonic()
    return complete_when(lambda: time.monotonic() - started >= delay)


def waiting_for_a_notification(since) -> Callable[[], bool]:
    """This thread's connection is waiting on ``DONE_CHANNEL``: its listener (connected
    since ``since``) has run LISTEN, and this connection ran the first check after it."""
    connection.ensure_connection()
    waiter = connection.connection.info.backend_pid

    def check() -> bool:
        with connections["default"].cursor() as cursor:  # the completing thread's own
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity waiter, pg_stat_activity listener"
                " WHERE waiter.pid = %s AND waiter.state = 'idle'"
                " AND listener.datname = waiter.datname AND listener.query = %s"
                " AND listener.backend_start >= %s"
                " AND waiter.query_start > listener.query_start",
                [waiter, f"LISTEN {notify.DONE_CHANNEL}", since],
            )
            return cursor.fetchone()[0] > 0

    return check


@override_settings(TASK_WAIT_POLL_INTERVAL_SECONDS=60)
def test_wait_is_woken_by_the_completion_notification(postgresql_only):
    task = SumTask.create_task(2, 3)
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        [since] = cursor.fetchone()
    # completed only once the waiter listens and found the task unfinished: the result can
    # then reach it through the notification (or the backstop poll, a minute away)
    thread = complete_when(waiting_for_a_notification(since))
    # the backstop poll is 60 s: returning inside the 20 s timeout proves the NOTIFY woke it
    task.wait(timeout=20)
    thread.join()
    assert task.result == 5


@override_settings(TASK_WAIT_POLL_INTERVAL_SECONDS=0.1)
@pytest.mark.portable
def test_async_wait_does_not_block_the_event_loop():
    task = SumTask.create_task(2, 3)
    thread = complete_later(task.pk, 0.5)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)  # a beat of the loop: counting them is the test
            ticks += 1

    async def scenario():
        beat = asyncio.create_task(ticker())
        await task.async_wait(timeout=20)
        beat.cancel()
        await sync_to_async(connections.close_all)()

    asyncio.run(scenario())
    thread.join()
    assert task.result == 5
    assert ticks >= 10  # the loop kept running while we waited


def test_concurrent_claims_never_hand_out_a_task_twice(postgresql_only):
    ids = {NoopTask.create_task().pk for _ in range(60)}
    results = run_threads(4, lambda i: [t.pk for _ in range(30) for t in
                                        Task.queue.claim(f"w{i}", ["task_noop"], limit=3)])
    claimed = [pk for result in results for pk in result]
    assert sorted(claimed) == sorted(ids)


def test_claim_skips_rows_locked_by_another_claim(postgresql_only):
    NoopTask.create_task()
    second = NoopTask.create_task()
    lock_taken, release = threading.Event(), threading.Event()

    def hold_first_row():
        from django.db import transaction

        with transaction.atomic():
            Task.objects.select_for_update().filter(op="task_noop").order_by("id").first()
            lock_taken.set()
            release.wait(10)
        connections.close_all()

    holder = threading.Thread(target=hold_first_row)
    holder.start()
    lock_taken.wait(10)
    [claimed] = Task.queue.claim("w", ["task_noop"])
    release.set()
    holder.join()
    assert claimed.pk == second.pk


@pytest.mark.portable
def test_a_pool_of_several_ops_claims_in_claim_order_across_its_ops():
    EchoTask.configure(priority=0).create_task("a")
    high_noop = NoopTask.configure(priority=9).create_task()
    mid_echo = EchoTask.configure(priority=5).create_task("b")
    NoopTask.configure(priority=3).create_task()
    SumTask.configure(priority=10).create_task(1, 1)  # not the pool's op
    claimed = Task.queue.claim("w", ["task_echo", "task_noop"], limit=3)
    assert [t.priority for t in claimed] == [9, 5, 3]
    assert claimed[0].pk == high_noop.pk and claimed[1].pk == mid_echo.pk
    assert Task.objects.filter(status="pending").count() == 2  # the others stay pending


@pytest.mark.portable
def test_an_op_named_twice_in_the_pool_is_claimed_as_once():
    ids = [NoopTask.create_task().pk for _ in range(2)]
    claimed = Task.queue.claim("w", ["task_noop", "task_noop"], limit=2)
    assert [t.pk for t in claimed] == ids


def test_concurrent_claims_of_several_ops_never_hand_out_a_task_twice(postgresql_only):
    """Each claim locks the head of every op of its pool for a moment: the heads it does
    not take are left for the next claims, none is lost or handed out twice."""
    ids = {task.pk for _ in range(20) for task in (
        NoopTask.create_task(), EchoTask.create_task("x"), SumTask.create_task(1, 2))}
    ops = ["task_noop", "task_echo", "task_sum"]
    results = run_threads(4, lambda i: [t.pk for _ in range(40) for t in
                                        Task.queue.claim(f"w{i}", ops, limit=2)])
    claimed = [pk for result in results for pk in result]
    assert sorted(claimed) == sorted(ids)


def test_a_rare_op_is_claimed_without_reading_the_other_ops_rows(postgresql_only):
    """A pool of two ops whose one task sits behind 20,000 runnable rows of another op:
    the claim reads a few index pages per op of the pool, not the rows in between."""
    from django_fullctl.queue import claim_params

    NoopTask.create_tasks([((), {})] * 20_000)
    rare = EchoTask.create_task("rare")
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Task._meta.db_table}")
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + Task.queue.statements["claim"],
            [*claim_params(["task_echo", "task_sum"], 1), "w", now, now, now],
        )
        [[plan]] = cursor.fetchall()
        transaction.set_rollback(True)
    top = (plan[0] if isinstance(plan, list) else json.loads(plan)[0])["Plan"]
    assert top["Actual Rows"] == 1  # it found the rare task
    # 20,000 rows of the other op fill about 400 heap and 60 index pages
    assert top["Shared Hit Blocks"] + top.get("Shared Read Blocks", 0) < 60
    [claimed] = Task.queue.claim("w", ["task_echo", "task_sum"])
    assert claimed.pk == rare.pk


@pytest.mark.portable
def test_purge_deletes_old_finished_tasks_but_never_an_active_chain():
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    old_parent = SumTask.create_task(1, 1)
    old_child = SumTask.create_task(1, 2, parent=old_parent)
    busy_parent = SumTask.create_task(2, 2)
    while runner.run_next(["task_sum"]):
        pass
    busy_child = EchoTask.create_task("still pending", parent=busy_parent)
    recent = FailTask.create_task()
    runner.run_next(["task_fail"])
    pending = NoopTask.create_task()
    long_ago = timezone.now() - timedelta(days=8)
    Task.objects.filter(pk__in=[old_parent.pk, old_child.pk, busy_parent.pk]).update(
        finished=long_ago
    )

    call_command("fullctl_tasks", "purge", "--older-than", "7d")

    left = set(Task.objects.values_list("pk", flat=True))
    assert left == {busy_parent.pk, busy_child.pk, recent.pk, pending.pk}
