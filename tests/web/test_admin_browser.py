"""The task admin in a real browser: Debian's chromium driven by Playwright.

The server is the one the image runs: gunicorn with ``example_project.wsgi`` and the example
settings, ``DEBUG`` off, static files collected beforehand (``collectstatic`` into a temporary
``DJANGO_STATIC_ROOT``) and served by WhiteNoise, on the test database. Full-page screenshots
land in ``tests/artifacts/screenshots/``.

Needs ``/usr/bin/chromium`` (``make browser``, or ``apt-get install chromium`` as root);
without it these tests skip. Never ``playwright install``: it downloads a browser of its own.
"""

import re

import pytest
from browserlib import log_in, require_browser, screenshot
from example_tasks.models import EchoTask, FailTask, SleepTask, SumTask

from django_fullctl.models import Task

require_browser()

pytestmark = [pytest.mark.django_db(transaction=True)]

LIST_PATH = "/admin/django_fullctl/task/"
# the admin's light theme: --header-bg and the start of --font-family-primary (base.css)
HEADER_BACKGROUND = "rgb(65, 118, 144)"
POLLER = "fullctl-tasks-poller-default-7b9c8d6f5-x2x4z:41"  # a pod name and a pid
TRACEBACK = 'Traceback (most recent call last):\n  File "tasks.py", line 9\nRuntimeError: boom'


def styles(page, selector: str) -> dict[str, str]:
    return page.evaluate(
        """(selector) => {
            const style = getComputedStyle(document.querySelector(selector));
            return {background: style.backgroundColor, font: style.fontFamily};
        }""",
        selector,
    )


def select_and_run(page, action: str, *tasks: Task) -> str:
    """Tick ``tasks`` on the list, run ``action``; return the message's level class."""
    page.goto(LIST_PATH)
    for task in tasks:
        page.check(f'input[name="_selected_action"][value="{task.pk}"]')
    page.select_option('select[name="action"]', action)
    page.click('button[name="index"]')
    page.wait_for_selector("ul.messagelist li")
    return page.get_attribute("ul.messagelist li", "class") or ""


def cell(page, task: Task, column: str) -> str:
    row = page.locator("#result_list tbody tr").filter(
        has=page.locator(f'input[name="_selected_action"][value="{task.pk}"]')
    )
    return row.locator(f"td.field-{column}, th.field-{column}").inner_text().strip()


def finish(task, *, fail=False, duration=0.01):
    """Claim ``task`` (the oldest pending task of its op) and complete or fail it."""
    [claimed] = Task.queue.claim(POLLER, [task.op])
    assert claimed.pk == task.pk
    if fail:
        Task.queue.fail(claimed.lease, TRACEBACK, duration)
    else:
        Task.queue.complete(claimed.lease, {"sum": 3}, duration)
    task.refresh_from_db()
    return task


def test_login_page_and_admin_are_styled_with_debug_off(page, live_server_url):
    page.goto("/admin/login/")
    stylesheets = page.eval_on_selector_all("link[rel=stylesheet]", "ls => ls.map(l => l.href)")
    # the hashed names of the manifest: collectstatic's output, served by WhiteNoise
    base_css = next(href for href in stylesheets if "/admin/css/base." in href)
    assert re.search(r"/static/admin/css/base\.[0-9a-f]{12}\.css$", base_css), stylesheets
    response = page.request.get(base_css)
    assert response.ok and "immutable" in response.headers["cache-control"]
    login_style = styles(page, "#header")
    assert login_style["background"] == HEADER_BACKGROUND, login_style
    screenshot(page, "01-login")

    log_in(page)
    style = styles(page, "#header")
    assert style["background"] == HEADER_BACKGROUND, style
    assert styles(page, "body")["font"].startswith('"Segoe UI", system-ui')
    # tasks are created by create_task(): no "Add" next to them
    assert page.locator("tr.model-task").count() == 1
    assert page.locator("tr.model-task a.addlink").count() == 0
    screenshot(page, "02-index")


def test_task_list_reads_well_in_a_1400px_window(page):
    done = finish(SumTask.create_task(1, 2), duration=0.012)
    slow = finish(EchoTask.create_task("slow"), duration=125.2)
    failed = finish(FailTask.create_task("boom"), fail=True, duration=3.42)
    cancelled_child = EchoTask.create_task("child of the failed one", parent=failed)
    long_param = EchoTask.create_task({"rows": [{"id": i, "name": f"row {i}"} for i in range(40)]})
    running = SleepTask.create_task(30)
    [claimed] = Task.queue.claim(POLLER, ["task_sleep"])
    Task.queue.heartbeat(claimed.lease)
    log_in(page)

    page.goto(LIST_PATH)
    assert page.locator(".object-tools a.addlink").count() == 0
    assert cell(page, done, "time") == "12 ms"
    assert cell(page, slow, "time") == "2 min 5 s"
    assert cell(page, failed, "time") == "3.4 s"
    assert cell(page, running, "time") == "-"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", cell(page, done, "created"))
    preview = cell(page, long_param, "param")
    assert preview.endswith("…") and len(preview) == 60
    assert cell(page, cancelled_child, "status").lower() == "cancelled"
    assert cell(page, cancelled_child, "parent") == f"#{failed.pk}"
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1400, f"the change list is {width}px wide"
    screenshot(page, "03-task-list")


def test_task_pages_are_read_only(page):
    parent = finish(SumTask.create_task(1, 2))
    running = SleepTask.create_task(30, parent=parent)
    Task.queue.heartbeat(Task.queue.claim(POLLER, ["task_sleep"])[0].lease)
    failed = finish(FailTask.create_task("boom"), fail=True)
    log_in(page)

    page.goto(f"{LIST_PATH}{running.pk}/change/")
    form = page.locator("#task_form")
    assert form.locator("input[name=_save], input[name=_continue]").count() == 0
    assert form.locator("textarea, select, input:not([type=hidden])").count() == 0
    heartbeat = page.locator(".inline-related .field-last_beat .readonly").inner_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", heartbeat.strip())
    age = page.locator(".inline-related .field-age .readonly").inner_text()
    assert re.fullmatch(r"\d+ s ago", age.strip())
    assert page.locator(".field-duration .readonly").inner_text().strip() == "-"
    param = page.locator(".field-param_json pre").inner_text()
    assert param == '{\n  "args": [\n    30\n  ],\n  "kwargs": {}\n}'
    screenshot(page, "04-running-task")

    page.goto(f"{LIST_PATH}{failed.pk}/change/")
    assert "RuntimeError: boom" in page.locator(".field-error_text pre").inner_text()
    assert page.locator("a.deletelink").count() == 1  # a superuser may still delete
    screenshot(page, "05-failed-task")


def test_actions_say_what_they_did(page):
    pending = SumTask.create_task(1, 2)
    done = finish(EchoTask.create_task("done"))
    parent = finish(FailTask.create_task("boom"), fail=True)
    child = EchoTask.create_task("child", parent=parent)
    assert Task.objects.get(pk=child.pk).status == "cancelled"
    log_in(page)

    assert select_and_run(page, "cancel_tasks", pending) == "success"
    assert page.inner_text("ul.messagelist li") == "1 task cancelled."
    assert cell(page, pending, "status").lower() == "cancelled"
    screenshot(page, "06-cancel-pending")

    assert select_and_run(page, "cancel_tasks", done) == "warning"
    assert page.inner_text("ul.messagelist li").startswith(
        "Nothing cancelled: the selected task had already finished"
    )
    assert cell(page, done, "status").lower() == "completed"
    screenshot(page, "07-cancel-finished")

    assert select_and_run(page, "requeue_tasks", parent) == "success"
    assert page.inner_text("ul.messagelist li") == "1 task requeued."
    assert cell(page, parent, "status").lower() == "pending"
    assert cell(page, child, "status").lower() == "pending"
    screenshot(page, "08-requeue-failed-parent")
