"""Periodic tasks with real pollers on PostgreSQL: one task per tick however many pollers
run (the database's unique (schedule, tick) decides), a missed tick fires once when
pollers come back, and a tick whose task is at its limit is skipped and logged."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from example_tasks.models import PairTask
from helpers import wait_for

from django_fullctl import schedules
from django_fullctl.models import TaskScheduleRun
from fullctl.django.models import Task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgresql_only")]


def events(pollers, name: str) -> list[dict]:
    found = []
    for poller in pollers:
        for line in poller.output.splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == name:
                    found.append(record)
    return found


def database_now():
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def test_four_pollers_create_exactly_one_task_per_tick(start_poller):
    every_two = {"task": "task_sum", "cron": "*/2 * * * * *", "args": [20, 2]}
    pollers = [
        start_poller("-p", "1", "--log-format", "json",
                     settings={"TASK_SCHEDULES": {"every-2s": every_two}})
        for _ in range(4)
    ]
    runs = TaskScheduleRun.objects.filter(schedule="every-2s")
    # the first tick any poller sees is its baseline; then four fired ticks (about 8 s)
    wait_for(lambda: runs.filter(outcome="fired").count() >= 4, timeout=25)
    fired_events = events(pollers, "schedule.fired")
    rows = list(runs.order_by("tick"))
    assert rows[0].outcome == "baseline" and rows[0].task_id is None
    fired = [row for row in rows if row.outcome == "fired"]
    ticks = [row.tick for row in fired]
    assert len(set(ticks)) == len(ticks)
    assert all(tick.second % 2 == 0 and tick.microsecond == 0 for tick in ticks)
    tasks = Task.objects.filter(op="task_sum")
    assert tasks.count() == len(fired) == len({row.task_id for row in fired})
    assert {row.task_id for row in fired} == set(tasks.values_list("pk", flat=True))
    assert all(t.param == {"args": [20, 2], "kwargs": {}} for t in tasks)
    # one fired line per task, over all four pollers (the losers of a tick log nothing)
    assert sorted(e["task"] for e in fired_events) == sorted(row.task_id for row in fired)
    assert {e["schedule"] for e in fired_events} == {"every-2s"}


def test_ticks_missed_while_no_poller_ran_fire_once(start_poller):
    """The schedule last ran five hours ago: the pollers that come back create one task
    for the latest hourly tick, not one per missed tick."""
    hourly = schedules.Schedule("hourly", "task_sum", "0 * * * *", [1, 1])
    now = database_now()
    latest = schedules.previous_tick(hourly, now)
    for hours in range(6, 1, -1):
        TaskScheduleRun.objects.create(schedule="hourly", tick=latest - timedelta(hours=hours),
                                       outcome="fired", created=now - timedelta(hours=hours))
    setting = {"TASK_SCHEDULES": {"hourly": {"task": "task_sum", "cron": "0 * * * *",
                                             "args": [1, 1]}}}
    pollers = [start_poller("-p", "1", "--log-format", "json", settings=setting)
               for _ in range(2)]
    run = wait_for(lambda: TaskScheduleRun.objects.filter(schedule="hourly", tick=latest)
                   .exclude(task=None).first())
    task = Task.objects.get(pk=run.task_id).wait(timeout=20)
    assert task.status == "completed"
    for poller in pollers:  # both pollers have been through their schedules since
        wait_for(lambda p=poller: events([p], "schedules.watching"), timeout=20)
    assert TaskScheduleRun.objects.filter(schedule="hourly", tick__gt=latest - timedelta(
        hours=2)).count() == 1
    assert Task.objects.filter(op="task_sum").count() == 1
    assert len(events(pollers, "schedule.fired")) == 1


def test_a_tick_at_the_task_limit_is_skipped_and_logged(start_poller):
    """``PairTask`` allows one active task; one is waiting for its due time, so every tick
    of the schedule is skipped (and not retried), with a ``schedule.skipped`` line."""
    waiting = PairTask.configure(run_after=timedelta(hours=1)).create_task(1, 2)
    setting = {"TASK_SCHEDULES": {"pair": {"task": "task_pair", "cron": "* * * * * *",
                                           "args": [3, 4]}}}
    poller = start_poller("-p", "1", "--log-format", "json", settings=setting)
    skipped = wait_for(lambda: events([poller], "schedule.skipped"), timeout=20)
    assert skipped[0]["schedule"] == "pair" and skipped[0]["op"] == "task_pair"
    row = TaskScheduleRun.objects.get(schedule="pair", outcome="skipped",
                                      tick=skipped[0]["tick"])
    assert row.task_id is None
    assert list(PairTask.objects.values_list("pk", flat=True)) == [waiting.pk]
    assert events([poller], "schedule.fired") == []


def test_status_and_admin_show_the_schedules(admin_client, settings):
    """No poller: a handled tick in the table, and the schedule's next tick and last task
    in ``fullctl_tasks status`` (text and JSON) and on the admin's schedule runs page."""
    settings.TASK_SCHEDULES = {"sync-eu": {"task": "task_sum", "cron": "*/5 * * * *",
                                           "args": [1, 2]}}
    task = Task.objects.create(op="task_sum")
    now = database_now()
    tick = schedules.previous_tick(schedules.Schedule("x", "task_sum", "*/5 * * * *"), now)
    TaskScheduleRun.objects.create(schedule="sync-eu", tick=tick, task=task, created=now)
    out = io.StringIO()
    call_command("fullctl_tasks", "status", "--json", stdout=out)
    (entry,) = json.loads(out.getvalue())["schedules"]
    assert entry["name"] == "sync-eu" and entry["cron"] == "*/5 * * * *"
    assert entry["last_task_id"] == task.pk and entry["last_tick"] == tick.isoformat()
    assert entry["next_tick"] > entry["last_tick"]
    out = io.StringIO()
    call_command("fullctl_tasks", "status", stdout=out)
    assert "schedules: 1" in out.getvalue() and f"last task {task.pk}" in out.getvalue()
    page = admin_client.get("/admin/django_fullctl/taskschedulerun/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="fullctl-schedules"' in html and "sync-eu" in html and "*/5 * * * *" in html
    assert admin_client.get("/admin/django_fullctl/taskschedulerun/add/").status_code == 403
