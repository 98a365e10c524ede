"""The poller rows (``Poller.fleet``): what a supervisor writes of itself, what readers and
the operator see, the stop-claiming request, and the sweep of silent rows."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from django_fullctl.models import Poller
from django_fullctl.pollers import PollerReport

pytestmark = [pytest.mark.portable, pytest.mark.django_db(transaction=True)]


def report(host: str = "pool-a-1", pid: int = 7, **changes) -> PollerReport:
    values = {
        "host": host, "pid": pid, "worker_id": f"{host}:{pid}", "mode": "processes",
        "ops": ["task_sum", "task_echo"], "slots": 4, "busy_slots": 0, **changes,
    }
    return PollerReport(**values)


def silence(host: str, minutes: float = 5) -> None:
    Poller.objects.filter(host=host).update(
        last_seen=timezone.now() - timedelta(minutes=minutes))


def test_a_poller_registers_and_refreshes_its_row():
    first = Poller.fleet.report(report(busy_slots=0))
    assert (first.host, first.pid, first.mode, first.slots) == ("pool-a-1", 7, "processes", 4)
    assert first.ops == ("task_sum", "task_echo")
    assert not first.draining and not first.claiming_paused and first.claims

    later = Poller.fleet.report(report(busy_slots=3, draining=True, started=first.started))
    assert Poller.objects.count() == 1
    assert later.busy_slots == 3 and later.draining and not later.claims
    assert later.started == first.started and later.last_seen >= first.last_seen
    [live] = Poller.fleet.live()
    assert live == later
    json.dumps(live.as_dict())  # what status --json prints


def test_a_new_process_with_the_same_host_and_pid_takes_the_row_over():
    old = Poller.fleet.report(report())
    Poller.objects.update(started=timezone.now() - timedelta(hours=1))
    fresh = Poller.fleet.report(report(mode="workers"))  # no started: a new process
    assert Poller.objects.count() == 1
    assert fresh.mode == "workers" and fresh.started > old.started - timedelta(minutes=1)


def test_the_operator_asks_pods_to_stop_claiming_and_takes_it_back():
    Poller.fleet.report(report("pool-a-1"))
    Poller.fleet.report(report("pool-a-2"))
    asked = Poller.fleet.request_stop_claiming(["pool-a-1", "pool-a-9"])
    assert asked == {"pool-a-1"}  # pool-a-9 has no row: not asked

    row = Poller.fleet.report(report("pool-a-1", busy_slots=2))
    assert row.claiming_paused and row.claiming_paused_at is not None
    assert not row.claiming_stopped and not row.drained  # the poller has not acted yet
    first_asked = row.claiming_paused_at
    Poller.fleet.request_stop_claiming(["pool-a-1"])  # every tick asks again: no change
    row = Poller.fleet.report(report("pool-a-1", busy_slots=1, claiming_stopped=True,
                                     claiming_paused=True))
    assert row.claiming_paused_at == first_asked
    assert row.claiming_stopped and not row.drained  # one task still runs
    row = Poller.fleet.report(report("pool-a-1", busy_slots=0, claiming_stopped=True,
                                     claiming_paused=True))
    assert row.drained

    rows = Poller.fleet.by_host(["pool-a-1", "pool-a-2"])
    assert [r.drained for r in rows["pool-a-1"]] == [True]
    assert [r.claiming_paused for r in rows["pool-a-2"]] == [False]

    assert Poller.fleet.clear_stop_claiming(["pool-a-1", "pool-a-2"]) == {"pool-a-1"}
    row = Poller.fleet.report(report("pool-a-1"))
    assert not row.claiming_paused and row.claiming_paused_at is None


def test_busy_slots_count_only_on_live_pollers():
    Poller.fleet.report(report("pool-a-1", busy_slots=1))
    Poller.fleet.report(report("pool-a-2", busy_slots=0))
    Poller.fleet.report(report("pool-a-3", busy_slots=2))
    silence("pool-a-3")  # gone quiet: its busy slots no longer count
    live = {row.host: row.busy_slots for row in Poller.fleet.live(max_age=30)}
    assert live == {"pool-a-1": 1, "pool-a-2": 0}


def test_silent_rows_are_not_live_and_the_sweep_deletes_them():
    Poller.fleet.report(report("pool-a-1"))
    Poller.fleet.report(report("pool-a-2"))
    silence("pool-a-2", minutes=2)
    assert [r.host for r in Poller.fleet.live(max_age=60)] == ["pool-a-1"]

    gone = Poller.fleet.delete_silent(60)
    assert [r.host for r in gone] == ["pool-a-2"]
    assert list(Poller.objects.values_list("host", flat=True)) == ["pool-a-1"]
    assert Poller.fleet.delete_silent(60) == []


def test_a_swept_row_comes_back_with_the_request_it_had():
    """A long outage: the sweep removed the row of a poller that was asked to stop
    claiming; its next report puts the row back, still asked (the poller remembers)."""
    first = Poller.fleet.report(report())
    Poller.fleet.request_stop_claiming(["pool-a-1"])
    silence("pool-a-1")
    assert len(Poller.fleet.delete_silent(60)) == 1
    back = Poller.fleet.report(report(started=first.started, claiming_paused=True,
                                      claiming_stopped=True))
    assert back.claiming_paused and back.claiming_stopped
    assert back.started == first.started


def test_a_clean_exit_removes_the_row():
    Poller.fleet.report(report("pool-a-1", pid=7))
    Poller.fleet.report(report("pool-a-1", pid=8))
    assert Poller.fleet.remove("pool-a-1", 7) == 1
    assert [r.pid for r in Poller.fleet.by_host()["pool-a-1"]] == [8]
