"""Real pollers whose ORM goes through a transaction-mode PgBouncer (tests/pgbouncer.py:
every transaction on any of a few server connections, each wiped after every
transaction), with ``TASK_DATABASE_POOLER=transaction`` and, unless a test leaves it out,
``TASK_LISTEN_DATABASE_URL`` straight to the test database."""

import os
import re
import signal
from collections import Counter

import pytest
from django.db import connection
from example_tasks.models import EchoTask, SleepTask, SumTask
from helpers import final, running, wait_for
from pgbouncer import (
    pgbouncer_fixture,  # noqa: F401 (the pgbouncer fixture)
    pooled_settings,
)

from django_fullctl import notify
from fullctl.django.models import Task, TaskHeartbeat

pytestmark = pytest.mark.django_db(transaction=True)


def database_clock():
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def listeners_since(since, channel: str = notify.NEW_CHANNEL) -> int:
    """Connections to the database (not through the pooler, which never runs a LISTEN
    for us) opened since ``since`` whose last statement is a LISTEN on ``channel``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query = %s AND backend_start >= %s", [f"LISTEN {channel}", since])
        return cursor.fetchone()[0]


def no_database_trouble(log: str) -> bool:
    return "database unavailable" not in log and "prepared statement" not in log


def test_a_batch_is_drained_through_the_pooler_each_task_run_once(pgbouncer, start_poller):
    poller = start_poller("--processes", "3", env=pooled_settings(pgbouncer))
    tasks = [EchoTask.create_task(i) for i in range(40)]
    for task in tasks:
        assert final(task).status == "completed"
    assert [t.result for t in tasks] == list(range(40))
    assert {t.attempt for t in tasks} == {1}
    claims = Counter(int(pk) for pk in re.findall(r"task claimed task=(\d+) ", poller.output))
    assert claims == Counter({t.pk: 1 for t in tasks})
    assert no_database_trouble(poller.output), poller.output


def test_workers_mode_through_the_pooler(pgbouncer, start_poller):
    poller = start_poller("--workers", "2", env=pooled_settings(pgbouncer))
    tasks = [SumTask.create_task(i, 1) for i in range(10)]
    assert [final(t).result for t in tasks] == [i + 1 for i in range(10)]
    assert no_database_trouble(poller.output), poller.output


def test_an_idle_worker_is_woken_through_the_listen_connection(pgbouncer, start_poller):
    since = database_clock()
    poller = start_poller("-p", "1", "--poll-interval", "600", env=pooled_settings(pgbouncer))
    # the worker claimed nothing and listens, straight to PostgreSQL
    wait_for(lambda: listeners_since(since) == 1)
    # the backstop poll is ten minutes away: finishing at all proves the notification
    assert final(SumTask.create_task(2, 3), timeout=20).result == 5
    assert "listening is off" not in poller.output


def test_heartbeats_and_the_rescue_of_a_dead_workers_task(pgbouncer, start_poller):
    poller = start_poller("-p", "1", env=pooled_settings(pgbouncer))
    task = running(SleepTask.create_task(3))
    first = wait_for(lambda: TaskHeartbeat.objects.filter(task_id=task.pk).first())
    wait_for(lambda: TaskHeartbeat.objects.get(task_id=task.pk).timestamp > first.timestamp)
    first_pid = int(task.queue_id.rsplit(":", 1)[1])
    os.kill(first_pid, signal.SIGKILL)
    final(task)
    assert task.status == "completed" and task.attempt == 2
    assert f"task requeued task={task.pk}" in poller.output


def test_an_orphaned_task_is_rescued_by_the_sweep(pgbouncer, start_poller):
    task = EchoTask.create_task("left behind")
    [claimed] = Task.queue.claim("vanished-pod:1", ["task_echo"])
    Task.queue.heartbeat(claimed.lease)
    start_poller("-p", "1", env={**pooled_settings(pgbouncer),
                                 "TASK_ORPHANED_HEARTBEAT_TIMEOUT": "1"})
    final(task)
    assert task.status == "completed" and task.attempt == 2


def test_without_a_listen_url_the_poller_polls_and_says_so_once(pgbouncer, start_poller):
    since = database_clock()
    poller = start_poller("-p", "1", "--poll-interval", "0.3",
                          env=pooled_settings(pgbouncer, listen=False))
    first = final(SumTask.create_task(1, 1))
    poller.wait_for_log("listening is off, polling")
    # a task created while the worker sleeps between polls is found by the next poll
    assert final(SumTask.create_task(2, 2)).result == 4
    assert first.result == 2
    assert poller.output.count("listening is off, polling") == 1
    assert listeners_since(since) == 0


@pytest.mark.parametrize("mode", [
    ["-p", "1"],
    ["--workers", "1"],
], ids=["processes", "workers"])
def test_a_polling_poller_does_not_warn_on_every_poll(pgbouncer, start_poller, mode):
    poller = start_poller(*mode, "--poll-interval", "0.3",
                          env=pooled_settings(pgbouncer, listen=False))
    for i in range(3):  # each found by a poll
        assert final(SumTask.create_task(i, i)).result == 2 * i
    assert "cannot listen for new tasks" not in poller.output
