"""The operator's Prometheus metrics: the queue as the last snapshot saw it, and what the
operator did per pool. One registry (``METRICS.registry``), served by a small HTTP server
that the kopf startup handler starts on ``TASK_OPERATOR_METRICS_PORT`` (0: off).

Recorded by ``observe`` (the queue gauges, once per snapshot) and ``reconcile`` (replicas,
scale events, pod restarts, errors, tick time); ``decisions`` stays pure. Labels are
bounded: op, pool, status, kind, direction. Never a task id, a pod or arguments.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import ThreadingHTTPServer

import kopf
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

log = logging.getLogger("fullctl_operator")

QUEUE_STATUSES = ("pending", "scheduled", "waiting", "running")
ERROR_KINDS = ("database", "kubernetes", "spec", "rescue", "other")


@dataclass(frozen=True)
class QueueGauges:
    """The queue numbers of one snapshot (plain values: no model or snapshot types)."""

    counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # op -> status -> n
    oldest_age: Mapping[str, float] = field(default_factory=dict)  # op -> seconds
    stale_running: Mapping[str, int] = field(default_factory=dict)  # op -> n


class QueueCollector(Collector):
    """Reads the last queue snapshot's numbers at scrape time (no query per scrape)."""

    def __init__(self) -> None:
        self.gauges: QueueGauges | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauges = self.gauges
        tasks = GaugeMetricFamily("fullctl_tasks", "Tasks in the queue by op and status.",
                                  labels=["op", "status"])
        oldest = GaugeMetricFamily(
            "fullctl_task_oldest_pending_age_seconds",
            "Age of the oldest runnable pending task per op, from its due time.",
            labels=["op"])
        stale = GaugeMetricFamily(
            "fullctl_tasks_stale_running",
            "Running tasks without a sign of life for TASK_ORPHANED_HEARTBEAT_TIMEOUT.",
            labels=["op"])
        if gauges is not None:
            for op in sorted(gauges.counts):
                for status in QUEUE_STATUSES:
                    tasks.add_metric([op, status], gauges.counts[op].get(status, 0))
                oldest.add_metric([op], gauges.oldest_age.get(op, 0.0))
                stale.add_metric([op], gauges.stale_running.get(op, 0))
        yield from (tasks, oldest, stale)


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.queue = QueueCollector()
        self.registry.register(self.queue)
        self.replicas = Gauge(
            "fullctl_operator_pool_replicas", "A pool's replicas: desired, current, busy.",
            ["pool", "kind"], registry=self.registry)
        self.scale_events = Counter(
            "fullctl_operator_scale_events", "Scale patches the operator made.",
            ["pool", "direction"], registry=self.registry)
        self.pod_restarts = Counter(
            "fullctl_operator_pod_restarts", "Stale pods the operator deleted.", ["pool"],
            registry=self.registry)
        self.errors = Counter(
            "fullctl_operator_errors", "Errors met in a pool's tick, by kind.",
            ["pool", "kind"], registry=self.registry)
        self.tick_seconds = Histogram(
            "fullctl_operator_tick_seconds", "How long one pool's tick took.",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
        self._server: ThreadingHTTPServer | None = None

    # -- recording -------------------------------------------------------------------

    def record_queue(
        self,
        counts: Mapping[str, Mapping[str, int]],
        oldest: Mapping[str, datetime],
        stale: Mapping[str, int],
        now: datetime,
    ) -> None:
        ops = set(counts) | set(oldest) | set(stale)
        self.queue.gauges = QueueGauges(
            counts={op: dict(counts.get(op, {})) for op in ops},
            oldest_age={op: max(0.0, (now - due).total_seconds()) for op, due in oldest.items()},
            stale_running=dict(stale),
        )

    def record_pool(self, pool: str, desired: int | None, current: int | None,
                    busy: int) -> None:
        for kind in ERROR_KINDS:  # every kind shows, as 0 until it happens
            self.errors.labels(pool, kind)
        for direction in ("up", "down"):
            self.scale_events.labels(pool, direction)
        self.pod_restarts.labels(pool)
        for kind, number in (("desired", desired), ("current", current), ("busy", busy)):
            if number is not None:
                self.replicas.labels(pool, kind).set(number)

    def record_scale(self, pool: str, before: int | None, after: int) -> None:
        direction = "up" if before is None or after > before else "down"
        self.scale_events.labels(pool, direction).inc()

    @contextmanager
    def observing_tick(self, pool: str) -> Iterator[None]:
        """Time one tick of ``pool`` and count how it failed: a bad spec, or anything
        else (the cluster, the database)."""
        started = time.monotonic()
        try:
            yield
        except kopf.PermanentError:
            self.record_error(pool, "spec")
            raise
        except Exception:
            self.record_error(pool, "kubernetes")
            raise
        finally:
            self.tick_seconds.observe(time.monotonic() - started)

    def record_error(self, pool: str, kind: str) -> None:
        self.errors.labels(pool, kind if kind in ERROR_KINDS else "other").inc()

    def forget_pool(self, pool: str) -> None:
        for kind in ("desired", "current", "busy"):
            with contextlib.suppress(KeyError):
                self.replicas.remove(pool, kind)

    # -- serving -----------------------------------------------------------------------

    def serve(self, port: int, address: str = "0.0.0.0") -> ThreadingHTTPServer | None:
        """Serve ``/metrics`` on ``port`` in a thread (0: off). A port in use is logged, not
        fatal: the operator's work matters more than its numbers."""
        if not port:
            return None
        try:
            server = ThreadingHTTPServer((address, port), MetricsHandler.factory(self.registry))
        except OSError as exc:
            log.error("metrics not served: port %s: %s", port, exc.strerror or exc)
            return None
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        self._server = server
        return server

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


METRICS = OperatorMetrics()
