"""The poller's ``/metrics``: a prometheus_client collector that reads the supervisor's
totals and the live workers' shared tables at scrape time (see ``metrics``)."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from django_fullctl.poller.metrics import (
    BUCKETS,
    DB_OPERATIONS,
    OUTCOMES,
    RESTART_REASONS,
    RETRY_REASONS,
    Layout,
)


@dataclass(frozen=True)
class PollerNumbers:
    numbers: list[float]  # the layout's table, summed over the supervisor and its workers
    busy: int
    idle: int


class PollerCollector(Collector):
    def __init__(self, layout: Layout, read: Callable[[], PollerNumbers]):
        self.layout = layout
        self.read = read

    def collect(self) -> Iterator:
        layout, now = self.layout, self.read()
        values = now.numbers
        claimed = CounterMetricFamily(
            "fullctl_tasks_claimed", "Tasks claimed and started by this poller's workers.",
            labels=["op"])
        finished = CounterMetricFamily(
            "fullctl_tasks_finished", "Task runs that ended, by how.", labels=["op", "outcome"])
        retried = CounterMetricFamily(
            "fullctl_tasks_retried", "Attempts that will be tried again, by why.",
            labels=["op", "reason"])
        run = HistogramMetricFamily(
            "fullctl_task_run_duration_seconds", "How long a task's run() took.",
            labels=["op"])
        wait = HistogramMetricFamily(
            "fullctl_task_queue_wait_seconds",
            "From a task's due time (run_after, else created) to its start.", labels=["op"])
        for i, op in enumerate(layout.ops):
            claimed.add_metric([op], values[layout.claimed + i])
            for j, outcome in enumerate(OUTCOMES):
                finished.add_metric([op, outcome], values[layout.finished + i * len(OUTCOMES) + j])
            for j, reason in enumerate(RETRY_REASONS):
                retried.add_metric(
                    [op, reason], values[layout.retried + i * len(RETRY_REASONS) + j])
            for family, start in ((run, layout.run_hist), (wait, layout.wait_hist)):
                base = start + i * layout.hist_width
                counts = values[base:base + len(BUCKETS) + 1]
                cumulative, buckets = 0.0, []
                for bound, count in zip((*map(_bound, BUCKETS), "+Inf"), counts, strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                family.add_metric([op], buckets, values[base + layout.hist_width - 1])
        yield from (claimed, finished, retried, run, wait)

        slots = GaugeMetricFamily(
            "fullctl_poller_worker_slots", "Worker processes of this poller, busy or idle.",
            labels=["state"])
        slots.add_metric(["busy"], now.busy)
        slots.add_metric(["idle"], now.idle)
        yield slots
        restarts = CounterMetricFamily(
            "fullctl_poller_worker_restarts", "Worker processes replaced, by why.",
            labels=["reason"])
        for j, reason in enumerate(RESTART_REASONS):
            restarts.add_metric([reason], values[layout.restarts + j])
        yield restarts
        errors = CounterMetricFamily(
            "fullctl_poller_database_errors", "Database errors met by the poller's processes.",
            labels=["operation"])
        for j, operation in enumerate(DB_OPERATIONS):
            errors.add_metric([operation], values[layout.db_errors + j])
        yield errors


def _bound(value: float) -> str:
    return repr(float(value))


class Exposition:
    """One registry, owned by the supervisor; ``__call__`` renders it for ``/metrics``."""

    def __init__(self, collector: PollerCollector):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)

    def __call__(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
