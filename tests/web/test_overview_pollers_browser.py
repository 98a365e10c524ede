"""The queue overview's live pollers in a real browser (the server and browser fixtures of
conftest.py): a real poller running a task shows its busy slot, a pod the operator asked to
stop claiming says so, a silent poller is left out, and an op that no live poller claims
is called out in the table by op. The screenshot lands in ``tests/artifacts/screenshots/``."""

from datetime import timedelta

import pytest
from browserlib import log_in, require_browser, screenshot
from django.utils import timezone
from example_tasks.models import ImportantTask, SleepTask, SumTask
from helpers import wait_for

from django_fullctl.models import Poller
from django_fullctl.pollers import PollerReport

require_browser()

pytestmark = [pytest.mark.django_db(transaction=True)]

OVERVIEW_PATH = "/admin/django_fullctl/task/overview/"
POD = "fullctl-tasks-poller-default-7b9c8d6f5-x2x4z"
LEAVING = "fullctl-tasks-poller-default-7b9c8d6f5-q8r2t"


def cells(page, selector: str) -> list[str]:
    return [c.strip() for c in page.locator(f"{selector} td").all_inner_texts()]


def test_the_overview_shows_live_pollers_and_their_busy_slots(page, start_poller):
    poller = start_poller("-p", "2", env={"HOSTNAME": POD})
    sleeping = SleepTask.create_task(60)
    wait_for(lambda: (rows := Poller.fleet.by_host([POD]).get(POD)) and rows[0].busy_slots == 1)
    # a second pod, asked by the operator to stop claiming, that did; and one gone silent
    leaving = PollerReport(host=LEAVING, pid=1, worker_id=f"{LEAVING}:1", mode="workers",
                           ops=["task_sum", "task_echo"], slots=4, busy_slots=0)
    Poller.fleet.report(leaving)
    Poller.fleet.request_stop_claiming([LEAVING])
    Poller.fleet.report(PollerReport(**{**leaving.__dict__, "claiming_paused": True,
                                        "claiming_stopped": True}))
    Poller.fleet.report(PollerReport(host="vanished-pod", pid=1, worker_id="vanished-pod:1",
                                     mode="processes", ops=["task_important"], slots=2,
                                     busy_slots=2))
    Poller.objects.filter(host="vanished-pod").update(
        last_seen=timezone.now() - timedelta(minutes=10))
    important = ImportantTask.create_task()  # the real poller lacks its settings
    SumTask.create_task(1, 2).wait(timeout=30)

    log_in(page)
    page.goto(OVERVIEW_PATH)
    table = page.locator("#overview-pollers tbody tr")
    assert table.count() == 2  # the silent one is not live
    real = cells(page, f'#overview-pollers tr[data-poller="{POD}:{poller.process.pid}"]')
    assert real[0] == f"{POD}:{poller.process.pid}"
    assert real[1:4] == ["processes", "1 / 2", "claiming"]
    assert real[4].endswith("s ago")
    assert "task_sleep" in real[6] and "task_important" not in real[6]
    gone = cells(page, f'#overview-pollers tr[data-poller="{LEAVING}:1"]')
    assert gone[1:4] == ["workers", "0 / 4", "stopped claiming, as asked"]
    summary = page.locator("#overview-pollers").locator("xpath=preceding-sibling::p[1]")
    assert "2, 1 of 6 slots busy" in summary.inner_text()
    # the busy bar is half full for the real poller
    bar = page.locator(f'#overview-pollers tr[data-poller="{POD}:{poller.process.pid}"]'
                       " .slots span")
    assert bar.get_attribute("style") == "width: 50%"

    # by op: the important task waits for a poller that does not exist
    important_row = cells(page, f'#overview-ops tr[data-op="{important.op}"]')
    assert important_row[12] == "0 (not claimed)"
    sleep_row = cells(page, f'#overview-ops tr[data-op="{sleeping.op}"]')
    assert sleep_row[12] == "1"  # the real poller; the leaving one does not claim it
    screenshot(page, "admin_queue_overview_pollers")


def test_the_overview_without_pollers(page):
    SumTask.create_task(1, 1)
    log_in(page)
    page.goto(OVERVIEW_PATH)
    assert page.locator("#overview-no-pollers").is_visible()
    assert cells(page, '#overview-ops tr[data-op="task_sum"]')[12] == "0 (not claimed)"
