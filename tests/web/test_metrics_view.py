"""``/metrics`` of django_fullctl.urls: the queue gauges for deployments without the
operator; off (404) unless TASK_METRICS_VIEW, cached a few seconds."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from example_tasks.models import SleepTask, SumTask
from prometheus_client.parser import text_string_to_metric_families

from django_fullctl import metrics_view
from django_fullctl.models import Task, TaskHeartbeat

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_cache():
    metrics_view.clear_cache()
    yield
    metrics_view.clear_cache()


def values(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_off_by_default(client):
    assert client.get("/metrics").status_code == 404


@override_settings(TASK_METRICS_VIEW=True)
def test_the_queue_gauges(client):
    now = timezone.now()
    tasks = [SumTask.create_task(4_242_001, i) for i in range(3)]
    Task.objects.filter(pk=tasks[0].pk).update(created=now - timedelta(minutes=3))
    SumTask.configure(run_after=timedelta(hours=1)).create_task(1, 1)
    silent = SleepTask.create_task(60)
    [claimed] = Task.queue.claim("elsewhere:1", [silent.op])
    Task.queue.heartbeat(claimed.lease)
    TaskHeartbeat.objects.filter(task_id=silent.pk).update(timestamp=now - timedelta(hours=1))

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    got = values(text)
    op = tasks[0].op
    assert got[("fullctl_tasks", (("op", op), ("status", "pending")))] == 3
    assert got[("fullctl_tasks", (("op", op), ("status", "scheduled")))] == 1
    assert got[("fullctl_tasks", (("op", silent.op), ("status", "running")))] == 1
    assert 180 <= got[("fullctl_task_oldest_pending_age_seconds", (("op", op),))] < 300
    assert got[("fullctl_tasks_stale_running", (("op", silent.op),))] == 1
    assert "4242001" not in text and str(silent.pk) not in {v for k in got for _, v in k[1]}

    # cached: a new task shows only after the cache expired
    SumTask.create_task(1, 2)
    assert values(client.get("/metrics").content.decode())[
        ("fullctl_tasks", (("op", op), ("status", "pending")))] == 3
    metrics_view.clear_cache()
    assert values(client.get("/metrics").content.decode())[
        ("fullctl_tasks", (("op", op), ("status", "pending")))] == 4
