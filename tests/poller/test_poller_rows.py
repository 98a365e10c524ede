"""The row each poller keeps of itself, as a real poller process keeps it: registered at
start, refreshed with its busy slots, through a database outage, deleted on a clean exit;
the operator's stop-claiming request obeyed in both modes; silent rows swept."""

import signal
from datetime import timedelta

import pytest
from django.utils import timezone
from example_tasks.models import SleepTask, SumTask
from helpers import running, wait_for

from django_fullctl.models import Poller
from django_fullctl.pollers import PollerRow

pytestmark = pytest.mark.django_db(transaction=True)


def row_of(host: str) -> PollerRow | None:
    rows = Poller.fleet.by_host([host]).get(host, [])
    return rows[0] if len(rows) == 1 else None


def wait_row(host: str, condition=lambda row: True, timeout: float = 30.0) -> PollerRow:
    return wait_for(lambda: (row := row_of(host)) is not None and condition(row) and row,
                    timeout)


def refreshed_twice(host: str, after: PollerRow) -> PollerRow:
    """Wait for two more refreshes of the row (the poller's loop went round meanwhile)."""
    once = wait_row(host, lambda row: row.last_seen > after.last_seen)
    return wait_row(host, lambda row: row.last_seen > once.last_seen)


def test_a_poller_keeps_its_row_while_it_runs_and_removes_it_on_exit(start_poller):
    poller = start_poller("-p", "2", env={"HOSTNAME": "pool-rows-0"})
    row = wait_row("pool-rows-0")
    assert row.pid == poller.process.pid
    assert (row.mode, row.slots, row.busy_slots) == ("processes", 2, 0)
    assert {"task_sleep", "task_sum"} <= set(row.ops)
    assert row.worker_id.endswith(f":{poller.process.pid}")
    assert row.claims and not row.draining

    task = running(SleepTask.create_task(60))
    busy = wait_row("pool-rows-0", lambda row: row.busy_slots == 1)
    assert busy.started == row.started and busy.last_seen > row.last_seen
    task.cancel()  # stops it in its worker: the slot is free again
    wait_row("pool-rows-0", lambda row: row.busy_slots == 0)

    poller.signal(signal.SIGTERM)
    assert poller.wait_exit() == 0
    assert not Poller.objects.filter(host="pool-rows-0").exists()


def test_a_poller_asked_to_stop_claiming_finishes_its_tasks_and_claims_nothing(start_poller):
    host = "pool-rows-1"
    poller = start_poller("-p", "2", env={"HOSTNAME": host})
    wait_row(host)
    long = running(SleepTask.create_task(60))
    short = running(SleepTask.create_task(1))

    assert Poller.fleet.request_stop_claiming([host]) == {host}
    # acknowledged, with the long task still counted busy
    acked = wait_row(host, lambda row: row.claiming_stopped)
    assert acked.claiming_paused and acked.busy_slots >= 1 and not acked.drained
    waiting = SumTask.create_task(1, 1)
    # what it runs finishes normally: not interrupted, not requeued
    short.wait(timeout=30)
    assert (short.status, short.attempt) == ("completed", 1)
    long.cancel()
    drained = wait_row(host, lambda row: row.drained)
    # nothing new was claimed while the row went on being refreshed
    refreshed_twice(host, drained)
    waiting.refresh_from_db()
    assert waiting.status == "pending" and waiting.attempt == 0
    assert "asked to stop claiming" in poller.output

    assert Poller.fleet.clear_stop_claiming([host]) == {host}
    waiting.wait(timeout=30)
    assert waiting.result == 2
    row = wait_row(host, lambda row: not row.claiming_stopped)
    assert row.claims
    assert "claiming again" in poller.output


def test_workers_mode_stops_dispatching_while_asked(start_poller):
    host = "pool-rows-2"
    poller = start_poller("--workers", "2", env={"HOSTNAME": host})
    assert wait_row(host).mode == "workers"
    long = running(SleepTask.create_task(60))
    wait_row(host, lambda row: row.busy_slots == 1)

    Poller.fleet.request_stop_claiming([host])
    acked = wait_row(host, lambda row: row.claiming_stopped)
    assert acked.busy_slots == 1
    waiting = SumTask.create_task(2, 2)
    refreshed_twice(host, acked)
    waiting.refresh_from_db()
    assert waiting.status == "pending"
    long.cancel()
    wait_row(host, lambda row: row.drained)

    Poller.fleet.clear_stop_claiming([host])
    waiting.wait(timeout=30)
    assert waiting.result == 4
    assert poller.process.poll() is None


def test_the_row_rides_out_a_database_outage(start_poller, db_proxy):
    host = "pool-rows-3"
    poller = start_poller("-p", "1", env={"HOSTNAME": host, "DATABASE_URL": db_proxy.url})
    before = wait_row(host)
    db_proxy.cut()
    poller.wait_for_log("poller row not written")
    assert poller.process.poll() is None  # the supervisor goes on
    db_proxy.restore()
    after = wait_row(host, lambda row: row.last_seen > before.last_seen)
    assert after.started == before.started and after.pid == before.pid
    task = SumTask.create_task(3, 4)
    task.wait(timeout=30)
    assert task.result == 7


def test_rows_of_pollers_gone_silent_are_swept(start_poller):
    stamp = timezone.now() - timedelta(minutes=5)
    Poller.objects.create(
        host="vanished-pod", pid=1, worker_id="vanished-pod:1", mode="processes",
        ops=["task_sum"], slots=4, busy_slots=3, started=stamp, last_seen=stamp,
    )
    assert "vanished-pod" not in Poller.fleet.by_host()  # silent: not live already
    poller = start_poller(
        "-p", "1", env={"HOSTNAME": "pool-rows-4", "TASK_ORPHANED_HEARTBEAT_TIMEOUT": "2"}
    )
    wait_for(lambda: not Poller.objects.filter(host="vanished-pod").exists())
    poller.wait_for_log("poller vanished-pod:1 silent, row deleted")
    assert wait_row("pool-rows-4").claims
