"""kopf wiring, nothing else: settings at startup, one timer per TaskPool, a liveness probe.

Only TaskPools get a handler (and so kopf's finalizer): Deployments and Pods are read
through the API client in ``kube``, never watched with timers or daemons, which would put
kopf's finalizer on them and leave them stuck in Terminating without the operator.

Logging in is kopf's own (its default login handler, through the ``kubernetes`` client);
the operator's client (``kube.Cluster``, ``kubernetes.aio``) is configured the same way at
startup and closed at cleanup.

The timer is registered by ``register(interval)`` when the operator starts (``cli.run_kopf``
passes the ``TASK_OPERATOR_INTERVAL_SECONDS`` setting), not when this module is imported.
"""

import logging
from typing import Any

import kopf
from kubernetes.aio.config import ConfigException

from django_fullctl import conf
from fullctl_operator import kube, observe, reconcile
from fullctl_operator.metrics import METRICS

GROUP, VERSION, PLURAL = "tasks.fullctl.io", "v1", "taskpools"
PREFIX = "tasks.fullctl.io"

# the tick the timer was registered with (see register)
_interval: float | None = None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # no cluster-wide CRD/namespace discovery: the Role is namespaced and grants no more
    settings.scanning.disabled = True
    # our own marks on our own objects (TaskPools only)
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.SmartProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # Events for what the operator does (kopf.info/kopf.warn), not for every log line
    settings.posting.enabled = True
    settings.posting.loggers = False
    settings.posting.level = logging.INFO
    # on shutdown, let a tick in flight finish (it takes milliseconds) rather than cancel it
    # between deleting a stale pod and rescuing its task
    settings.background.instant_exit_timeout = 1.0
    # the operator logs one line per decision; kopf's "Timer 'size' succeeded." after every
    # tick of every pool would double the volume and say nothing
    logging.getLogger("kopf.objects").addFilter(_quiet_timer_success)
    # the operator's own API client, configured as kopf's login is (kube.py); with neither
    # a service account nor a kubeconfig there is nothing to retry, as for kopf's login
    try:
        cluster = await kube.Cluster.connect()
    except ConfigException as exc:
        raise kopf.PermanentError(
            f"no Kubernetes configuration, neither in-cluster nor from a kubeconfig: {exc}"
        ) from exc
    # one snapshot of the queue serves every pool ticking within the same interval
    interval = _interval or conf.settings().operator_interval
    # /metrics on TASK_OPERATOR_METRICS_PORT (0: off); the queue gauges are read with the
    # tick's snapshot only when they are served
    served = METRICS.serve(conf.settings().operator_metrics_port)
    memo.fullctl = reconcile.OperatorState(
        observe.QueueCache(max_age=interval * 0.9, gauges=served is not None), cluster
    )


@kopf.on.cleanup()
async def disconnect(memo: kopf.Memo, **_: Any) -> None:
    state: reconcile.OperatorState | None = getattr(memo, "fullctl", None)
    if state is not None:
        await state.cluster.close()
    METRICS.stop()


def _quiet_timer_success(record: logging.LogRecord) -> bool:
    return record.getMessage() != "Timer 'size' succeeded."


async def size_pool(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    namespace: str,
    uid: str,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Size the pool's Deployment and restart its stale pods (see ``reconcile.tick``)."""
    await reconcile.tick(
        state=memo.fullctl, body=body, spec=spec, status=status, namespace=namespace,
        uid=uid, generation=meta.get("generation"), patch=patch,
        now=observe.now_utc(), logger=logger,
    )


def register(interval: float) -> None:
    """Register the sizing timer with kopf, ticking every ``interval`` seconds (once per
    process: kopf's registry is global)."""
    global _interval
    if _interval is not None:
        if _interval != interval:
            raise RuntimeError(f"the timer already ticks every {_interval:g}s")
        return
    timer = kopf.timer(GROUP, VERSION, PLURAL, id="size", interval=interval, backoff=interval)
    timer(size_pool)  # type: ignore[arg-type]  # kopf's TimerFn names every kwarg it may pass
    _interval = interval


@kopf.on.probe(id="queue")
def queue_probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """Shown on the liveness endpoint; never fails it (the database may be briefly away)."""
    state: reconcile.OperatorState | None = getattr(memo, "fullctl", None)
    snapshot = state.snapshots.last if state else None
    if snapshot is None:
        return {"read": False}
    return {"read": True, "error": snapshot.error, "age": round(snapshot.age, 1)}
