"""The operator's decisions as pure functions, with an injected clock: no kopf, no cluster,
no database."""

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from fullctl_operator import decisions
from fullctl_operator.decisions import (
    BUSY_COST,
    IDLE_COST,
    Deployment,
    Observed,
    Pod,
    PoolUse,
    budget_cap,
    busy_pods,
    connections_elsewhere,
    deletion_costs,
    demand,
    plan,
    poller_connections,
    scale_up_step,
    size_for,
    stabilise,
    stale_pod,
)
from fullctl_operator.pool import PoolSpec, connections_for, parse_spec

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


def test_the_pods_to_remove_get_a_lower_deletion_cost_than_the_rest():
    pool_pods = (
        Pod("idle", created=ago(60)),
        Pod("busy", created=ago(60)),
        Pod("already-idle", created=ago(60), deletion_cost=IDLE_COST),
        Pod("was-busy", created=ago(60), deletion_cost=BUSY_COST),
        Pod("going", created=ago(60), terminating=True),
    )
    changes = deletion_costs(pool_pods, frozenset({"idle", "already-idle"}))
    assert changes == {"idle": IDLE_COST, "busy": BUSY_COST}  # the rest is already right
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
             error: str | None = None, found: bool = True, pollers=None) -> Observed:
    return Observed(
        pollers=pollers or {},
        deployment=Deployment("workers", replicas, replicas) if found else None,
        pods=pool_pods if pool_pods is not None else pods(*(f"w-{i}" for i in range(replicas))),
        counts=None if error else (counts or {}),
        running=tuple(running_),
        ops=frozenset(ops),
        db_error=error,
    )


@dataclass(frozen=True)
class PollerRow:
    busy_slots: int = 0
    claiming_paused: bool = False
    claiming_stopped: bool = False

    @property
    def drained(self) -> bool:  # as django_fullctl.pollers.PollerRow says it
        return self.claiming_paused and self.claiming_stopped and self.busy_slots == 0


def poller_row(busy: int = 0, paused: bool = False, stopped: bool = False) -> PollerRow:
    return PollerRow(busy, paused, stopped)


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
    # pods without poller rows have nothing to drain: three leave, the fourth stays
    assert sorted(later.annotate.values()) == sorted([BUSY_COST, IDLE_COST, IDLE_COST, IDLE_COST])


def test_scale_down_stops_at_the_busy_pods_and_marks_them():
    spec = parse_spec({"deployment": "workers", "scaleDownDelaySeconds": 0})
    busy = [running(1, "w-0"), running(2, "w-2")]
    result = plan(spec, observed(4, counts={"task_noop": {"running": 2}}, running_=busy),
                  None, NOW)
    assert result.scale_to == 2 and result.busy == 2
    assert result.annotate == {"w-0": BUSY_COST, "w-1": IDLE_COST, "w-2": BUSY_COST,
                               "w-3": IDLE_COST}


def test_scale_in_waits_for_the_chosen_pods_to_stop_claiming():
    """Pods with poller rows are asked to stop claiming; replicas drop once they did."""
    spec = parse_spec({"deployment": "workers", "scaleDownDelaySeconds": 0})
    rows = {f"w-{i}": (poller_row(),) for i in range(3)}
    first = plan(spec, observed(3, pollers=rows), None, NOW)
    assert first.scale_to is None and len(first.stop_claiming) == 3 - 0  # min 0: all three
    assert first.annotate == {} and first.drain_since == NOW
    assert "asked to stop claiming" in first.decision
    asked = {name: (poller_row(paused=True, stopped=True),) for name in first.stop_claiming}
    second = plan(spec, observed(3, pollers=asked), first.lower_since, NOW, first.drain_since)
    assert second.scale_to == 0 and set(second.annotate.values()) == {IDLE_COST}


def test_a_burst_during_a_drain_lets_the_pods_claim_again():
    spec = parse_spec({"deployment": "workers", "scaleDownDelaySeconds": 0})
    rows = {"w-0": (poller_row(),), "w-1": (poller_row(paused=True, stopped=True),)}
    result = plan(spec, observed(2, counts={"task_noop": {"pending": 8}}, pollers=rows),
                  None, NOW, NOW)
    assert result.resume_claiming == {"w-1"} and result.scale_to is None


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
    assert (spec.processes, spec.connections_per_pod) == (4, connections_for(4))
    assert spec.sizing == "Operator" and not spec.external
    assert spec.connection_budget is None
    assert (spec.max_scale_up_pods, spec.max_scale_up_percent) == (None, None)
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


# -- a replica per worker process -------------------------------------------------


def test_tasks_per_replica_follows_the_pools_processes():
    two = parse_spec({"deployment": "workers", "processes": 2})
    assert (two.processes, two.tasks_per_replica) == (2, 2)
    # 40 tasks on pods of two processes: 20 pods, one task per worker process
    result = plan(parse_spec({"deployment": "workers", "processes": 2, "maxReplicas": 50}),
                  observed(1, counts={"task_noop": {"pending": 40}}), None, NOW)
    assert result.desired == 20
    assert "at 2 per replica" in result.decision
    # a pool that says otherwise keeps its own number
    own = parse_spec({"deployment": "workers", "processes": 2, "tasksPerReplica": 8})
    assert own.tasks_per_replica == 8


def test_new_spec_fields_are_checked():
    spec = parse_spec({
        "deployment": "workers", "processes": 0, "sizing": "KEDA", "connectionBudget": -5,
        "connectionsPerPod": "many", "maxScaleUpPods": 0,
    })
    assert spec.processes == 1 and spec.tasks_per_replica == 1
    assert spec.sizing == "Operator" and spec.connection_budget == 0
    assert spec.connections_per_pod == connections_for(1) and spec.max_scale_up_pods == 1
    assert len(spec.problems) == 5
    assert any("sizing must be one of Operator, External" in p for p in spec.problems)


# -- the connection budget ---------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A live poller row, as far as the budget cares."""

    host: str
    slots: int = 2
    mode: str = "processes"


def test_what_a_pod_costs():
    # --processes N: per worker its claims, its LISTEN and its heartbeat thread; the supervisor
    assert connections_for(2) == poller_connections("processes", 2) == 7
    assert connections_for(1) == 4
    # --workers N: per worker its task and heartbeat thread; the supervisor and its LISTEN
    assert poller_connections("workers", 3) == 8
    assert parse_spec({"deployment": "w", "processes": 3}).connections_per_pod == 10
    assert parse_spec({"deployment": "w", "connectionsPerPod": 5}).connections_per_pod == 5


def test_connections_elsewhere_counts_other_pools_and_pollers_of_no_known_pool():
    others = [PoolUse(21, frozenset({"b-0", "b-1", "b-2"})), PoolUse(7, frozenset())]
    rows = [
        Row("a-0"), Row("a-1"),  # this pool's own pods
        Row("b-0"), Row("b-1"),  # pool b's: its 21 already cover them
        Row("fixed-0", slots=4),  # a pool no TaskPool sizes: 13
        Row("fixed-1", slots=1, mode="workers"),  # 4
    ]
    assert connections_elsewhere(others, rows, {"a-0", "a-1"}) == 21 + 7 + 13 + 4
    assert connections_elsewhere([], [], ()) == 0
    # after an operator restart nothing is remembered: the rows alone still count
    assert connections_elsewhere([], rows, {"a-0", "a-1"}) == 2 * 7 + 13 + 4


@pytest.mark.parametrize(("budget", "elsewhere", "per_pod", "cap"), [
    (None, 500, 7, None),  # no budget: no cap
    (100, 0, 7, 14),  # floor(100 / 7)
    (100, 30, 7, 10),
    (100, 99, 7, 0),
    (100, 150, 7, 0),  # over budget already: no room at all, never negative
    (0, 0, 7, 0),
])
def test_budget_cap(budget, elsewhere, per_pod, cap):
    spec = PoolSpec(deployment="w", connection_budget=budget, connections_per_pod=per_pod)
    assert budget_cap(spec, elsewhere) == cap


def budget_pool(**extra) -> PoolSpec:
    return parse_spec({"deployment": "workers", "processes": 2, "maxReplicas": 50,
                       "connectionBudget": 100, **extra})


def test_the_budget_not_the_demand_sets_the_size():
    # 10,000 tasks want 50 pods of 7 connections; 30 are used elsewhere: (100 - 30) // 7 = 10
    counts = {"task_noop": {"pending": 10_000}}
    result = plan(budget_pool(), replace(observed(1, counts=counts), elsewhere=30), None, NOW)
    assert (result.scale_to, result.desired) == (10, 10)
    assert result.connections == 10 * 7
    limited = condition_of(result, "ScalingLimited")
    assert (limited.status, limited.reason) == (True, "ConnectionBudget")
    assert "allows 10 of the 50 replica(s)" in limited.message
    assert "the connection budget allows 10 (100 with 30 in use elsewhere, 7 per pod)" \
        in result.decision


def test_a_budget_with_room_to_spare_changes_nothing():
    counts = {"task_noop": {"pending": 8}}
    result = plan(budget_pool(), replace(observed(1, counts=counts), elsewhere=30), None, NOW)
    assert result.desired == 4 and result.connections == 28
    limited = condition_of(result, "ScalingLimited")
    assert (limited.status, limited.reason) == (False, "DemandWithinBounds")


def test_over_budget_shrinks_like_any_scale_down():
    # the others grew (or the budget was lowered): 6 pods where 2 fit; after the delay, and
    # never below the busy pods
    counts = {"task_noop": {"pending": 40}}
    busy = [running(1, "w-0"), running(2, "w-1"), running(3, "w-2")]
    seen = replace(observed(6, counts=counts, running_=busy), elsewhere=86)
    first = plan(budget_pool(scaleDownDelaySeconds=60), seen, None, NOW)
    assert first.scale_to is None and first.lower_since == NOW
    later = plan(budget_pool(scaleDownDelaySeconds=60), seen, first.lower_since,
                 NOW + timedelta(seconds=60))
    assert later.scale_to == 3 and later.busy == 3
    assert condition_of(later, "ScalingLimited").reason == "ConnectionBudget"


def test_the_budget_wins_over_min_replicas():
    result = plan(budget_pool(minReplicas=5), replace(observed(0), elsewhere=86), None, NOW)
    assert result.desired == 2 and result.scale_to == 2


def test_pools_without_a_budget_still_report_their_connections():
    spec = parse_spec({"deployment": "workers", "processes": 2})
    result = plan(spec, replace(observed(3), elsewhere=10_000), None, NOW)
    assert result.desired == 3 and result.connections == 21
    # a pod still terminating holds its connections too
    going = pods("w-0", "w-1", "w-2") + (Pod("w-3", created=ago(60), terminating=True),)
    assert plan(spec, observed(3, pool_pods=going), None, NOW).connections == 28
    # a pool whose database read failed keeps what it holds
    assert plan(spec, observed(3, error="down"), None, NOW).connections == 21


# -- the scale-up step --------------------------------------------------------------


@pytest.mark.parametrize(("current", "pods_", "percent", "limit"), [
    (1, None, None, None),  # nothing set: no limit
    (0, 4, 100, 4),  # from zero: the pods allowance
    (1, 4, 100, 5),
    (5, 4, 100, 10),  # doubling allows more than +4
    (10, 4, 100, 20),
    (3, 4, None, 7),
    (10, None, 50, 15),
    (0, None, 50, 1),  # a percentage of zero is zero: one more all the same
    (3, None, 10, 4),  # ceil(0.3) pods, and at least one
])
def test_scale_up_step(current, pods_, percent, limit):
    assert scale_up_step(current, pods_, percent) == limit


def test_a_burst_climbs_step_by_step_like_the_hpa():
    spec = parse_spec({"deployment": "workers", "maxReplicas": 60, "maxScaleUpPods": 4,
                       "maxScaleUpPercent": 100})
    counts = {"task_noop": {"pending": 200}}
    sizes, current = [], 1
    while True:
        result = plan(spec, observed(current, counts=counts), None, NOW)
        if result.scale_to is None:
            break
        sizes.append(result.scale_to)
        current = result.scale_to
    assert sizes == [5, 10, 20, 40, 50]
    first = plan(spec, observed(1, counts=counts), None, NOW)
    assert first.decision.startswith("scaling up 1 -> 5: 200 pending")
    assert "at most 5 this tick (maxScaleUpPods 4, maxScaleUpPercent 100 per tick)" \
        in first.decision
    assert condition_of(first, "ScalingLimited").reason == "ScaleUpLimit"
    last = plan(spec, observed(50, counts=counts), None, NOW)
    assert last.scale_to is None and not condition_of(last, "ScalingLimited").status
    capped = plan(spec, observed(60, counts={"task_noop": {"pending": 400}}), None, NOW)
    limited = condition_of(capped, "ScalingLimited")
    assert (limited.status, limited.reason) == (True, "MaxReplicas")
    assert limited.message == "the queue wants 100, maxReplicas is 60"


def test_the_step_never_slows_a_scale_down():
    spec = parse_spec({"deployment": "workers", "maxScaleUpPods": 1, "scaleDownDelaySeconds": 0})
    assert plan(spec, observed(8), None, NOW).scale_to == 0


# -- a pool sized by someone else (KEDA) ---------------------------------------------


def test_an_externally_sized_pool_is_reported_but_never_scaled():
    spec = parse_spec({"deployment": "workers", "sizing": "External", "processes": 2,
                       "staleHeartbeatSeconds": 60, "scaleDownDelaySeconds": 0})
    stale = [running(1, "w-0", heartbeat=600)]
    up = plan(spec, observed(2, counts={"task_noop": {"pending": 100}}, running_=stale),
              None, NOW)
    down = plan(spec, observed(5), ago(999), NOW)
    for result in (up, down):
        assert result.scale_to is None and result.annotate == {}
        assert result.decision.startswith("sized externally:")
        assert condition_of(result, "ScalingLimited").reason == "SizedExternally"
        assert conditions(result)["Ready"]
    assert (up.desired, up.pending, up.connections) == (2, 100, 14)
    assert down.desired == 5 and down.lower_since is None
    # what KEDA does not do, the operator still does: restart the pod whose task went silent
    assert up.restart is not None and up.restart.name == "w-0"
    assert "restarting pod w-0" in up.decision


def condition_of(result, kind: str):
    return next(c for c in result.conditions if c.type == kind)


def test_replicas_without_pods_are_dropped_at_once():
    spec = parse_spec({"deployment": "workers", "scaleDownDelaySeconds": 0})
    rows = {"w-0": (poller_row(),)}
    result = plan(spec, observed(3, pool_pods=pods("w-0"), pollers=rows), None, NOW)
    # two replicas have no pod; the one pod is asked to stop claiming first
    assert result.scale_to == 1 and result.stop_claiming == {"w-0"}
