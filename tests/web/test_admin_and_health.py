"""The admin (staff only) and the /health view."""

import time

import pytest
from django.contrib.auth.models import User
from django.test.utils import override_settings
from example_tasks.models import EchoTask, SumTask

from django_fullctl.models import Task

pytestmark = [pytest.mark.portable, pytest.mark.django_db(transaction=True)]

LIST_URL = "/admin/django_fullctl/task/"


@pytest.fixture
def staff_client(client):
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(user)
    return client


def test_admin_requires_staff(client):
    assert client.get(LIST_URL).status_code == 302
    User.objects.create_user("joe", password="pw")
    client.login(username="joe", password="pw")
    response = client.get(LIST_URL)
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_admin_list_shows_the_documented_columns(staff_client):
    parent = SumTask.create_task(1, 2)
    SumTask.create_task(3, 4, parent=parent)
    response = staff_client.get(LIST_URL)
    assert response.status_code == 200
    html = response.content.decode()
    for column in ("source", "queue_id", "parent", "status", "param", "time"):
        assert f"column-{column}" in html
    assert staff_client.get(LIST_URL + "?status__exact=pending&op=task_sum").status_code == 200
    assert staff_client.get(LIST_URL + f"?q={parent.pk}").status_code == 200


def test_admin_actions_cancel_and_requeue(staff_client):
    task = SumTask.create_task(1, 2)
    staff_client.post(LIST_URL, {"action": "cancel_tasks", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert task.status == "cancelled" and "admin" in task.error
    staff_client.post(LIST_URL, {"action": "requeue_tasks", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert task.status == "pending"


def test_admin_detail_shows_the_heartbeat(staff_client):
    task = SumTask.create_task(1, 2)
    [claimed] = Task.queue.claim("pod-1:5", ["task_sum"])
    Task.queue.heartbeat(claimed.lease)
    html = staff_client.get(f"{LIST_URL}{task.pk}/change/").content.decode()
    assert "Task heartbeat" in html and "pod-1:5" in html


def test_health_ok_on_both_paths_without_redirect(client):
    for path in ("/health", "/health/"):
        response = client.get(path)
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["status"] == "ok"
        assert set(body["checks"]) == {"database", "heartbeats", "backlog"}


@override_settings(HEALTH_CHECK_TASK_INTERVAL_SECONDS=0.1)
def test_health_503_lists_stale_tasks_but_no_parameters(client):
    task = EchoTask.create_task("secret-parameter-value")
    [claimed] = Task.queue.claim("pod-1:5", ["task_echo"])
    Task.queue.heartbeat(claimed.lease)
    time.sleep(0.2)  # the behaviour under test: the heartbeat ages past the 0.1 s interval
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["heartbeats"]["ok"] is False
    assert body["checks"]["heartbeats"]["stale_task_ids"] == [task.pk]
    assert "secret-parameter-value" not in response.content.decode()
    assert client.get("/health?exclude=heartbeats").status_code == 200


@override_settings(TASK_BACKLOG_MAX_PENDING=2)
def test_health_backlog_threshold_and_verbose(client):
    for i in range(3):
        SumTask.create_task(i, i)
    response = client.get("/health?exclude=heartbeats&verbose")
    assert response.status_code == 503
    backlog = response.json()["checks"]["backlog"]
    assert backlog["ok"] is False and backlog["pending"] == 3
    verbose = client.get("/health?exclude=backlog&verbose").json()
    assert verbose["checks"]["database"]["vendor"]


def test_health_excluding_everything_touches_no_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/health?exclude=database,heartbeats,backlog")
    assert response.status_code == 200 and response.json()["checks"] == {}


def test_health_unknown_check_is_a_clear_error(client):
    response = client.get("/health?exclude=nope")
    assert response.status_code == 400 and "nope" in response.json()["error"]
