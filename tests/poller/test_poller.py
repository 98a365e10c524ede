"""fullctl_poll_tasks as it runs in a pod: real processes, real signals, real PostgreSQL."""

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from django.db import connection
from example_tasks.models import EchoTask, ImportantTask, SleepTask, SumTask
from helpers import (
    EXAMPLE_DIR,
    final,
    process_env,
    running,
    test_database_url,
    wait_for,
    worker_pid,
)

from django_fullctl import notify
from fullctl.django.models import Task
from tests.testapp.models import CrashTask, ExitTask, StubbornTask

pytestmark = pytest.mark.django_db(transaction=True)


# the LISTEN connections of idle workers (each one's last query is its LISTEN)
LISTENERS = (
    "FROM pg_stat_activity WHERE datname = current_database()"
    f" AND query = 'LISTEN {notify.NEW_CHANNEL}'"
)


def database_clock():
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def listening(since) -> bool:
    """An idle worker connected since ``since`` listens: it claimed nothing and waits for
    a notification (listeners of an earlier test's pollers may not be gone yet)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) {LISTENERS} AND backend_start >= %s", [since])
        return cursor.fetchone()[0] > 0


def test_processes_mode_runs_tasks_and_logs_each_event(start_poller):
    poller = start_poller("--processes", "2")
    tasks = [SumTask.create_task(i, i) for i in range(10)]
    secret = EchoTask.create_task("top-secret-argument")
    for task in tasks:
        assert final(task).result == task.param["args"][0] * 2
    assert final(secret).status == "completed"
    poller.wait_for_log("task completed in")
    # two workers, whichever of them ran the tasks (one may take them all, each claiming
    # its next with the completion of the last)
    wait_for(lambda: len(poller.worker_pids()) == 2)
    log = poller.output
    assert f"task claimed task={tasks[0].pk} op=task_sum" in log
    assert "top-secret-argument" not in log
    poller.signal(signal.SIGTERM)
    assert poller.wait_exit() == 0
    assert "poller stopped" in poller.output


def test_new_task_wakes_an_idle_worker_through_notify(start_poller, postgresql_only):
    since = database_clock()
    start_poller("-p", "1", "--poll-interval", "600")
    # the worker claimed nothing and opened its listener: from here on only a notification
    # (or the backstop poll) makes it claim again
    wait_for(lambda: listening(since))
    # the backstop poll is 10 minutes away: finishing at all proves the notification woke it
    assert final(SumTask.create_task(2, 3), timeout=20).result == 5


def test_listener_connection_loss_is_repaired(start_poller, postgresql_only):
    since = database_clock()
    poller = start_poller("-p", "1", "--poll-interval", "600")
    final(SumTask.create_task(1, 1))
    wait_for(lambda: listening(since))  # the idle worker has opened its listener
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_terminate_backend(pid) {LISTENERS}")
    poller.wait_for_log("listener connection lost")
    assert final(SumTask.create_task(2, 2), timeout=20).result == 4


def test_database_connections_dropped_under_the_poller(start_poller, postgresql_only):
    poller = start_poller("-p", "2", "--poll-interval", "0.5")
    final(SumTask.create_task(1, 1))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    tasks = [SumTask.create_task(i, 1) for i in range(5)]
    for task in tasks:
        assert final(task).status == "completed"
    assert poller.process.poll() is None


def test_sigkill_of_a_worker_mid_task_requeues_it(start_poller):
    poller = start_poller("-p", "1")
    task = running(SleepTask.create_task(2))
    first_pid = worker_pid(task)
    os.kill(first_pid, signal.SIGKILL)
    final(task)
    assert task.status == "completed" and task.attempt == 2
    assert worker_pid(task) != first_pid
    assert "worker died (killed by SIGKILL)" in poller.output
    assert f"task requeued task={task.pk}" in poller.output


def test_a_task_that_keeps_killing_its_worker_fails_with_the_reason(start_poller):
    poller = start_poller("-p", "1")
    task = final(CrashTask.create_task())
    assert task.status == "failed" and task.attempt == 2
    assert "died (killed by SIGKILL)" in task.error and "gave up after 2 attempt" in task.error
    after = final(SumTask.create_task(1, 1))  # the pool goes on
    assert after.result == 2 and poller.process.poll() is None


def test_task_past_its_timeout_fails(start_poller):
    start_poller("-p", "1")
    task = final(SleepTask.create_task(30, timeout=1))
    assert task.status == "failed" and "timed out" in task.error
    assert task.time < 10


def test_task_ignoring_the_soft_timeout_gets_its_worker_killed(start_poller):
    poller = start_poller("-p", "1", env={"TASK_TIMEOUT_KILL_GRACE_SECONDS": "0.5"})
    task = final(StubbornTask.create_task(60, timeout=1))
    assert task.status == "failed" and "timed out" in task.error
    poller.wait_for_log("task timed out, worker killed")
    assert final(SumTask.create_task(2, 2)).result == 4  # a replacement worker took over
    assert len(poller.worker_pids()) == 2


def test_sigterm_lets_the_running_task_finish(start_poller):
    poller = start_poller("-p", "1", "--grace-period", "30")
    task = running(SleepTask.create_task(2))
    poller.signal(signal.SIGTERM)
    assert poller.wait_exit() == 0
    task.refresh_from_db()
    assert task.status == "completed"
    assert "draining" in poller.output


def test_sigterm_requeues_what_outlives_the_grace_period(start_poller):
    poller = start_poller("-p", "1", "--grace-period", "1")
    task = running(SleepTask.create_task(60))
    poller.signal(signal.SIGTERM)
    assert poller.wait_exit() == 0
    task.refresh_from_db()
    assert task.status == "pending" and task.attempt == 0  # no attempt used up
    assert "grace period over" in poller.output


def test_second_signal_stops_at_once_and_still_requeues(start_poller):
    poller = start_poller("-p", "1", "--grace-period", "60")
    task = running(SleepTask.create_task(60))
    poller.signal(signal.SIGTERM)
    poller.wait_for_log("draining")
    poller.signal(signal.SIGINT)
    assert poller.wait_exit(timeout=20) == 0
    task.refresh_from_db()
    assert task.status == "pending" and task.attempt == 0


def test_qualified_task_goes_to_the_poller_whose_settings_qualify(start_poller):
    plain = start_poller("-p", "1")
    qualified = start_poller(
        "-p", "1", settings={"IMPORTANT_SETTING": True, "IMPORTANT_LIST": ["xyz"]}
    )
    plain.wait_for_log("worker started")
    qualified.wait_for_log("worker started")
    assert "task_important" not in plain.output.split("poller started")[1].splitlines()[0]
    tasks = [ImportantTask.create_task() for _ in range(3)]
    for task in tasks:
        assert final(task).status == "completed"
        assert worker_pid(task) in qualified.worker_pids()


def test_unknown_ops_ahead_do_not_stall_the_queue(start_poller):
    for _ in range(30):
        Task.objects.create(op="task_from_another_service", param={"args": [], "kwargs": {}})
    start_poller("-p", "1")
    assert final(SumTask.create_task(1, 2)).result == 3
    assert Task.objects.filter(op="task_from_another_service", status="pending").count() == 30


def test_max_tasks_per_process_recycles_workers(start_poller):
    poller = start_poller("-p", "1", "-t", "2")
    tasks = [SumTask.create_task(i, 0) for i in range(6)]
    for task in tasks:
        final(task)
    assert len({worker_pid(t) for t in tasks}) == 3
    poller.wait_for_log("recycled after 2 tasks")


def test_workers_mode_assigns_claimed_tasks(start_poller):
    poller = start_poller("--workers", "2")
    tasks = [SleepTask.create_task(0.2) for _ in range(6)]
    for task in tasks:
        assert final(task).status == "completed"
    supervisor = poller.output.split("supervisor=")[1].split()[0]
    assert {t.queue_id for t in tasks} == {supervisor}
    assert len(poller.worker_pids()) <= 2


def test_orphaned_task_of_a_vanished_pod_is_rescued(start_poller):
    task = EchoTask.create_task("left behind")
    [claimed] = Task.queue.claim("vanished-pod:1", ["task_echo"])
    Task.queue.heartbeat(claimed.lease)
    start_poller("-p", "1", env={"TASK_ORPHANED_HEARTBEAT_TIMEOUT": "1"})
    final(task)
    assert task.status == "completed" and task.attempt == 2


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


def test_poller_liveness_endpoint(start_poller, unused_tcp_port):
    poller = start_poller("-p", "1", "--health-port", str(unused_tcp_port))
    url = f"http://127.0.0.1:{unused_tcp_port}/health"
    status, body = wait_for(lambda: (r := get(url))[0] and r)
    assert status == 200 and body["status"] == "ok"
    task = running(SleepTask.create_task(60))
    pid = worker_pid(task)
    os.kill(pid, signal.SIGSTOP)  # a wedged worker: no more heartbeats
    try:
        status, body = wait_for(lambda: (r := get(url))[0] == 503 and r, timeout=20)
        assert body["stuck_workers"]
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: get(url)[0] == 200, timeout=20)
    assert poller.process.poll() is None


def test_app_health_fails_when_a_whole_poller_pod_vanishes(start_poller, client, settings):
    settings.HEALTH_CHECK_TASK_INTERVAL_SECONDS = 1
    poller = start_poller("-p", "1")
    task = running(SleepTask.create_task(60))
    assert client.get("/health").status_code == 200
    os.killpg(poller.process.pid, signal.SIGKILL)  # supervisor and workers, at once
    response = wait_for(lambda: (r := client.get("/health")).status_code == 503 and r)
    assert response.json()["checks"]["heartbeats"]["stale_task_ids"] == [task.pk]


def test_database_outage_is_ridden_out(start_poller, db_proxy, unused_tcp_port):
    poller = start_poller(
        "-p", "2", "--poll-interval", "0.5", "--health-port", str(unused_tcp_port),
        env={"DATABASE_URL": db_proxy.url},
    )
    assert final(SumTask.create_task(1, 1)).result == 2
    db_proxy.cut()
    tasks = [SumTask.create_task(i, 1) for i in range(5)]  # the test's own path still works
    poller.wait_for_log("database unavailable, retrying")
    # liveness must not fail because of the database: that would restart every pod
    assert get(f"http://127.0.0.1:{unused_tcp_port}/health")[0] == 200
    db_proxy.restore()
    for task in tasks:
        assert final(task).status == "completed"
    assert poller.process.poll() is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "-1"], "--processes must not be negative"),
        (["-w", "0"], "give --processes or --workers a value above 0"),
        (["-p", "1", "--poll-interval", "0"], "--poll-interval must be positive"),
        (["-p", "two"], "invalid int value"),
    ],
)
def test_bad_options_are_refused_clearly(args, message):
    result = subprocess.run(
        [sys.executable, "manage.py", "fullctl_poll_tasks", *args],
        cwd=EXAMPLE_DIR, env=process_env(DATABASE_URL=test_database_url()),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_database_refusing_writes_is_ridden_out(start_poller, postgresql_only):
    """What a full disk looks like from here: every write fails, reads still work."""
    poller = start_poller("-p", "1", "--poll-interval", "0.5")
    assert final(SumTask.create_task(1, 1)).result == 2

    def set_read_only(on: bool) -> None:
        with connection.cursor() as cursor:
            name = connection.settings_dict["NAME"]
            action = "SET default_transaction_read_only = on" if on else "RESET ALL"
            cursor.execute(f'ALTER DATABASE "{name}" {action}')
            cursor.execute(  # the poller's sessions reconnect with the new default
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )

    set_read_only(True)
    try:
        task = SumTask.create_task(2, 2)  # this session was opened before: it may still write
        poller.wait_for_log("database unavailable, retrying")
        task.refresh_from_db()
        assert task.status == "pending"
    finally:
        set_read_only(False)
    assert final(task).result == 4
    assert poller.process.poll() is None


def test_cancelling_a_running_task_stops_it_and_frees_the_worker(start_poller):
    poller = start_poller("-p", "1")
    task = running(SleepTask.create_task(60))
    task.cancel("not needed any more")
    poller.wait_for_log(f"task stopped: it was cancelled or given to another worker task={task.pk}")
    assert final(SumTask.create_task(3, 4)).result == 7  # the only worker is free again
    task.refresh_from_db()
    assert task.status == "cancelled" and task.error == "not needed any more"


def test_a_task_calling_sys_exit_fails_without_killing_its_worker(start_poller):
    poller = start_poller("-p", "1")
    exiting = final(ExitTask.create_task(3))
    assert exiting.status == "failed" and "SystemExit: 3" in exiting.error
    assert len(poller.worker_pids()) == 1
