"""``/metrics`` for deployments without the operator: the queue gauges the operator serves
otherwise (``fullctl_tasks{op,status}``, ``fullctl_task_oldest_pending_age_seconds{op}``,
``fullctl_tasks_stale_running{op}``), read from the database at most once per
``CACHE_SECONDS`` per process. Off (404) unless ``TASK_METRICS_VIEW = True``; scrape it
from one place only (every web replica answers the same numbers)."""

import threading
import time
from collections.abc import Iterator

from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from django_fullctl import conf
from django_fullctl.models import Task

CACHE_SECONDS = 5.0
STATUSES = ("pending", "scheduled", "waiting", "running")


class QueueGaugeCollector(Collector):
    """Three indexed queries: counts of pending and running rows, the oldest due time per
    op, the running rows without a sign of life for ``TASK_ORPHANED_HEARTBEAT_TIMEOUT``."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = Task.queue.active_counts_by_op()
        oldest = Task.queue.oldest_pending_by_op()
        stale: dict[str, int] = {}
        for task in Task.queue.stale_running(conf.settings().orphaned_heartbeat_timeout):
            stale[task.op] = stale.get(task.op, 0) + 1
        now = timezone.now()
        tasks = GaugeMetricFamily("fullctl_tasks", "Tasks in the queue by op and status.",
                                  labels=["op", "status"])
        age = GaugeMetricFamily(
            "fullctl_task_oldest_pending_age_seconds",
            "Age of the oldest runnable pending task per op, from its due time.", labels=["op"])
        stale_family = GaugeMetricFamily(
            "fullctl_tasks_stale_running",
            "Running tasks without a sign of life for TASK_ORPHANED_HEARTBEAT_TIMEOUT.",
            labels=["op"])
        for op in sorted(set(counts) | set(oldest) | set(stale)):
            for status in STATUSES:
                tasks.add_metric([op, status], counts.get(op, {}).get(status, 0))
            due = oldest.get(op)
            age.add_metric([op], max(0.0, (now - due).total_seconds()) if due else 0.0)
            stale_family.add_metric([op], stale.get(op, 0))
        yield from (tasks, age, stale_family)


_registry = CollectorRegistry(auto_describe=False)
_registry.register(QueueGaugeCollector())
_lock = threading.Lock()
_cached: tuple[float, bytes] | None = None


def render() -> bytes:
    """The exposition, from the cache when it is younger than ``CACHE_SECONDS``."""
    global _cached
    with _lock:
        if _cached is None or time.monotonic() - _cached[0] >= CACHE_SECONDS:
            _cached = (time.monotonic(), generate_latest(_registry))
        return _cached[1]


def clear_cache() -> None:
    global _cached
    with _lock:
        _cached = None


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not conf.settings().metrics_view:
        raise Http404("TASK_METRICS_VIEW is off")
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
