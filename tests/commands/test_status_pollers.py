"""``fullctl_tasks status``: the live pollers, and per op with tasks to run whether any live
poller claims it (a task nobody qualifies for is called out instead of waiting silently)."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.test.utils import override_settings
from django.utils import timezone
from example_tasks.models import EchoTask, FailTask, ImportantTask, SumTask
from helpers import wait_for

from django_fullctl import runner
from django_fullctl.models import Poller
from django_fullctl.pollers import PollerReport

pytestmark = [pytest.mark.portable, pytest.mark.django_db(transaction=True)]


def status_output(*argv: str) -> str:
    out = StringIO()
    call_command("fullctl_tasks", "status", *argv, stdout=out)
    return out.getvalue()


def poller(host: str, ops: list[str], **changes) -> None:
    values = {"host": host, "pid": 7, "worker_id": f"{host}:7", "mode": "processes",
              "ops": ops, "slots": 4, "busy_slots": 0, **changes}
    Poller.fleet.report(PollerReport(**values))


@pytest.fixture
def fleet(monkeypatch):
    """pool-a serves sums and echoes, pool-b the important op but was asked to stop
    claiming (and did), pool-c serves failures but went silent ten minutes ago."""
    monkeypatch.delenv("TASK_ORPHANED_HEARTBEAT_TIMEOUT", raising=False)
    poller("pool-a-1", ["task_sum", "task_echo"], busy_slots=1)
    poller("pool-b-1", ["task_important"], claiming_paused=True)
    Poller.fleet.request_stop_claiming(["pool-b-1"])
    poller("pool-b-1", ["task_important"], claiming_paused=True, claiming_stopped=True)
    poller("pool-c-1", ["task_fail"])
    Poller.objects.filter(host="pool-c-1").update(
        last_seen=timezone.now() - timedelta(minutes=10))
    SumTask.create_task(1, 2)
    SumTask.create_task(3, 4)
    ImportantTask.create_task()
    FailTask.create_task("secret-message")
    EchoTask.create_task("secret-echo")
    runner.run_next(["task_echo"])  # finished: nothing of task_echo is left to run


@override_settings(TASK_ORPHANED_HEARTBEAT_TIMEOUT=30)
def test_status_json_lists_live_pollers_and_who_claims_each_op(fleet):
    report = json.loads(status_output("--json"))
    pollers = {p["name"]: p for p in report["pollers"]}
    assert set(pollers) == {"pool-a-1:7", "pool-b-1:7"}  # pool-c-1 is silent
    a, b = pollers["pool-a-1:7"], pollers["pool-b-1:7"]
    assert (a["mode"], a["slots"], a["busy_slots"], a["claims"]) == ("processes", 4, 1, True)
    assert a["ops"] == ["task_sum", "task_echo"]
    assert b["claiming_paused"] and b["claiming_stopped"] and not b["claims"]
    assert 0 <= a["seen_seconds_ago"] < 30

    claimed = report["claimed"]
    assert set(claimed) == {"task_sum", "task_important", "task_fail"}
    assert claimed["task_sum"] == {"to_run": 2, "claimed": True, "pollers": ["pool-a-1:7"],
                                   "stopped_pollers": []}
    assert claimed["task_important"]["claimed"] is False
    assert claimed["task_important"]["stopped_pollers"] == ["pool-b-1:7"]
    assert claimed["task_fail"] == {"to_run": 1, "claimed": False, "pollers": [],
                                    "stopped_pollers": []}


@override_settings(TASK_ORPHANED_HEARTBEAT_TIMEOUT=30)
def test_status_text_calls_out_the_ops_nobody_claims(fleet):
    text = status_output()
    lines = text.splitlines()
    assert "live pollers (refreshed within 30s): 2" in lines
    [a] = [line for line in lines if line.startswith("  pool-a-1:7")]
    assert "processes" in a and "1/4 busy" in a and "ops: task_sum, task_echo" in a
    [b] = [line for line in lines if line.startswith("  pool-b-1:7")]
    assert "asked to stop claiming (stopped)" in b
    assert "ops with tasks to run: 3, not claimed by any live poller: 2" in lines
    [sums] = [line for line in lines if line.startswith("  task_sum  ")]
    assert sums == "  task_sum  2 to run  claimed by 1 live poller(s): pool-a-1:7"
    [fails] = [line for line in lines if line.startswith("  task_fail  ")]
    assert "NOT CLAIMED: no live poller claims this op" in fails
    [important] = [line for line in lines if line.startswith("  task_important  ")]
    assert "NOT CLAIMED: the pollers of this op stopped claiming (pool-b-1:7)" in important
    assert "secret" not in text and "secret" not in status_output("--json")


@override_settings(TASK_ORPHANED_HEARTBEAT_TIMEOUT=30)
def test_status_with_no_poller_running(monkeypatch):
    monkeypatch.delenv("TASK_ORPHANED_HEARTBEAT_TIMEOUT", raising=False)
    SumTask.create_task(1, 1)
    text = status_output()
    assert "live pollers (refreshed within 30s): 0" in text
    assert "ops with tasks to run: 1, not claimed by any live poller: 1" in text


def test_status_of_a_real_poller_that_does_not_qualify_for_a_task(start_poller):
    """A poller without the important settings: the important task would wait silently;
    status says so, and that the sums are served by that very poller."""
    process = start_poller("-p", "1", env={"HOSTNAME": "pool-plain-0"})
    wait_for(lambda: Poller.fleet.by_host(["pool-plain-0"]))
    ImportantTask.create_task()
    SumTask.create_task(2, 2).wait(timeout=30)
    Poller.fleet.request_stop_claiming(["pool-plain-0"])  # so that the next sum waits
    wait_for(lambda: Poller.fleet.by_host()["pool-plain-0"][0].claiming_stopped)
    pending = SumTask.create_task(5, 5)
    report = json.loads(status_output("--json"))
    [row] = report["pollers"]
    assert row["name"] == f"pool-plain-0:{process.process.pid}"
    assert "task_important" not in row["ops"] and "task_sum" in row["ops"]
    assert report["claimed"]["task_important"]["claimed"] is False
    assert report["claimed"]["task_important"]["stopped_pollers"] == []
    assert report["claimed"]["task_sum"]["stopped_pollers"] == [row["name"]]
    Poller.fleet.clear_stop_claiming(["pool-plain-0"])
    pending.wait(timeout=30)
    report = json.loads(status_output("--json"))
    assert "task_sum" not in report["claimed"]  # nothing left to run
    assert report["claimed"]["task_important"]["claimed"] is False
    text = status_output()
    assert "task_important  1 to run  NOT CLAIMED: no live poller claims this op" in text
