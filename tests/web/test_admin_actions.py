"""The task admin without a browser: requeuing a chain, what the actions say (and at which
message level), the view-only task page and the readable columns."""

import re
from datetime import timedelta

import pytest
from django.contrib import messages
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from example_tasks.models import EchoTask, SumTask

from django_fullctl.display import format_age, format_duration, format_param_preview
from django_fullctl.models import Task

pytestmark = [pytest.mark.portable, pytest.mark.django_db(transaction=True)]

LIST_URL = "/admin/django_fullctl/task/"


@pytest.fixture
def staff_client(client):
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))
    return client


def finish(task, *, fail=False, duration=0.01, worker="pod-1:5"):
    """Claim ``task`` (the oldest pending task of its op) and complete or fail it."""
    [claimed] = Task.queue.claim(worker, [task.op])
    assert claimed.pk == task.pk
    if fail:
        Task.queue.fail(claimed.lease, "RuntimeError: boom", duration)
    else:
        Task.queue.complete(claimed.lease, 3, duration)
    task.refresh_from_db()
    return task


def statuses(*tasks):
    return [Task.objects.values_list("status", "waiting").get(pk=t.pk) for t in tasks]


def run_action(client, action, *tasks):
    response = client.post(
        LIST_URL, {"action": action, "_selected_action": [t.pk for t in tasks]}, follow=True
    )
    assert response.status_code == 200
    return [(m.level, m.message) for m in response.context["messages"]]


# -- queue.retry: a chain runs again as one -------------------------------------


def test_retry_of_a_failed_parent_requeues_the_descendants_cancelled_because_of_it():
    parent = SumTask.create_task(1, 2)
    child = EchoTask.create_task("child", parent=parent)
    grandchild = EchoTask.create_task("grandchild", parent=child)
    finish(parent, fail=True)
    assert statuses(child, grandchild) == [("cancelled", True), ("cancelled", True)]

    assert Task.queue.retry(parent.pk) is True

    assert statuses(parent, child, grandchild) == [
        ("pending", False), ("pending", True), ("pending", True)
    ]
    for task in (child, grandchild):
        task.refresh_from_db()
        assert task.error is None and task.finished is None and task.attempt == 0
    # and the chain runs: the parent completes, which releases the child
    finish(parent)
    assert statuses(child, grandchild) == [("pending", False), ("pending", True)]


def test_retry_leaves_descendants_cancelled_for_another_reason():
    parent = SumTask.create_task(1, 2)
    by_hand = EchoTask.create_task("cancelled by hand", parent=parent)
    below_by_hand = EchoTask.create_task("below it", parent=by_hand)
    cascaded = EchoTask.create_task("cancelled with the parent", parent=parent)
    Task.queue.cancel(by_hand.pk, "cancelled by admin in the admin")
    finish(parent, fail=True)

    Task.queue.retry(parent.pk)

    assert [status for status, _ in statuses(by_hand, below_by_hand)] == ["cancelled"] * 2
    assert statuses(cascaded) == [("pending", True)]


def test_retry_of_a_cancelled_root_and_of_a_child_created_after_the_failure():
    root = SumTask.create_task(1, 2)
    child = EchoTask.create_task("child", parent=root)
    Task.queue.cancel(root.pk, "cancelled by admin in the admin")
    late = EchoTask.create_task("created after", parent=root)  # cancelled at creation
    assert statuses(child, late) == [("cancelled", True), ("cancelled", True)]

    assert Task.queue.retry(root.pk)
    assert statuses(root, child, late) == [
        ("pending", False), ("pending", True), ("pending", True)
    ]


def test_retry_of_a_middle_task_requeues_its_own_descendants_only():
    root = SumTask.create_task(1, 2)
    middle = EchoTask.create_task("middle", parent=root)
    leaf = EchoTask.create_task("leaf", parent=middle)
    finish(root)
    finish(middle, fail=True)
    assert statuses(leaf) == [("cancelled", True)]

    Task.queue.retry(middle.pk)
    assert statuses(root, middle, leaf) == [
        ("completed", False), ("pending", False), ("pending", True)
    ]


def test_retry_refuses_tasks_that_did_not_fail_nor_were_cancelled():
    pending = SumTask.create_task(1, 2)
    assert Task.queue.retry(pending.pk) is False
    done = finish(pending)
    assert Task.queue.retry(done.pk) is False
    assert statuses(done) == [("completed", False)]


# -- the actions' messages ------------------------------------------------------


def test_cancel_of_a_pending_task_is_a_success(staff_client):
    task = SumTask.create_task(1, 2)
    assert run_action(staff_client, "cancel_tasks", task) == [
        (messages.SUCCESS, "1 task cancelled.")
    ]
    task.refresh_from_db()
    assert task.status == "cancelled" and task.error == "cancelled by admin in the admin"


def test_cancel_of_a_finished_task_is_a_warning_and_changes_nothing(staff_client):
    task = finish(SumTask.create_task(1, 2))
    [(level, text)] = run_action(staff_client, "cancel_tasks", task)
    assert level == messages.WARNING
    assert text.startswith("Nothing cancelled: the selected task had already finished")
    assert statuses(task) == [("completed", False)]


def test_cancel_of_a_mixed_selection_counts_both(staff_client):
    done = finish(SumTask.create_task(1, 2))
    parent = SumTask.create_task(3, 4)
    child = EchoTask.create_task("child", parent=parent)  # cancelled along with its parent
    [(level, text)] = run_action(staff_client, "cancel_tasks", done, parent, child)
    assert level == messages.WARNING
    assert text.startswith("2 tasks cancelled; 1 skipped, which had already finished")


def test_requeue_of_a_failed_parent_is_a_success_and_brings_back_its_child(staff_client):
    parent = SumTask.create_task(1, 2)
    child = EchoTask.create_task("child", parent=parent)
    finish(parent, fail=True)
    assert run_action(staff_client, "requeue_tasks", parent) == [
        (messages.SUCCESS, "1 task requeued.")
    ]
    assert statuses(parent, child) == [("pending", False), ("pending", True)]


def test_requeue_of_tasks_that_did_not_fail_is_a_warning(staff_client):
    done = finish(SumTask.create_task(3, 4))
    pending = SumTask.create_task(1, 2)
    [(level, text)] = run_action(staff_client, "requeue_tasks", pending, done)
    assert level == messages.WARNING
    assert text.startswith("Nothing requeued: the 2 selected tasks had neither failed")
    failed = finish(EchoTask.create_task(5), fail=True)
    [(level, text)] = run_action(staff_client, "requeue_tasks", pending, failed)
    assert (level, text.split(",")[0]) == (messages.WARNING, "1 task requeued; 1 skipped")


# -- read-only: no form changes a task ------------------------------------------


def test_no_add_and_a_view_only_task_page(staff_client):
    task = SumTask.create_task(1, 2)
    listing = staff_client.get(LIST_URL).content.decode()
    tools = listing.split('class="object-tools"')[1].split("</ul>")[0]
    assert f"{LIST_URL}add/" not in listing and "addlink" not in tools
    assert staff_client.get(f"{LIST_URL}add/").status_code == 403
    page = staff_client.get(f"{LIST_URL}{task.pk}/change/").content.decode()
    assert 'name="_save"' not in page and 'name="_continue"' not in page
    form = page.split('id="task_form"')[1].split("</form>")[0]
    assert not re.search(r"<(textarea|select)\b", form), "an editable field"
    assert not re.search(r'<input(?![^>]*type="hidden")', form), "an editable field"
    # a POST of the form changes nothing
    response = staff_client.post(
        f"{LIST_URL}{task.pk}/change/", {"op": "task_echo", "status": "completed"}
    )
    assert response.status_code == 403
    task.refresh_from_db()
    assert (task.op, task.status) == ("task_sum", "pending")
    # deleting stays possible (through the model's delete)
    response = staff_client.post(f"{LIST_URL}{task.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not Task.objects.filter(pk=task.pk).exists()


def test_staff_with_the_view_permission_see_tasks_but_no_actions(client):
    task = SumTask.create_task(1, 2)
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_task"))
    client.force_login(user)
    listing = client.get(LIST_URL)
    assert listing.status_code == 200 and "cancel_tasks" not in listing.content.decode()
    assert client.get(f"{LIST_URL}{task.pk}/change/").status_code == 200
    client.post(LIST_URL, {"action": "cancel_tasks", "_selected_action": [task.pk]})
    assert statuses(task) == [("pending", False)]


# -- readable values ------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.000014592, "15 µs"), (0.012, "12 ms"), (0.9999, "1.0 s"), (3.42, "3.4 s"),
        (42.4, "42 s"), (125, "2 min 5 s"), (7260, "2 h 1 min"), (90000, "1 d 1 h"),
    ],
)
def test_format_duration(seconds, shown):
    assert format_duration(seconds) == shown


def test_format_age_and_param_preview():
    now = timezone.now()
    assert format_age(now - timedelta(seconds=3.7), now) == "3 s ago"
    assert format_age(now + timedelta(seconds=1), now) == "0 s ago"  # clocks a little apart
    assert format_param_preview({"args": [1, 2], "kwargs": {}}) == '{"args": [1, 2], "kwargs": {}}'
    long = format_param_preview({"args": ["x" * 500], "kwargs": {}})
    assert len(long) == 60 and long.endswith("…")


def test_list_and_page_show_readable_values(staff_client):
    task = finish(EchoTask.create_task("y" * 300, note="ünïcode"), duration=0.012)
    listing = staff_client.get(LIST_URL).content.decode()
    row = listing.split(f'value="{task.pk}"')[1].split("</tr>")[0]
    assert re.search(r'<td class="field-time">(<span[^>]*>)?12 ms(</span>)?</td>', row)
    timestamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.search(rf'<td class="field-created">(<span[^>]*>)?{timestamp}<', row)
    assert "y" * 300 not in row and "…" in row
    page = staff_client.get(f"{LIST_URL}{task.pk}/change/").content.decode()
    assert "y" * 300 in page and "ünïcode" in page
    assert re.search(r'<pre[^>]*>\{\n  &quot;args&quot;: \[\n', page)  # pretty-printed


def test_running_task_page_shows_the_heartbeat_age(staff_client):
    task = SumTask.create_task(1, 2)
    [claimed] = Task.queue.claim("pod-1:5", ["task_sum"])
    Task.queue.heartbeat(claimed.lease)
    page = staff_client.get(f"{LIST_URL}{task.pk}/change/").content.decode()
    assert re.search(r"\d+ s ago", page)
    assert "Task heartbeat" in page
