"""Reading the world for a tick: the queue (through ``django_fullctl.queue``) and the cluster.

The database is read once for all pools: one grouped ``counts_by_op()``, one
``running_tasks()`` and one read of the live poller rows (``Poller.fleet.live()``) per
snapshot, shared by every pool whose tick falls within the snapshot's lifetime (a little
under one interval). The ORM is synchronous, so it runs in a worker thread with Django's
connection hygiene around it.

Busy pods come from the poller rows (a pod's poller's host is the pod's name): a live row
that reports a busy slot. A running task still names its pod through ``queue_id``, for
the stale-pod check, and marks it busy too (a poller from before the rows).
"""

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.db import DatabaseError, close_old_connections

from django_fullctl import conf, registry
from django_fullctl.db import describe_error
from django_fullctl.models import Poller, Task
from django_fullctl.pollers import PollerRow
from django_fullctl.queue import RunningTask
from fullctl_operator import kube
from fullctl_operator.decisions import DELETION_COST, Deployment, Pod, parse_time
from fullctl_operator.metrics import METRICS
from fullctl_operator.pool import PoolSpec

T = TypeVar("T")


# -- the database ---------------------------------------------------------------


async def in_db_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ORM work in a thread, dropping connections that broke or outlived CONN_MAX_AGE."""

    def call() -> T:
        close_old_connections()
        try:
            return fn(*args)
        finally:
            close_old_connections()

    return await asyncio.to_thread(call)


@dataclass(frozen=True)
class QueueSnapshot:
    """The queue at one moment; ``counts`` is None (and ``error`` set) when unreadable.

    ``running`` are the running tasks and ``pollers`` the live poller rows (busy pods,
    and the drain before scale-in, read them per host)."""

    counts: Mapping[str, Mapping[str, int]] | None
    running: tuple[RunningTask, ...]
    error: str | None
    taken: float  # time.monotonic()
    pollers: tuple[PollerRow, ...] = ()

    @property
    def age(self) -> float:
        return time.monotonic() - self.taken

    def pollers_by_host(self) -> dict[str, tuple[PollerRow, ...]]:
        found: dict[str, tuple[PollerRow, ...]] = {}
        for row in self.pollers:
            found[row.host] = (*found.get(row.host, ()), row)
        return found


def read_queue(gauges: bool = False) -> QueueSnapshot:
    """The three queries of a tick (five with ``gauges``: the metrics' counts by status and
    oldest due times). A database error is a result, not an exception: without the poller
    rows the busy pods are unknown, so the tick holds the size as for any other error."""
    try:
        counts = Task.queue.counts_by_op()
        running = tuple(Task.queue.running_tasks())
        pollers = tuple(Poller.fleet.live())
        if gauges:
            by_status = Task.queue.active_counts_by_op()
            oldest = Task.queue.oldest_pending_by_op()
    except DatabaseError as exc:
        error = f"{type(exc).__name__}: {describe_error(exc)}"
        return QueueSnapshot(None, (), error[:300], time.monotonic())
    if gauges:
        record_queue_metrics(by_status, oldest, running)
    return QueueSnapshot(counts, running, None, time.monotonic(), pollers=pollers)


def record_queue_metrics(
    by_status: Mapping[str, Mapping[str, int]], oldest: Mapping[str, datetime],
    running: tuple[RunningTask, ...],
) -> None:
    """The queue gauges of ``metrics``; stale: running tasks silent for the orphan timeout."""
    now = now_utc()
    limit = conf.settings().orphaned_heartbeat_timeout
    stale: dict[str, int] = {}
    for task in running:
        seen = task.last_sign_of_life()
        if seen is not None and (now - seen).total_seconds() > limit:
            stale[task.op] = stale.get(task.op, 0) + 1
    METRICS.record_queue(by_status, oldest, stale, now)


class QueueCache:
    """Share one snapshot between the pools' timers; concurrent ticks wait for one query."""

    def __init__(self, max_age: float, gauges: bool = False):
        self.max_age = max_age
        self.gauges = gauges  # also read the metrics' queue gauges
        self._snapshot: QueueSnapshot | None = None
        self._stale = True
        self._lock = asyncio.Lock()

    async def get(self) -> QueueSnapshot:
        async with self._lock:
            snapshot = self._snapshot
            if self._stale or snapshot is None or snapshot.age >= self.max_age:
                args = (True,) if self.gauges else ()
                snapshot = self._snapshot = await in_db_thread(read_queue, *args)
                self._stale = False
            return snapshot

    @property
    def last(self) -> QueueSnapshot | None:
        return self._snapshot

    def invalidate(self) -> None:
        """Read afresh next time (after the operator itself changed tasks, e.g. a rescue)."""
        self._stale = True


def pool_ops(pool: PoolSpec) -> frozenset[str]:
    """Ops the pool's pods could claim: qualifiers under its settings, narrowed by ``ops``."""
    ops = frozenset(registry.qualified_ops(pool.settings))
    return ops & pool.ops if pool.ops is not None else ops


# -- the cluster ---------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentView:
    deployment: Deployment
    selector: Mapping[str, Any]


async def read_deployment(
    cluster: kube.Cluster, namespace: str, name: str
) -> DeploymentView | None:
    raw = await cluster.get_deployment(namespace, name)
    if raw is None or raw.get("metadata", {}).get("deletionTimestamp"):
        return None
    spec = raw.get("spec") or {}
    replicas = spec.get("replicas")
    replicas = 1 if replicas is None else int(replicas)  # the API server's default
    current = (raw.get("status") or {}).get("replicas")
    return DeploymentView(
        Deployment(name, replicas, replicas if current is None else int(current)),
        spec.get("selector") or {},
    )


async def read_pods(
    cluster: kube.Cluster, namespace: str, selector: Mapping[str, Any]
) -> tuple[Pod, ...]:
    """The Deployment's pods. The selector is applied here too: a server (or kmock) that
    ignores ``labelSelector`` must not hand another Deployment's pods to the decisions."""
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return ()  # an empty selector would select every pod of the namespace
    items = await cluster.list_pods(namespace, selector_query(selector))
    pods = []
    for item in items:
        meta = item.get("metadata") or {}
        if not selector_matches(meta.get("labels") or {}, selector):
            continue
        pods.append(Pod(
            name=meta.get("name", ""),
            created=parse_time(meta.get("creationTimestamp")),
            terminating=bool(meta.get("deletionTimestamp")),
            deletion_cost=(meta.get("annotations") or {}).get(DELETION_COST),
        ))
    return tuple(sorted(pods, key=lambda pod: pod.name))


def selector_matches(labels: Mapping[str, str], selector: Mapping[str, Any]) -> bool:
    """Kubernetes label selector semantics: matchLabels and matchExpressions, all must hold."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def selector_query(selector: Mapping[str, Any]) -> str:
    """The ``labelSelector`` query string for the same selector."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = ",".join(expression.get("values") or [])
        parts.append({
            "In": f"{key} in ({values})",
            "NotIn": f"{key} notin ({values})",
            "Exists": f"{key}",
            "DoesNotExist": f"!{key}",
        }.get(operator, ""))
    return ",".join(p for p in parts if p)


def now_utc() -> datetime:
    return datetime.now(UTC)
