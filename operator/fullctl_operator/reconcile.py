"""One tick for one TaskPool: observe, decide (``decisions.plan``), act, report.

Level-triggered: nothing is remembered between ticks except what the status holds (and a
copy of the last status written, in case kopf's view of the object lags behind our own
patch), so a restarted operator picks up where the last one left off.

The connection budget spans the pools of a namespace, while each pool has its own timer:
every tick records the connections its pool may hold (``PoolUse``) in the operator's
memory, and a pool with a budget counts the others' records plus every live poller row
that none of them covers (so a restarted operator, whose memory is empty, still counts
the pods that are up). Reading the others and recording this pool's own happen with no
``await`` in between, so two pools' ticks can never both spend the same room.
"""

import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import kopf
from django.db import DatabaseError

from django_fullctl.models import Poller, Task
from fullctl_operator import kube, observe
from fullctl_operator.decisions import (
    DELETION_COST,
    Observed,
    PoolUse,
    StalePod,
    connections_elsewhere,
    plan,
)
from fullctl_operator.metrics import METRICS
from fullctl_operator.pool import parse_spec
from fullctl_operator.status import build_status, draining_since, lower_since, status_patch

log = logging.getLogger("fullctl_operator")


@dataclass
class OperatorState:
    """Per-operator memory (kept in kopf's ``memo``): the shared queue snapshot, the API
    client and the last status each pool was given."""

    snapshots: observe.QueueCache
    cluster: kube.Cluster
    statuses: MutableMapping[str, dict[str, Any]] = field(default_factory=dict)
    # per pool (uid): its namespace, the connections its last tick left it, and when
    uses: MutableMapping[str, tuple[str, PoolUse, datetime]] = field(default_factory=dict)

    def uses_besides(self, uid: str, namespace: str, now: datetime) -> list[PoolUse]:
        """The other pools' records in ``namespace``. A record no tick renewed for three
        snapshot lifetimes (about three intervals) belongs to a deleted TaskPool and is
        dropped; the pods of a pool that still exists are counted by their poller rows."""
        ttl = timedelta(seconds=max(3 * self.snapshots.max_age, 1.0))
        for other, (_, _, seen) in list(self.uses.items()):
            if now - seen > ttl:
                del self.uses[other]
        return [use for other, (ns, use, _) in self.uses.items()
                if other != uid and ns == namespace]


async def tick(
    *,
    state: OperatorState,
    body: kopf.Body,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    namespace: str,
    uid: str,
    generation: int | None,
    patch: Any,
    now: datetime,
    logger: logging.Logger | logging.LoggerAdapter = log,
) -> None:
    name = str(body.get("metadata", {}).get("name", ""))
    with METRICS.observing_tick(name):
        pool = parse_spec(spec)
        previous = {**status, **state.statuses.get(uid, {})}

        cluster = state.cluster
        view = None
        if pool.deployment:
            view = await observe.read_deployment(cluster, namespace, pool.deployment)
        pods = await observe.read_pods(cluster, namespace, view.selector) if view else ()
        snapshot = await state.snapshots.get()
        # from here to the record below: no await (see the module's docstring)
        own_pods = frozenset(pod.name for pod in pods)
        observed = Observed(
            deployment=view.deployment if view else None,
            pods=pods,
            counts=snapshot.counts,
            running=snapshot.running,
            ops=observe.pool_ops(pool),
            db_error=snapshot.error,
            pollers=snapshot.pollers_by_host(),
            elsewhere=connections_elsewhere(
                state.uses_besides(uid, namespace, now), snapshot.pollers, own_pods
            ),
        )
        decided = plan(pool, observed, lower_since(previous), now, draining_since(previous))
        state.uses[uid] = (namespace, PoolUse(decided.connections, own_pods), now)
        if snapshot.error:
            METRICS.record_error(name, "database")
        # one line per decision (kopf's logger names the pool); a repeated one only at debug
        changed = decided.decision != previous.get("lastDecision") or decided.scale_to is not None
        logger.log(logging.INFO if changed else logging.DEBUG, "%s", decided.decision)

        try:
            if decided.stop_claiming:
                await observe.in_db_thread(
                    Poller.fleet.request_stop_claiming, decided.stop_claiming
                )
            if decided.resume_claiming:
                await observe.in_db_thread(
                    Poller.fleet.clear_stop_claiming, decided.resume_claiming
                )
        except DatabaseError as exc:  # asked again next tick; nothing is removed meanwhile
            logger.warning("could not ask pods to stop or resume claiming: %s", exc)
            METRICS.record_error(name, "database")
        for pod_name, cost in decided.annotate.items():
            await cluster.annotate_pod(namespace, pod_name, {DELETION_COST: cost})
        if decided.scale_to is not None:
            await cluster.patch_scale(namespace, pool.deployment, decided.scale_to)
            METRICS.record_scale(name, view.deployment.replicas if view else None, decided.scale_to)
            kopf.info(body, reason="Scaled", message=decided.decision)
        restarted = None
        if decided.restart is not None:
            restarted = await _restart(
                cluster, namespace, decided.restart, pool.stale_heartbeat, body, logger
            )
            state.snapshots.invalidate()
            METRICS.pod_restarts.labels(name).inc()

        current = view.deployment.current if view else None
        METRICS.record_pool(name, decided.desired, current, decided.busy)
        new_status = build_status(
            decided, previous, generation=generation, current_replicas=current,
            scaled=decided.scale_to is not None, restarted=1 if restarted else 0, now=now,
        )
        changes = status_patch(status, new_status)
        for key, value in changes.items():
            patch.status[key] = value
        state.statuses[uid] = new_status


async def _restart(
    cluster: kube.Cluster, namespace: str, victim: StalePod, threshold: float,
    body: kopf.Body, logger: Any,
) -> str:
    """Delete the stale pod (normal grace period), then rescue its tasks, fenced.

    The pod goes first: once it is gone nothing can still be running the tasks, and if the
    rescue fails (database away) the pollers' orphan sweep rescues them later.
    """
    await cluster.delete_pod(namespace, victim.name)
    reason = f"pod {victim.name} restarted by the operator: no heartbeat for {threshold:g}s"
    outcomes = []
    for task in victim.tasks:
        try:
            rescued = await observe.in_db_thread(Task.queue.rescue, task.lease, reason)
            outcome = rescued.value if rescued else "already handled"
        except Exception as exc:  # the pod is gone; the pollers' sweep will rescue it
            logger.warning("could not rescue task %s: %s", task.id, exc)
            METRICS.record_error(str(body.get("metadata", {}).get("name", "")), "rescue")
            outcome = "left for the orphan sweep"
        outcomes.append(f"task {task.id} {outcome}")
    message = (
        f"deleted pod {victim.name}: its tasks sent no heartbeat for {victim.silent_for:.0f}s "
        f"({', '.join(outcomes)})"
    )
    kopf.warn(body, reason="RestartedPod", message=message)
    logger.warning("%s", message)
    return victim.name
