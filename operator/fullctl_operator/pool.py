"""A TaskPool's spec, read with its defaults and checked.

The CRD applies the same defaults and refuses most bad values, but the operator does not
rely on that: an object written before a CRD upgrade, or served by an API server that does
not default (kmock in the tests), must still be handled sanely. Problems are collected as
sentences for the ``SpecValid`` condition instead of raising, so one bad pool never stops
the others.

The pods' worker processes (``processes``, the pods' ``--processes``) are the pool's unit:
a replica is sized for that many tasks unless ``tasksPerReplica`` says otherwise, and it
costs ``connectionsPerPod`` database connections (unset: what a ``--processes`` poller
opens, see ``connections_for``).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# None: no default of its own (tasksPerReplica follows processes; the rest is off when unset)
DEFAULTS: dict[str, Any] = {
    "minReplicas": 0,
    "maxReplicas": 10,
    "processes": 4,
    "tasksPerReplica": None,
    "settings": {},
    "ops": None,
    "queues": None,
    "scaleDownDelaySeconds": 300,
    "drainTimeoutSeconds": 600,
    "staleHeartbeatSeconds": 60,
    "restartStalePods": True,
    "paused": False,
    "sizing": "Operator",
    "connectionBudget": None,
    "connectionsPerPod": None,
    "maxScaleUpPods": None,
    "maxScaleUpPercent": None,
}

# who sets the Deployment's replicas: the operator, or something else (KEDA's HPA) while the
# operator still reports the pool and restarts its stale pods
SIZINGS = ("Operator", "External")

# the connections one ``fullctl_poll_tasks --processes N`` pod holds at its busiest, counted
# from the poller's code: each worker process has its own connection for claims and
# completions, its own LISTEN connection, and its heartbeat thread's connection (Django's
# connections are per thread); the supervisor has one (its row, maintenance, rescues)
CONNECTIONS_PER_PROCESS = 3
SUPERVISOR_CONNECTIONS = 1


def connections_for(processes: int) -> int:
    """The connections a pod of ``processes`` self-claiming worker processes may hold."""
    return CONNECTIONS_PER_PROCESS * processes + SUPERVISOR_CONNECTIONS

# the op of a queue of the Django Tasks backend (django_fullctl.tasks_backend.rows.queue_op);
# spelled out here because the spec's parsing is pure: it imports nothing of the app
DJANGO_TASKS_OP_PREFIX = "django.tasks:"


@dataclass(frozen=True)
class PoolSpec:
    """What one TaskPool asks for, every value usable as is."""

    deployment: str
    min_replicas: int = 0
    max_replicas: int = 10
    processes: int = 4
    tasks_per_replica: int = 4  # processes, unless the TaskPool sets it
    settings: Mapping[str, Any] = field(default_factory=dict)
    ops: frozenset[str] | None = None
    queues: frozenset[str] | None = None  # Django Tasks queues, already folded into ``ops``
    scale_down_delay: float = 300.0
    drain_timeout: float = 600.0  # how long a pod being removed may take to finish its tasks
    stale_heartbeat: float = 60.0
    restart_stale_pods: bool = True
    paused: bool = False
    sizing: str = "Operator"
    connection_budget: int | None = None  # connections all pools of the namespace may hold
    connections_per_pod: int = 13  # connections_for(processes), unless the TaskPool sets it
    max_scale_up_pods: int | None = None  # None with max_scale_up_percent None: no limit
    max_scale_up_percent: int | None = None
    problems: tuple[str, ...] = ()

    @property
    def external(self) -> bool:
        """Another autoscaler (KEDA) sets the replicas: the operator only reports and
        restarts stale pods."""
        return self.sizing == "External"

    @property
    def bounds(self) -> tuple[int, int]:
        """The replica range to clamp to.

        With min > max the size is pinned at max: max is the cost cap a user relies on,
        and max is as close to min as that cap allows.
        """
        return min(self.min_replicas, self.max_replicas), self.max_replicas


def parse_spec(spec: Mapping[str, Any] | None) -> PoolSpec:
    """Read ``spec`` with defaults; impossible values are replaced and reported."""
    spec = spec or {}
    problems: list[str] = []

    def integer(name: str, minimum: int) -> int:
        value = spec.get(name, DEFAULTS[name])
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{name} must be an integer, got {value!r}: using {DEFAULTS[name]}")
            return DEFAULTS[name]
        if value < minimum:
            problems.append(f"{name} must be at least {minimum}, got {value}: using {minimum}")
            return minimum
        return value

    def optional(name: str, minimum: int) -> int | None:
        value = spec.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{name} must be an integer, got {value!r}: ignored")
            return None
        if value < minimum:
            problems.append(f"{name} must be at least {minimum}, got {value}: using {minimum}")
            return minimum
        return value

    def flag(name: str) -> bool:
        value = spec.get(name, DEFAULTS[name])
        if not isinstance(value, bool):
            problems.append(f"{name} must be true or false, got {value!r}")
            return DEFAULTS[name]
        return value

    deployment = spec.get("deployment")
    if not isinstance(deployment, str) or not deployment:
        problems.append("deployment (the poller Deployment's name) is required")
        deployment = ""
    min_replicas = integer("minReplicas", 0)
    max_replicas = integer("maxReplicas", 0)
    if min_replicas > max_replicas:
        problems.append(
            f"minReplicas {min_replicas} is above maxReplicas {max_replicas}: "
            f"holding the size at maxReplicas"
        )
    settings = spec.get("settings") or {}
    if not isinstance(settings, Mapping):
        problems.append(f"settings must be an object, got {type(settings).__name__}")
        settings = {}
    ops = spec.get("ops")
    if ops is not None:
        if isinstance(ops, list) and all(isinstance(op, str) for op in ops):
            ops = frozenset(ops)
        else:
            problems.append(f"ops must be a list of strings, got {ops!r}: using all ops")
            ops = None
    queues = spec.get("queues")
    if queues is not None:
        if isinstance(queues, list) and all(isinstance(q, str) and q for q in queues):
            queues = frozenset(queues)
            # shorthand for the ops of the Django Tasks backend's queues: with ``ops``
            # too, the pool works on both
            ops = (ops or frozenset()) | {f"{DJANGO_TASKS_OP_PREFIX}{q}" for q in queues}
        else:
            problems.append(f"queues must be a list of queue names, got {queues!r}: ignored")
            queues = None
    processes = integer("processes", 1)
    tasks_per_replica = optional("tasksPerReplica", 1)
    connections_per_pod = optional("connectionsPerPod", 1)
    sizing = spec.get("sizing", DEFAULTS["sizing"])
    if sizing not in SIZINGS:
        problems.append(f"sizing must be one of {', '.join(SIZINGS)}, got {sizing!r}: "
                        f"using {DEFAULTS['sizing']}")
        sizing = DEFAULTS["sizing"]
    return PoolSpec(
        deployment=deployment,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        processes=processes,
        tasks_per_replica=processes if tasks_per_replica is None else tasks_per_replica,
        settings=dict(settings),
        ops=ops,
        queues=queues,
        scale_down_delay=float(integer("scaleDownDelaySeconds", 0)),
        drain_timeout=float(integer("drainTimeoutSeconds", 0)),
        stale_heartbeat=float(integer("staleHeartbeatSeconds", 1)),
        restart_stale_pods=flag("restartStalePods"),
        paused=flag("paused"),
        sizing=sizing,
        connection_budget=optional("connectionBudget", 0),
        connections_per_pod=(
            connections_for(processes) if connections_per_pod is None else connections_per_pod
        ),
        max_scale_up_pods=optional("maxScaleUpPods", 1),
        max_scale_up_percent=optional("maxScaleUpPercent", 1),
        problems=tuple(problems),
    )
