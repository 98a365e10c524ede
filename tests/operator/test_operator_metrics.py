"""The operator's /metrics: the real kopf operator against kmock, real tasks in PostgreSQL.
The queue gauges must match the rows, the pool's replicas its status, and the counters
what the operator did (a scale-up, a stale pod deleted); no task id or pod name shows."""

import urllib.request
from datetime import timedelta

import pytest
from django.utils import timezone
from example_tasks.models import NoopTask
from harness import DEPLOYMENTS, PODS, create_taskpool, db, deployment, pod, pool_status, taskpool
from helpers import async_wait_for
from prometheus_client.parser import text_string_to_metric_families

from django_fullctl import conf
from fullctl.django.models import Task, TaskHeartbeat

pytestmark = pytest.mark.django_db(transaction=True)

ALLOWED_LABELS = {"op", "status", "pool", "kind", "direction", "le"}


@pytest.fixture
def metrics_port(monkeypatch, unused_tcp_port):
    """The operator started by the next fixture serves /metrics on a free port."""
    monkeypatch.setenv("TASK_OPERATOR_METRICS_PORT", str(unused_tcp_port))
    conf.reload()
    yield unused_tcp_port
    monkeypatch.delenv("TASK_OPERATOR_METRICS_PORT")
    conf.reload()


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def value(values: dict, name: str, **labels: str) -> float | None:
    return values.get((name, frozenset(labels.items())))


def make_queue() -> dict:
    """9 runnable (one created 5 minutes ago), 1 scheduled, 1 waiting for its parent, and
    2 running with heartbeats 2 minutes old: one in a pod of the pool, one elsewhere."""
    for _ in range(8):
        NoopTask.create_task()
    parent = NoopTask.create_task()
    NoopTask.create_task(parent=parent)  # waiting
    NoopTask.configure(run_after=timedelta(hours=1)).create_task()  # scheduled
    old = timezone.now() - timedelta(minutes=2)
    ids = {}
    for host in ("metrics-1", "elsewhere-0"):
        [task] = Task.queue.claim(f"{host}:7", ["task_noop"], limit=1)
        Task.queue.heartbeat(task.lease)
        TaskHeartbeat.objects.filter(task_id=task.pk).update(timestamp=old)
        ids[host] = task.pk
    oldest = Task.objects.filter(status="pending", waiting=False, scheduled=False).first()
    Task.objects.filter(pk=oldest.pk).update(created=timezone.now() - timedelta(minutes=5))
    return ids


async def test_the_operator_serves_queue_and_pool_metrics(metrics_port, cluster, operator):
    cluster.put(DEPLOYMENTS, deployment("metrics-workers", 1))
    cluster.put(PODS, pod("metrics-0", "metrics-workers"))
    cluster.put(PODS, pod("metrics-1", "metrics-workers"))
    ids = await db(make_queue)
    await create_taskpool(cluster, taskpool("metrics", "metrics-workers", maxReplicas=20,
                                            staleHeartbeatSeconds=30))

    def settled() -> dict | None:
        text = scrape(metrics_port)
        if text is None:
            return None
        values = samples(text)
        ok = (
            value(values, "fullctl_operator_pod_restarts_total", pool="metrics") == 1
            and value(values, "fullctl_tasks", op="task_noop", status="pending") == 8
            and (value(values, "fullctl_operator_scale_events_total", pool="metrics",
                       direction="up") or 0) >= 1
            and all(
                value(values, "fullctl_operator_pool_replicas", pool="metrics", kind=kind)
                == pool_status(cluster, "metrics").get(key)
                for kind, key in (("desired", "desiredReplicas"), ("current", "currentReplicas"),
                                  ("busy", "busyPods"))
            )
        )
        return values if ok else None

    values = await async_wait_for(settled, timeout=20)
    # the queue: the rescued task is pending again, the foreign one still runs, stale
    for status, count in {"pending": 8, "scheduled": 1, "waiting": 1, "running": 1}.items():
        assert value(values, "fullctl_tasks", op="task_noop", status=status) == count, status
    assert value(values, "fullctl_tasks_stale_running", op="task_noop") == 1
    assert 300 <= value(values, "fullctl_task_oldest_pending_age_seconds", op="task_noop") < 400
    # the pool: as its status says (checked above); one stale pod restarted; the
    # scale-ups counted
    assert value(values, "fullctl_operator_pool_replicas", pool="metrics", kind="desired") > 1
    ups = cluster.requests_for("PATCH", "deployments", subresource="scale",
                               name="metrics-workers")
    assert value(values, "fullctl_operator_scale_events_total", pool="metrics",
                 direction="up") == len(ups) >= 1
    assert value(values, "fullctl_operator_scale_events_total", pool="metrics",
                 direction="down") == 0
    assert value(values, "fullctl_operator_errors_total", pool="metrics", kind="database") == 0
    assert value(values, "fullctl_operator_tick_seconds_count") >= 1
    rescued = await db(lambda: Task.objects.get(pk=ids["metrics-1"]))
    assert rescued.status == "pending"

    # bounded labels; no task id, pod or worker name
    text = scrape(metrics_port)
    assert text is not None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, sample
            assert not {str(i) for i in ids.values()} & set(sample.labels.values()), sample
    for name in ("metrics-0", "metrics-1", "elsewhere-0"):
        assert name not in text


async def test_metrics_port_zero_serves_nothing(monkeypatch, unused_tcp_port, cluster):
    """With TASK_OPERATOR_METRICS_PORT=0 the startup handler starts no server."""
    from fullctl_operator.metrics import OperatorMetrics

    metrics = OperatorMetrics()
    assert metrics.serve(0) is None
    server = metrics.serve(unused_tcp_port, "127.0.0.1")
    assert server is not None
    assert "fullctl_operator_tick_seconds" in (scrape(unused_tcp_port) or "")
    # a second server on the same port: logged, not fatal
    assert OperatorMetrics().serve(unused_tcp_port, "127.0.0.1") is None
    metrics.stop()
    assert scrape(unused_tcp_port) is None
