"""The operator's decisions as pure functions, with an injected clock: no kopf, no cluster,
no database."""

from datetime import UTC, datetime, timedelta

import pytest
from fullctl_operator import decisions
from fullctl_operator.decisions import (
    BUSY_COST,
    IDLE_COST,
    Deployment,
    Observed,
    Pod,
    busy_pods,
    deletion_costs,
    demand,
    plan,
    size_for,
    stabilise,
    stale_pod,
)
from fullctl_operator.pool import PoolSpec, parse_spec

from django_fullctl.queue import RunningTask

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def running(task_id: int, host: str, *, heartbeat: float | None = 1.0, started: float = 600.0,
            op: str = "task_noop") -> RunningTask:
    """A running task on ``host`` whose heartbeat is ``heartbeat`` seconds old."""
    return RunningTask(
        id=task_id, op=op, attempt=1, max_attempts=2, queue_id=f"{host}:42",
        started=ago(started), heartbeat=None if heartbeat is None else ago(heartbeat),
    )


def pods(*names: str, age: float = 3600.0) -> tuple[Pod, ...]:
    return tuple(Pod(name, created=ago(age)) for name in names)


# -- sizing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pending", "running_", "per", "bounds", "expected"),
    [
        (0, 0, 4, (0, 10), 0),  # nothing to do: scale to zero
        (0, 0, 4, (2, 10), 2),  # ... but never below minReplicas
        (1, 0, 4, (0, 10), 1),  # one task needs a replica
        (4, 0, 4, (0, 10), 1),
        (5, 0, 4, (0, 10), 2),  # ceil
        (3, 2, 4, (0, 10), 2),  # running tasks count too
        (200, 0, 4, (0, 10), 10),  # capped at maxReplicas
        (200, 0, 4, (0, 100), 50),
        (7, 0, 1, (0, 10), 7),
    ],
)
def test_size_for(pending, running_, per, bounds, expected):
    assert size_for(pending, running_, per, bounds) == expected


def test_demand_counts_only_the_pools_ops():
    counts = {
        "task_noop": {"pending": 5, "running": 1},
        "task_important": {"pending": 40, "running": 0},
        "task_sum": {"running": 2},
    }
    assert demand(counts, {"task_noop", "task_sum"}) == (5, 3)
    assert demand(counts, {"task_unknown"}) == (0, 0)
    assert demand({}, {"task_noop"}) == (0, 0)


def test_busy_pods_are_live_pods_of_the_deployment_running_a_task():
    pool_pods = pods("w-1", "w-2") + (Pod("w-3", created=ago(3600), terminating=True),)
    tasks = [running(1, "w-1"), running(2, "w-1"), running(3, "w-3"), running(4, "elsewhere")]
    assert busy_pods(tasks, pool_pods) == {"w-1"}


# -- stabilisation -----------------------------------------------------------------


def test_scale_up_is_immediate():
    result = stabilise(current=2, wanted=5, floor=0, lower_since=ago(100), now=NOW, delay=300)
    assert (result.target, result.lower_since, result.reason) == (5, None, "up")


def test_steady_forgets_an_earlier_wish_to_shrink():
    result = stabilise(current=3, wanted=3, floor=0, lower_since=ago(100), now=NOW, delay=300)
    assert (result.target, result.lower_since, result.reason) == (3, None, "steady")


def test_scale_down_waits_for_the_delay():
    first = stabilise(current=5, wanted=1, floor=0, lower_since=None, now=NOW, delay=300)
    assert (first.target, first.lower_since, first.reason) == (5, NOW, "waiting")
    later = NOW + timedelta(seconds=299)
    held = stabilise(current=5, wanted=1, floor=0, lower_since=first.lower_since, now=later,
                     delay=300)
    assert (held.target, held.lower_since) == (5, NOW)
    done = NOW + timedelta(seconds=300)
    shrunk = stabilise(current=5, wanted=1, floor=0, lower_since=first.lower_since, now=done,
                       delay=300)
    assert (shrunk.target, shrunk.lower_since, shrunk.reason) == (1, None, "down")


def test_rising_demand_resets_the_delay():
    waiting = stabilise(current=5, wanted=1, floor=0, lower_since=ago(200), now=NOW, delay=300)
    assert waiting.lower_since == ago(200)
    back = stabilise(current=5, wanted=5, floor=0, lower_since=waiting.lower_since,
                     now=NOW + timedelta(seconds=10), delay=300)
    assert back.lower_since is None
    again = stabilise(current=5, wanted=1, floor=0, lower_since=back.lower_since,
                      now=NOW + timedelta(seconds=200), delay=300)
    assert (again.target, again.reason) == (5, "waiting")  # the clock started over


def test_zero_delay_scales_down_at_once():
    result = stabilise(current=4, wanted=0, floor=0, lower_since=None, now=NOW, delay=0)
    assert (result.target, result.reason) == (0, "down")


def test_busy_pods_are_a_floor_and_the_wish_is_kept():
    held = stabilise(current=3, wanted=0, floor=3, lower_since=ago(400), now=NOW, delay=300)
    assert (held.target, held.lower_since, held.reason) == (3, ago(400), "busy")
    partial = stabilise(current=5, wanted=1, floor=2, lower_since=ago(400), now=NOW, delay=300)
    assert (partial.target, partial.lower_since, partial.reason) == (2, ago(400), "down")
    # the floor never lifts the size above the current one
    capped = stabilise(current=2, wanted=0, floor=7, lower_since=ago(400), now=NOW, delay=300)
    assert capped.target == 2


# -- deletion costs ----------------------------------------------------------------


def test_idle_pods_get_a_lower_deletion_cost_than_busy_ones():
    pool_pods = (
        Pod("idle", created=ago(60)),
        Pod("busy", created=ago(60)),
        Pod("already-idle", created=ago(60), deletion_cost=IDLE_COST),
        Pod("was-busy", created=ago(60), deletion_cost=BUSY_COST),
        Pod("going", created=ago(60), terminating=True),
    )
    changes = deletion_costs(pool_pods, frozenset({"busy"}))
    assert changes == {"idle": IDLE_COST, "busy": BUSY_COST, "was-busy": IDLE_COST}
    assert int(IDLE_COST) < int(BUSY_COST)


# -- stale pods --------------------------------------------------------------------


def test_a_pod_whose_task_heartbeat_is_stale_is_picked():
    victim = stale_pod([running(7, "w-1", heartbeat=90)], pods("w-1", "w-2"), NOW, 60)
    assert victim is not None
    assert victim.name == "w-1" and [t.id for t in victim.tasks] == [7]
    assert victim.silent_for == pytest.approx(90)


def test_fresh_heartbeats_leave_pods_alone():
    assert stale_pod([running(7, "w-1", heartbeat=5)], pods("w-1"), NOW, 60) is None


def test_a_task_without_heartbeat_is_judged_by_its_start():
    old = running(7, "w-1", heartbeat=None, started=120)
    new = running(8, "w-2", heartbeat=None, started=10)
    victim = stale_pod([old, new], pods("w-1", "w-2"), NOW, 60)
    assert victim is not None and victim.name == "w-1"


def test_terminating_pods_are_never_picked():
    terminating = (Pod("w-1", created=ago(3600), terminating=True),)
    assert stale_pod([running(7, "w-1", heartbeat=600)], terminating, NOW, 60) is None


def test_young_pods_are_never_picked():
    young = pods("w-1", age=30)
    assert stale_pod([running(7, "w-1", heartbeat=600)], young, NOW, 60) is None
    unknown_age = (Pod("w-1", created=None),)
    assert stale_pod([running(7, "w-1", heartbeat=600)], unknown_age, NOW, 60) is None


def test_pods_of_other_deployments_are_ignored():
    assert stale_pod([running(7, "other-1", heartbeat=600)], pods("w-1"), NOW, 60) is None


def test_one_pod_per_tick_the_stalest_first_with_all_its_stale_tasks():
    tasks = [
        running(1, "w-1", heartbeat=100),
        running(2, "w-2", heartbeat=500),
        running(3, "w-2", heartbeat=70),
        running(4, "w-2", heartbeat=1),  # fresh: this worker process is alive
    ]
    victim = stale_pod(tasks, pods("w-1", "w-2"), NOW, 60)
    assert victim is not None
    assert victim.name == "w-2"
    assert [t.id for t in victim.tasks] == [2, 3]


# -- one tick ---------------------------------------------------------------------


def observed(replicas: int = 2, *, counts=None, running_=(), pool_pods=None, ops=("task_noop",),
             error: str | None = None, found: bool = True) -> Observed:
    return Observed(
        deployment=Deployment("workers", replicas, replicas) if found else None,
        pods=pool_pods if pool_pods is not None else pods(*(f"w-{i}" for i in range(replicas))),
        counts=None if error else (counts or {}),
        running=tuple(running_),
        ops=frozenset(ops),
        db_error=error,
    )


def conditions(result) -> dict[str, bool]:
    return {c.type: c.status for c in result.conditions}


def test_a_burst_scales_up_in_one_tick():
    spec = parse_spec({"deployment": "workers", "maxReplicas": 60})
    result = plan(spec, observed(1, counts={"task_noop": {"pending": 200}}), None, NOW)
    assert (result.scale_to, result.desired, result.pending) == (50, 50, 200)
    assert result.decision.startswith("scaling up 1 -> 50: 200 pending")
    assert result.annotate == {} and result.restart is None
    assert all(conditions(result)[k] for k in ("Ready", "SpecValid", "DatabaseReachable"))


def test_no_patch_when_the_size_is_right():
    spec = parse_spec({"deployment": "workers"})
    result = plan(spec, observed(2, counts={"task_noop": {"pending": 8}}), None, NOW)
    assert result.scale_to is None and result.desired == 2
    assert result.decision.startswith("steady at 2")


def test_a_database_error_holds_the_size():
    spec = parse_spec({"deployment": "workers", "scaleDownDelaySeconds": 0})
    result = plan(spec, observed(3, error="OperationalError: connection refused"), ago(999), NOW)
    assert result.scale_to is None and result.desired == 3
    assert result.pending is None and result.running is None
    assert result.lower_since == ago(999)  # the wish is neither started nor dropped
    assert result.annotate == {} and result.restart is None
    assert not conditions(result)["DatabaseReachable"] and not conditions(result)["Ready"]
    assert "database could not be read" in result.decision
    assert "connection refused" in result.decision


def test_zero_tasks_scale_to_min_after_the_delay():
    spec = parse_spec({"deployment": "workers", "minReplicas": 1, "scaleDownDelaySeconds": 60})
    first = plan(spec, observed(4), None, NOW)
    assert first.scale_to is None and first.lower_since == NOW
    assert "scaling down once that has lasted 60s" in first.decision
    later = plan(spec, observed(4), first.lower_since, NOW + timedelta(seconds=61))
    assert later.scale_to == 1
    assert later.annotate == {f"w-{i}": IDLE_COST for i in range(4)}


def test_scale_down_stops_at_the_busy_pods_and_marks_them():
    spec = parse_spec({"deployment": "workers", "scaleDownDelaySeconds": 0})
    busy = [running(1, "w-0"), running(2, "w-2")]
    result = plan(spec, observed(4, counts={"task_noop": {"running": 2}}, running_=busy),
                  None, NOW)
    assert result.scale_to == 2 and result.busy == 2
    assert result.annotate == {"w-0": BUSY_COST, "w-1": IDLE_COST, "w-2": BUSY_COST,
                               "w-3": IDLE_COST}


def test_min_above_max_is_reported_and_clamped_to_max():
    spec = parse_spec({"deployment": "workers", "minReplicas": 5, "maxReplicas": 3})
    result = plan(spec, observed(1), None, NOW)
    assert result.scale_to == 3
    assert not conditions(result)["SpecValid"]
    message = next(c.message for c in result.conditions if c.type == "SpecValid")
    assert "minReplicas 5 is above maxReplicas 3" in message


def test_a_missing_deployment_is_a_condition():
    spec = parse_spec({"deployment": "workers"})
    result = plan(spec, observed(found=False, counts={"task_noop": {"pending": 9}}), None, NOW)
    assert result.scale_to is None and result.restart is None
    assert not conditions(result)["DeploymentFound"]
    assert result.pending == 9  # still reported
    assert "not found" in result.decision


def test_paused_changes_nothing():
    spec = parse_spec({"deployment": "workers", "paused": True, "staleHeartbeatSeconds": 60,
                       "scaleDownDelaySeconds": 0})
    stale = [running(1, "w-0", heartbeat=600)]
    up = plan(spec, observed(1, counts={"task_noop": {"pending": 100}}, running_=stale), None, NOW)
    down = plan(spec, observed(5), ago(999), NOW)
    for result in (up, down):
        assert result.scale_to is None and result.annotate == {} and result.restart is None
        assert conditions(result)["Paused"] and not conditions(result)["Ready"]
        assert result.decision.startswith("paused:")


def test_stale_pod_restart_is_planned_unless_disabled():
    stale = [running(1, "w-0", heartbeat=600)]
    counts = {"task_noop": {"running": 1}}
    spec = parse_spec({"deployment": "workers"})
    result = plan(spec, observed(1, counts=counts, running_=stale), None, NOW)
    assert result.restart is not None and result.restart.name == "w-0"
    assert "restarting pod w-0" in result.decision
    off = parse_spec({"deployment": "workers", "restartStalePods": False})
    assert plan(off, observed(1, counts=counts, running_=stale), None, NOW).restart is None


def test_unqualified_ops_do_not_count():
    spec = parse_spec({"deployment": "workers"})
    counts = {"task_important": {"pending": 40}, "task_noop": {"pending": 4}}
    result = plan(spec, observed(1, counts=counts, ops=("task_noop",)), None, NOW)
    assert result.pending == 4 and result.desired == 1


# -- the spec ---------------------------------------------------------------------


def test_spec_defaults_match_the_crd():
    spec = parse_spec({"deployment": "workers"})
    assert spec == PoolSpec(deployment="workers")
    assert (spec.min_replicas, spec.max_replicas, spec.tasks_per_replica) == (0, 10, 4)
    assert (spec.scale_down_delay, spec.stale_heartbeat) == (300, 60)
    assert spec.restart_stale_pods and not spec.paused and spec.ops is None


def test_bad_spec_values_are_replaced_and_reported():
    spec = parse_spec({
        "minReplicas": -1, "tasksPerReplica": 0, "maxReplicas": "many", "ops": "task_noop",
        "paused": "yes", "settings": [1],
    })
    assert spec.deployment == "" and spec.min_replicas == 0 and spec.tasks_per_replica == 1
    assert spec.max_replicas == 10 and spec.ops is None and spec.paused is False
    assert len(spec.problems) == 7


def test_time_round_trip():
    assert decisions.parse_time(decisions.format_time(NOW)) == NOW
    assert decisions.parse_time("not a time") is None
    assert decisions.parse_time(None) is None
