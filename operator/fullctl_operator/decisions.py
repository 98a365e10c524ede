"""What the operator should do for one TaskPool, as pure functions.

Nothing here talks to Kubernetes, the database or kopf, and nothing reads the clock: the
caller passes what it observed and ``now``. That keeps every rule (sizing, the scale-down
delay, the busy-pod floor, deletion costs, which pod is stale) testable case by case, and
makes a tick replayable from its inputs.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from django_fullctl.states import Lease
from fullctl_operator.pool import PoolSpec

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
    """One tick's view of the pool. ``counts`` is None when the database could not be read."""

    deployment: Deployment | None
    pods: tuple[Pod, ...] = ()
    counts: Mapping[str, Mapping[str, int]] | None = None
    running: tuple[RunningTaskLike, ...] = ()
    ops: frozenset[str] = frozenset()
    db_error: str | None = None


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


def busy_pods(running: Iterable[RunningTaskLike], pods: Iterable[Pod]) -> frozenset[str]:
    """Live pods of the Deployment that run at least one task (any op)."""
    live = {pod.name for pod in pods if not pod.terminating}
    return frozenset(task.host for task in running if task.host in live)


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


def deletion_costs(pods: Iterable[Pod], busy: frozenset[str]) -> dict[str, str]:
    """The deletion-cost annotations to write: idle pods cheaper than busy ones.

    Only pods whose annotation differs are returned, so a repeat costs no API call.
    """
    changes = {}
    for pod in pods:
        if pod.terminating:
            continue
        cost = BUSY_COST if pod.name in busy else IDLE_COST
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


def plan(spec: PoolSpec, observed: Observed, lower_since: datetime | None, now: datetime) -> Plan:
    """Decide one tick for one pool. Failures hold the size; ``paused`` changes nothing."""
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
    pending = running = None
    if observed.counts is not None:
        pending, running = demand(observed.counts, observed.ops)

    def ready(ok: bool, reason: str, message: str) -> tuple[Condition, ...]:
        return (Condition("Ready", ok, reason, message), spec_ok, found, db_ok, paused)

    if deployment is None:
        message = f"deployment {spec.deployment!r} not found: nothing to size"
        return Plan(message, ready(False, "DeploymentNotFound", message), pending, running)

    current = deployment.replicas
    if pending is None or running is None:
        message = (
            f"holding {current} replica(s): the database could not be read "
            f"({observed.db_error or 'unknown error'}); retrying next tick"
        )
        return Plan(
            message, ready(False, "DatabaseUnreachable", message),
            desired=current, lower_since=lower_since,
        )

    busy = busy_pods(observed.running, observed.pods)
    wanted = size_for(pending, running, spec.tasks_per_replica, spec.bounds)
    why = _demand_words(pending, running, spec, wanted)
    if spec.paused:
        message = f"paused: leaving {spec.deployment} at {current} replica(s) ({why})"
        return Plan(
            message, ready(False, "Paused", message), pending, running,
            desired=current, busy=len(busy),
        )

    scaling = stabilise(current, wanted, len(busy), lower_since, now, spec.scale_down_delay)
    sentence = _sentence(current, scaling, why, len(busy), spec)
    victim = None
    if spec.restart_stale_pods:
        victim = stale_pod(observed.running, observed.pods, now, spec.stale_heartbeat)
    annotate: dict[str, str] = {}
    if scaling.target < current:
        annotate = deletion_costs(observed.pods, busy)
    if victim is not None:
        silent = ", ".join(f"task {t.id}" for t in victim.tasks)
        sentence += (
            f"; restarting pod {victim.name}: {silent} silent for {victim.silent_for:.0f}s"
        )
    ok = Condition("Ready", True, "Sizing", "")
    return Plan(
        sentence, (ok, spec_ok, found, db_ok, paused), pending, running,
        desired=scaling.target,
        scale_to=scaling.target if scaling.target != current else None,
        lower_since=scaling.lower_since, annotate=annotate, restart=victim, busy=len(busy),
    )


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
