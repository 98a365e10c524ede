"""What the operator should do for one TaskPool, as pure functions.

Nothing here talks to Kubernetes, the database or kopf, and nothing reads the clock: the
caller passes what it observed and ``now``. That keeps every rule (sizing, the connection
budget, the scale-up step, the scale-down delay, the busy-pod floor, deletion costs, which
pod is stale) testable case by case, and makes a tick replayable from its inputs.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from django_fullctl.states import Lease
from fullctl_operator.drain import PollerRowLike, plan_drain
from fullctl_operator.pool import CONNECTIONS_PER_PROCESS, SUPERVISOR_CONNECTIONS, PoolSpec

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# the ReplicaSet controller removes the pods with the lowest cost first
IDLE_COST = "-100"
BUSY_COST = "100"


class RunningTaskLike(Protocol):
    """What the decisions need from a running task (``django_fullctl.queue.RunningTask``)."""

    @property
    def id(self) -> int: ...

    @property
    def op(self) -> str: ...

    @property
    def lease(self) -> Lease: ...

    @property
    def host(self) -> str: ...

    def last_sign_of_life(self) -> datetime | None: ...


@dataclass(frozen=True)
class Pod:
    """One pod of the pool's Deployment, as far as the decisions care."""

    name: str
    created: datetime | None = None
    terminating: bool = False
    deletion_cost: str | None = None


@dataclass(frozen=True)
class Deployment:
    name: str
    replicas: int  # spec.replicas: the size the operator steers
    current: int  # status.replicas: the pods it has now


@dataclass(frozen=True)
class Observed:
    """One tick's view of the pool. ``counts`` is None when the database could not be read.

    ``elsewhere`` is the database connections held or reserved outside this pool (the
    other pools of the namespace, pollers of no known pool: ``connections_elsewhere``);
    only a pool with a ``connectionBudget`` reads it."""

    deployment: Deployment | None
    pods: tuple[Pod, ...] = ()
    counts: Mapping[str, Mapping[str, int]] | None = None
    running: tuple[RunningTaskLike, ...] = ()
    ops: frozenset[str] = frozenset()
    db_error: str | None = None
    # the live poller rows per host (pod name): busy slots, stop-claiming requests
    pollers: Mapping[str, tuple[PollerRowLike, ...]] = field(default_factory=dict)
    elsewhere: int = 0


@dataclass(frozen=True)
class Scaling:
    target: int
    lower_since: datetime | None
    reason: str  # up | down | steady | waiting | busy


@dataclass(frozen=True)
class StalePod:
    name: str
    tasks: tuple[RunningTaskLike, ...]
    silent_for: float  # seconds since the stalest task's last sign of life


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Plan:
    """Everything one tick decided; the caller carries it out and reports it."""

    decision: str
    conditions: tuple[Condition, ...]
    pending: int | None = None
    running: int | None = None
    desired: int | None = None
    scale_to: int | None = None
    lower_since: datetime | None = None
    annotate: Mapping[str, str] = field(default_factory=dict)
    restart: StalePod | None = None
    busy: int = 0
    stop_claiming: frozenset[str] = frozenset()  # pods to ask to stop claiming
    resume_claiming: frozenset[str] = frozenset()  # pods to let claim again
    drain_since: datetime | None = None  # when the drain in progress began
    connections: int = 0  # what this pool's pods may hold once the plan is carried out


# -- the rules, one function each -------------------------------------------


def demand(counts: Mapping[str, Mapping[str, int]], ops: Iterable[str]) -> tuple[int, int]:
    """Runnable pending and running tasks of the ops this pool may run."""
    pending = running = 0
    for op in ops:
        row = counts.get(op) or {}
        pending += int(row.get("pending", 0))
        running += int(row.get("running", 0))
    return pending, running


def size_for(pending: int, running: int, tasks_per_replica: int, bounds: tuple[int, int]) -> int:
    """ceil((pending + running) / tasksPerReplica), clamped to ``bounds``."""
    low, high = bounds
    wanted = math.ceil((pending + running) / max(1, tasks_per_replica))
    return max(low, min(high, wanted))


# -- the database's connections ------------------------------------------------


class PollerLike(Protocol):
    """What the budget needs of a live poller row (``django_fullctl.pollers.PollerRow``)."""

    @property
    def host(self) -> str: ...

    @property
    def mode(self) -> str: ...

    @property
    def slots(self) -> int: ...


@dataclass(frozen=True)
class PoolUse:
    """The connections another pool's pods hold or are about to hold (``Plan.connections``
    of its last tick), and its pods (whose poller rows that number already covers)."""

    connections: int
    pods: frozenset[str] = frozenset()


def poller_connections(mode: str, slots: int) -> int:
    """The connections one live poller may hold, by its row. ``--processes``: three per
    worker (claims, LISTEN, heartbeat thread) and the supervisor's one. ``--workers``: two
    per worker (the assigned task, the heartbeat thread), the supervisor's and its
    dispatcher's LISTEN connection."""
    if mode == "workers":
        return 2 * slots + 2
    return CONNECTIONS_PER_PROCESS * slots + SUPERVISOR_CONNECTIONS


def connections_elsewhere(
    others: Iterable[PoolUse], pollers: Iterable[PollerLike], own_pods: Iterable[str]
) -> int:
    """Connections outside this pool: what the other pools hold or reserved, plus every
    live poller that belongs to none of them and not to this pool (a fixed-size pool, pods
    of a pool that has not ticked since the operator started)."""
    others = list(others)
    known = set(own_pods).union(*(use.pods for use in others))
    loose = sum(poller_connections(row.mode, row.slots) for row in pollers if row.host not in known)
    return sum(use.connections for use in others) + loose


def budget_cap(spec: PoolSpec, elsewhere: int) -> int | None:
    """The most replicas the connection budget leaves this pool (None: no budget)."""
    if spec.connection_budget is None:
        return None
    room = spec.connection_budget - elsewhere
    return max(0, room // max(1, spec.connections_per_pod))


def scale_up_step(current: int, pods: int | None, percent: int | None) -> int | None:
    """The most replicas one tick may scale up to from ``current``: ``current`` plus
    ``pods``, or plus ``percent`` of ``current``, whichever is more (the HPA's rule), and
    at least one more. None when neither is set: no limit."""
    if pods is None and percent is None:
        return None
    by_pods = current + (pods or 0)
    by_percent = current + math.ceil(current * (percent or 0) / 100)
    return max(current + 1, by_pods, by_percent)


def reserved(spec: PoolSpec, deployment: Deployment, pods: Iterable[Pod], target: int) -> int:
    """The connections this pool's pods may hold: its largest size of the moment (the
    target, the Deployment's replicas, the pods it still has, terminating ones too, which
    hold theirs while they drain) at ``connectionsPerPod`` each."""
    size = max(target, deployment.replicas, deployment.current, len(tuple(pods)))
    return size * spec.connections_per_pod


def busy_pods(
    running: Iterable[RunningTaskLike],
    pods: Iterable[Pod],
    pollers: Mapping[str, Iterable[PollerRowLike]] | None = None,
) -> frozenset[str]:
    """Live pods of the Deployment that run at least one task (any op): their poller row
    reports a busy slot, or a running task names them (a poller without rows)."""
    live = {pod.name for pod in pods if not pod.terminating}
    busy = {task.host for task in running if task.host in live}
    busy |= {
        host for host, rows in (pollers or {}).items()
        if host in live and any(row.busy_slots > 0 for row in rows)
    }
    return frozenset(busy)


def stabilise(
    current: int,
    wanted: int,
    floor: int,
    lower_since: datetime | None,
    now: datetime,
    delay: float,
) -> Scaling:
    """Scale up at once; scale down only once a lower size was wanted for ``delay`` seconds.

    ``lower_since`` is when the lower size was first wanted (carried in the status); any
    tick that wants ``current`` or more resets it. ``floor`` (the busy pods) is never
    undercut: when it holds the size up, the wish stays recorded, so the pool shrinks as
    soon as those pods are idle.
    """
    if wanted > current:
        return Scaling(wanted, None, "up")
    if wanted == current:
        return Scaling(current, None, "steady")
    since = lower_since or now
    if (now - since).total_seconds() < delay:
        return Scaling(current, since, "waiting")
    target = max(wanted, min(floor, current))
    if target == current:
        return Scaling(current, since, "busy")
    return Scaling(target, None if target == wanted else since, "down")


def deletion_costs(pods: Iterable[Pod], remove: frozenset[str]) -> dict[str, str]:
    """The deletion-cost annotations to write: the pods to remove cheaper than the rest,
    so the ReplicaSet controller deletes exactly those.

    Only pods whose annotation differs are returned, so a repeat costs no API call.
    """
    changes = {}
    for pod in pods:
        if pod.terminating:
            continue
        cost = IDLE_COST if pod.name in remove else BUSY_COST
        if pod.deletion_cost != cost:
            changes[pod.name] = cost
    return changes


def stale_pod(
    running: Iterable[RunningTaskLike], pods: Iterable[Pod], now: datetime, threshold: float
) -> StalePod | None:
    """The one pod to restart this tick, if any.

    A pod qualifies when it belongs to the Deployment, is not already terminating, is
    older than ``threshold`` (a young pod may not have sent its first heartbeat), and runs
    a task with no sign of life for ``threshold`` seconds. The stalest one is picked: at
    most one pod per pool per tick, so a database hiccup cannot empty a Deployment at once.
    """
    candidates = {
        pod.name: pod
        for pod in pods
        if not pod.terminating
        and pod.created is not None
        and (now - pod.created).total_seconds() >= threshold
    }
    stale: dict[str, list[tuple[float, RunningTaskLike]]] = {}
    for task in running:
        seen = task.last_sign_of_life()
        if task.host not in candidates or seen is None:
            continue
        silent = (now - seen).total_seconds()
        if silent >= threshold:
            stale.setdefault(task.host, []).append((silent, task))
    if not stale:
        return None
    name = max(stale, key=lambda host: (max(s for s, _ in stale[host]), host))
    entries = sorted(stale[name], key=lambda entry: entry[1].id)
    return StalePod(name, tuple(t for _, t in entries), max(s for s, _ in entries))


# -- one tick ------------------------------------------------------------------


def plan(
    spec: PoolSpec,
    observed: Observed,
    lower_since: datetime | None,
    now: datetime,
    drain_since: datetime | None = None,
) -> Plan:
    """Decide one tick for one pool. Failures hold the size; ``paused`` changes nothing;
    an ``External`` pool is sized by someone else (its stale pods are still restarted)."""
    spec_ok = Condition(
        "SpecValid", not spec.problems, "Invalid" if spec.problems else "Valid",
        "; ".join(spec.problems),
    )
    paused = Condition("Paused", spec.paused, "Paused" if spec.paused else "Active")
    db_ok = Condition(
        "DatabaseReachable", observed.counts is not None,
        "Reachable" if observed.counts is not None else "Unreachable",
        observed.db_error or "",
    )
    deployment = observed.deployment
    found = Condition(
        "DeploymentFound", deployment is not None,
        "Found" if deployment is not None else "NotFound",
        f"deployment {spec.deployment!r}" + ("" if deployment else " does not exist"),
    )
    not_sizing = Condition("ScalingLimited", False, "NotSizing")
    pending = running = None
    if observed.counts is not None:
        pending, running = demand(observed.counts, observed.ops)

    def ready(
        ok: bool, reason: str, message: str, limited: Condition = not_sizing
    ) -> tuple[Condition, ...]:
        return (Condition("Ready", ok, reason, message), spec_ok, found, db_ok, paused, limited)

    if deployment is None:
        message = f"deployment {spec.deployment!r} not found: nothing to size"
        return Plan(message, ready(False, "DeploymentNotFound", message), pending, running)

    current = deployment.replicas
    holding = reserved(spec, deployment, observed.pods, current)
    if pending is None or running is None:
        message = (
            f"holding {current} replica(s): the database could not be read "
            f"({observed.db_error or 'unknown error'}); retrying next tick"
        )
        return Plan(
            message, ready(False, "DatabaseUnreachable", message),
            desired=current, lower_since=lower_since, connections=holding,
        )

    busy = busy_pods(observed.running, observed.pods, observed.pollers)
    demanded = size_for(pending, running, spec.tasks_per_replica, spec.bounds)
    why = _demand_words(pending, running, spec, demanded)
    if spec.paused:
        message = f"paused: leaving {spec.deployment} at {current} replica(s) ({why})"
        return Plan(
            message, ready(False, "Paused", message), pending, running,
            desired=current, busy=len(busy), connections=holding,
        )

    victim = None
    if spec.restart_stale_pods:
        victim = stale_pod(observed.running, observed.pods, now, spec.stale_heartbeat)
    restart_words = ""
    if victim is not None:
        silent = ", ".join(f"task {t.id}" for t in victim.tasks)
        restart_words = (
            f"; restarting pod {victim.name}: {silent} silent for {victim.silent_for:.0f}s"
        )
    found_ok = Condition("Ready", True, "Sizing", "")
    if spec.external:
        message = f"sized externally: {spec.deployment} has {current} replica(s) ({why})"
        external = Condition("ScalingLimited", False, "SizedExternally")
        return Plan(
            message + restart_words, (found_ok, spec_ok, found, db_ok, paused, external),
            pending, running, desired=current, restart=victim, busy=len(busy),
            connections=holding,
        )

    cap = budget_cap(spec, observed.elsewhere)
    wanted = demanded if cap is None else min(demanded, cap)
    if wanted < demanded:
        why += (
            f"; the connection budget allows {wanted} ({spec.connection_budget} with "
            f"{observed.elsewhere} in use elsewhere, {spec.connections_per_pod} per pod)"
        )
    scaling = stabilise(current, wanted, len(busy), lower_since, now, spec.scale_down_delay)
    step = scale_up_step(current, spec.max_scale_up_pods, spec.max_scale_up_percent)
    stepped = scaling.reason == "up" and step is not None and scaling.target > step
    if stepped and step is not None:
        scaling = Scaling(step, None, "up")
    sentence = _sentence(current, scaling, why, len(busy), spec)
    if stepped:
        sentence += f"; at most {step} this tick ({_step_words(spec)})"
    # a scale-in drains first (see ``drain``): the pods to remove are asked to stop
    # claiming, and replicas drop only by those that stopped and run nothing (or that
    # outlived drainTimeoutSeconds)
    # replicas that have no pod (not created yet, or gone) are dropped at once
    fewer = max(0, current - scaling.target)
    podless = min(fewer, max(0, current - sum(not pod.terminating for pod in observed.pods)))
    drain = plan_drain(
        observed.pods, observed.pollers, fewer - podless, drain_since, now,
        spec.drain_timeout, busy,
    )
    annotate: dict[str, str] = {}
    target, kept_since = scaling.target, scaling.lower_since
    if scaling.target < current:
        target = current - podless - len(drain.remove)
        if drain.remove:
            annotate = deletion_costs(observed.pods, drain.remove)
        if drain.waiting_for:
            kept_since = lower_since or now  # still wanted: the delay must not start over
            waiting = ", ".join(sorted(drain.waiting_for))
            sentence += f"; waiting for {waiting} to finish their tasks (asked to stop claiming)"
        if drain.timed_out:
            sentence += f"; drain timeout {spec.drain_timeout:g}s passed: removing them anyway"
    limited = _limited(spec, pending + running, demanded, wanted, stepped, scaling.target)
    return Plan(
        sentence + restart_words, (found_ok, spec_ok, found, db_ok, paused, limited),
        pending, running,
        desired=scaling.target,
        scale_to=target if target != current else None,
        lower_since=kept_since, annotate=annotate, restart=victim, busy=len(busy),
        connections=reserved(spec, deployment, observed.pods, scaling.target),
        stop_claiming=drain.stop, resume_claiming=drain.resume, drain_since=drain.since,
    )


def _limited(
    spec: PoolSpec, tasks: int, demanded: int, wanted: int, stepped: bool, target: int
) -> Condition:
    """``ScalingLimited``: True when something other than the queue set the size, saying
    what (as the HPA's condition of that name does)."""
    if wanted < demanded:
        return Condition(
            "ScalingLimited", True, "ConnectionBudget",
            f"the connection budget ({spec.connection_budget}) allows {wanted} of the "
            f"{demanded} replica(s) the queue wants",
        )
    if stepped:
        return Condition(
            "ScalingLimited", True, "ScaleUpLimit",
            f"scaling up to {target} this tick, {wanted} wanted ({_step_words(spec)})",
        )
    raw = math.ceil(tasks / max(1, spec.tasks_per_replica))
    low, high = spec.bounds
    if raw > high:
        return Condition("ScalingLimited", True, "MaxReplicas",
                         f"the queue wants {raw}, maxReplicas is {high}")
    if raw < low:
        return Condition("ScalingLimited", True, "MinReplicas",
                         f"the queue wants {raw}, minReplicas is {low}")
    return Condition("ScalingLimited", False, "DemandWithinBounds")


def _step_words(spec: PoolSpec) -> str:
    parts = []
    if spec.max_scale_up_pods is not None:
        parts.append(f"maxScaleUpPods {spec.max_scale_up_pods}")
    if spec.max_scale_up_percent is not None:
        parts.append(f"maxScaleUpPercent {spec.max_scale_up_percent}")
    return ", ".join(parts) + " per tick"


def _demand_words(pending: int, running: int, spec: PoolSpec, wanted: int) -> str:
    words = (
        f"{pending} pending + {running} running task(s) at {spec.tasks_per_replica} "
        f"per replica want {wanted}"
    )
    raw = math.ceil((pending + running) / max(1, spec.tasks_per_replica))
    low, high = spec.bounds
    if raw > high:
        words += f" (capped at maxReplicas {high})"
    elif raw < low:
        words += f" (minReplicas {low})"
    return words


def _sentence(current: int, scaling: Scaling, why: str, busy: int, spec: PoolSpec) -> str:
    since = _stamp(scaling.lower_since)
    if scaling.reason == "up":
        return f"scaling up {current} -> {scaling.target}: {why}"
    if scaling.reason == "down":
        held = f"; {busy} busy pod(s) keep it at {scaling.target}" if since else ""
        return f"scaling down {current} -> {scaling.target}: {why}{held}"
    if scaling.reason == "waiting":
        return (
            f"holding {current}: {why} since {since}; scaling down once that has lasted "
            f"{spec.scale_down_delay:g}s"
        )
    if scaling.reason == "busy":
        return f"holding {current}: {why}, but {busy} pod(s) are running tasks"
    return f"steady at {current}: {why}"


def _stamp(moment: datetime | None) -> str:
    return "" if moment is None else format_time(moment)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds, the way the status stores times."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: object) -> datetime | None:
    """Read a status time back; anything unreadable counts as absent."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else None
