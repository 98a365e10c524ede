"""The queue overview page of the admin in a real browser (Debian's chromium driven by
Playwright), on the image's server: gunicorn with ``example_project.wsgi``, static files
from WhiteNoise, the test database. The server and browser fixtures are those of
test_admin_browser.py. Full-page screenshots land in ``tests/artifacts/screenshots/``.

Also, in-process: the page is staff only (and needs the Task view permission)."""

from datetime import timedelta

import pytest
from browserlib import PASSWORD, log_in, require_browser, screenshot
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone
from example_tasks.models import FailTask, SleepTask, SumTask

from django_fullctl.models import Task, TaskHeartbeat

require_browser()

pytestmark = [pytest.mark.django_db(transaction=True)]

LIST_PATH = "/admin/django_fullctl/task/"
OVERVIEW_PATH = "/admin/django_fullctl/task/overview/"
POLLER = "fullctl-tasks-poller-default-7b9c8d6f5-x2x4z:41"


def make_queue() -> dict:
    """An hour of history: sums completed across the hour (5 in the last 5 minutes), failures,
    a backlog whose oldest task is 10 minutes old, and one running task gone silent."""
    now = timezone.now()
    done = []
    for minutes_ago in (58, 40, 40, 25, 12, 3, 2, 2, 1, 0):
        task = SumTask.create_task(1, 2)
        [claimed] = Task.queue.claim(POLLER, [task.op])
        Task.queue.complete(claimed.lease, 3, 0.25)
        Task.objects.filter(pk=task.pk).update(finished=now - timedelta(minutes=minutes_ago,
                                                                        seconds=5))
        done.append(task)
    fail_op = ""
    for minutes_ago in (30, 4):
        task = FailTask.create_task("boom")
        fail_op = task.op
        [claimed] = Task.queue.claim(POLLER, [task.op])
        Task.queue.fail(claimed.lease, "RuntimeError: boom", 0.5)
        Task.objects.filter(pk=task.pk).update(finished=now - timedelta(minutes=minutes_ago))
    old_finished = SumTask.create_task(5, 5)  # finished two hours ago: outside the window
    [claimed] = Task.queue.claim(POLLER, [old_finished.op])
    Task.queue.complete(claimed.lease, 10, 1.0)
    Task.objects.filter(pk=old_finished.pk).update(finished=now - timedelta(hours=2))
    pending = [SumTask.create_task(i, i) for i in range(3)]
    Task.objects.filter(pk=pending[0].pk).update(created=now - timedelta(minutes=10))
    silent = SleepTask.create_task(60)
    [claimed] = Task.queue.claim(POLLER, [silent.op])
    Task.queue.heartbeat(claimed.lease)
    TaskHeartbeat.objects.filter(task_id=silent.pk).update(timestamp=now - timedelta(minutes=5))
    return {"sum": done[0].op, "fail": fail_op,
            "sleep": silent.op, "silent": silent}


def row_cells(page, op: str) -> list[str]:
    return [c.strip() for c in page.locator(f'#overview-ops tr[data-op="{op}"] td')
            .all_inner_texts()]


def test_the_overview_from_the_task_list(page):
    ops = make_queue()
    log_in(page)
    page.goto(LIST_PATH)
    assert page.locator("ul.object-tools a", has_text="Queue overview").is_visible()
    screenshot(page, "admin_task_list_overview_link")
    page.click("text=Queue overview")
    page.wait_for_url(f"**{OVERVIEW_PATH}")
    assert page.title().startswith("Task queue overview")
    # columns: op, 7 statuses, oldest pending, completed 5/60, failed 5/60, mean run time
    sums = row_cells(page, ops["sum"])
    assert sums[0] == ops["sum"]
    assert sums[1:8] == ["3", "0", "0", "0", "11", "0", "0"]  # pending .. cancelled
    assert sums[8].endswith(" s") and 595 <= int(sums[8][:-2]) <= 700  # 10 min old
    assert sums[9] == "5 / 10"  # the 2-hour-old one is outside the hour
    assert sums[10] == "0 / 0"
    assert sums[11] == "0.250 s"
    fails = row_cells(page, ops["fail"])
    assert fails[1:8] == ["0", "0", "0", "0", "0", "2", "0"]
    assert fails[9:11] == ["0 / 0", "1 / 2"]
    sleep = row_cells(page, ops["sleep"])
    assert sleep[4] == "1" and sleep[8] == "-"
    # the stale task, linked to its page
    stale = page.locator("#overview-stale tbody tr")
    assert stale.count() == 1
    assert stale.locator("td").first.inner_text().strip() == str(ops["silent"].pk)
    # the chart: an inline SVG, one bar per minute with counts, no script, nothing fetched
    svg = page.locator("#overview-chart svg")
    assert svg.count() == 1
    titles = svg.locator("rect title").evaluate_all("els => els.map(e => e.textContent)")
    assert sum(int(t.split(": ")[1].split()[0]) for t in titles) == 12  # 10 + 2 in the hour
    assert any(t.endswith("2 completed") for t in titles)
    assert page.locator("script[src*='http']").count() == 0
    box = svg.bounding_box()
    assert box and box["width"] >= 700 and box["height"] >= 190
    screenshot(page, "admin_queue_overview")
    # and back to the list, filtered by op
    page.click(f'#overview-ops a:text-is("{ops["fail"]}")')
    page.wait_for_url("**/task/?op=*")
    assert page.locator("#result_list tbody tr").count() == 2


def test_the_overview_when_the_queue_is_empty(page):
    log_in(page)
    page.goto(OVERVIEW_PATH)
    assert page.locator("#overview-ops tbody").inner_text().strip() == "No tasks."
    assert page.locator("#overview-no-stale").is_visible()
    assert page.locator("#overview-chart svg rect").count() == 0
    screenshot(page, "admin_queue_overview_empty")


def test_the_overview_is_staff_only():
    client = Client()
    response = client.get(OVERVIEW_PATH)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    User.objects.create_user("visitor", password=PASSWORD)  # not staff
    client.login(username="visitor", password=PASSWORD)
    assert client.get(OVERVIEW_PATH).status_code == 302
    staff = User.objects.create_user("staff", password=PASSWORD, is_staff=True)
    client.login(username="staff", password=PASSWORD)
    assert client.get(OVERVIEW_PATH).status_code == 403  # staff without the view permission
    staff.user_permissions.add(Permission.objects.get(codename="view_task"))
    response = client.get(OVERVIEW_PATH)
    assert response.status_code == 200 and b"Task queue overview" in response.content

