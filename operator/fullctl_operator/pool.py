"""A TaskPool's spec, read with its defaults and checked.

The CRD applies the same defaults and refuses most bad values, but the operator does not
rely on that: an object written before a CRD upgrade, or served by an API server that does
not default (kmock in the tests), must still be handled sanely. Problems are collected as
sentences for the ``SpecValid`` condition instead of raising, so one bad pool never stops
the others.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULTS: dict[str, Any] = {
    "minReplicas": 0,
    "maxReplicas": 10,
    "tasksPerReplica": 4,
    "settings": {},
    "ops": None,
    "queues": None,
    "scaleDownDelaySeconds": 300,
    "staleHeartbeatSeconds": 60,
    "restartStalePods": True,
    "paused": False,
}

# the op of a queue of the Django Tasks backend (django_fullctl.tasks_backend.rows.queue_op);
# spelled out here because the spec's parsing is pure: it imports nothing of the app
DJANGO_TASKS_OP_PREFIX = "django.tasks:"


@dataclass(frozen=True)
class PoolSpec:
    """What one TaskPool asks for, every value usable as is."""

    deployment: str
    min_replicas: int = 0
    max_replicas: int = 10
    tasks_per_replica: int = 4
    settings: Mapping[str, Any] = field(default_factory=dict)
    ops: frozenset[str] | None = None
    queues: frozenset[str] | None = None  # Django Tasks queues, already folded into ``ops``
    scale_down_delay: float = 300.0
    stale_heartbeat: float = 60.0
    restart_stale_pods: bool = True
    paused: bool = False
    problems: tuple[str, ...] = ()

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
    return PoolSpec(
        deployment=deployment,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        tasks_per_replica=integer("tasksPerReplica", 1),
        settings=dict(settings),
        ops=ops,
        queues=queues,
        scale_down_delay=float(integer("scaleDownDelaySeconds", 0)),
        stale_heartbeat=float(integer("staleHeartbeatSeconds", 1)),
        restart_stale_pods=flag("restartStalePods"),
        paused=flag("paused"),
        problems=tuple(problems),
    )
