"""What a new user meets when pollers run: shutdown, faults, error messages, logs and
command-line mistakes. Real poller processes against the real database."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.db import connection
from example_tasks.models import FailTask, SleepTask, SumTask
from helpers import EXAMPLE_DIR, process_env, test_database_url, wait_for

from fullctl.django.models import Task, TaskHeartbeat

pytestmark = pytest.mark.django_db(transaction=True)


def final(task: Task, timeout: float = 30) -> Task:
    return task.wait(timeout=timeout)


def json_events(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


# -- shutdown -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [["-p", "2"], ["-w", "2"]])
def test_a_draining_poller_never_claims_again(start_poller, mode):
    """SIGTERM while long tasks run: they finish, and tasks created after the signal are
    left for other pollers (pending, no attempt used), in both modes."""
    poller = start_poller(*mode, "--grace-period", "30")
    long_tasks = [SleepTask.create_task(2.0) for _ in range(2)]
    wait_for(lambda: all(Task.objects.get(pk=t.pk).status == "running" for t in long_tasks))
    poller.signal(signal.SIGTERM)
    poller.wait_for_log("draining")
    later = [SumTask.create_task(i, i) for i in range(6)]
    assert poller.wait_exit(30) == 0
    for task in long_tasks:
        task.refresh_from_db()
        assert task.status == "completed"
    for task in later:
        task.refresh_from_db()
        assert (task.status, task.attempt, task.queue_id) == ("pending", 0, None)


# -- faults ---------------------------------------------------------------------------


def test_workers_killed_again_and_again_do_not_stall_the_pod(start_poller):
    """A chaos run: a random worker is SIGKILLed every 0.3 s while a backlog drains.
    Deaths after finished work are no crash loop: no slot waits, every task completes."""
    poller = start_poller("-p", "2")
    poller.wait_for_log("worker started")
    tasks = [SumTask.create_task(i, 1) for i in range(400)]
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        live = [pid for pid in poller.worker_pids() if _alive(pid)]
        if live:
            os.kill(random.choice(live), signal.SIGKILL)
        time.sleep(0.3)  # the chaos rhythm itself, not a wait for a condition
    wait_for(lambda: Task.objects.filter(pk__in=[t.pk for t in tasks],
                                         status="completed").count() == len(tasks), 60)
    assert "worker died (killed by SIGKILL)" in poller.output
    assert "slowing its restarts" not in poller.output


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_no_heartbeat_after_a_recorded_outcome(start_poller):
    """Beats every 10 ms against many short tasks: a beat never lands between a task's
    recorded outcome and the end of its tracking (it would stop a task that is done)."""
    poller = start_poller("-p", "2", env={"TASK_TRACK_INTERVAL_SECONDS": "0.01"})
    tasks = [SleepTask.create_task(0.02) for _ in range(150)]
    for task in tasks:
        assert final(task).status == "completed"
    assert "no longer ours" not in poller.output
    assert "task stopped" not in poller.output


def test_a_database_restart_costs_no_failed_beat(start_poller, postgresql_only):
    """Every connection of the poller is killed (what a server restart does to them):
    the next heartbeat, claim and sweep reconnect instead of failing once."""
    poller = start_poller("-p", "1")
    running = SleepTask.create_task(2.5)
    # the first beat is written: the heartbeat thread has its connection
    wait_for(lambda: TaskHeartbeat.objects.filter(task_id=running.pk).exists())
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 2  # the worker's connection and its heartbeat thread's
    assert final(running).status == "completed"
    assert final(SumTask.create_task(1, 1)).status == "completed"
    for failure in ("heartbeat not written", "database unavailable", "sweep skipped"):
        assert failure not in poller.output


# -- errors that say what is wrong ------------------------------------------------------


def _url_with(database: str, password: str | None = None) -> str:
    parts = urlsplit(test_database_url())
    netloc = parts.netloc
    if password:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':')[0]}:{password}@{host}"
    return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))


def test_a_missing_database_is_named_in_every_retry_line(start_poller, postgresql_only):
    name = f"fullctl_absent_{uuid.uuid4().hex[:8]}"
    poller = start_poller("-p", "1", env={"DATABASE_URL": _url_with(name, "s3cret-pw")})
    wait_for(lambda: poller.output.count("database unavailable") >= 2, 30)
    assert poller.process.poll() is None  # it keeps retrying: pods may start before the db
    retries = [line for line in poller.output.splitlines() if "database unavailable" in line]
    assert all(f'database "{name}" does not exist' in line for line in retries)
    assert "s3cret-pw" not in poller.output


@pytest.fixture
def empty_database(postgresql_only):
    """A database with no tables at all: what a poller sees before the migration job."""
    name = f"fullctl_empty_{uuid.uuid4().hex[:8]}"
    params = {k: v for k, v in connection.get_connection_params().items()
              if k not in ("cursor_factory", "context")}
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_an_unmigrated_schema_says_run_migrate(start_poller, empty_database):
    poller = start_poller("-p", "1", env={"DATABASE_URL": _url_with(empty_database)})
    # the supervisor's own row (django_fullctl_poller) may be the first to say so
    poller.wait_for_log("table django_fullctl_task does not exist: run manage.py migrate")
    missing = [line for line in poller.output.splitlines() if "does not exist" in line]
    assert all("run manage.py migrate" in line for line in missing)
    assert poller.process.poll() is None


def test_ops_the_poller_will_not_claim_are_logged_with_the_failing_qualifier(start_poller):
    poller = start_poller("-p", "1")  # the example settings do not qualify task_important
    poller.wait_for_log("worker started")
    skipped = [line for line in poller.output.splitlines() if "op not claimed here" in line]
    assert any("op=task_important" in line and "IMPORTANT_SETTING" in line for line in skipped)
    assert not any("op=task_sum" in line for line in skipped)


# -- logs -----------------------------------------------------------------------------


def test_json_logs_carry_stable_event_names_and_fields(start_poller):
    poller = start_poller("-p", "1", "--log-format", "json")
    final(SumTask.create_task(1, 2))
    final(FailTask.create_task())
    poller.wait_for_log('"event": "task.failed"')
    events = json_events(poller.output)
    by_name = {e["event"]: e for e in events}
    assert {"poller.started", "worker.started", "task.claimed", "task.completed",
            "task.failed"} <= by_name.keys()
    done = by_name["task.completed"]
    assert done["op"] == "task_sum" and done["task"] and done["worker"]
    assert isinstance(done["duration_ms"], float) and done["message"].startswith("task completed")
    failed = by_name["task.failed"]
    assert failed["level"] == "warning" and failed["error_class"]
    assert failed["error"] and failed["attempt"] == 1 and failed["op"] == "task_fail"


def test_exception_messages_can_be_kept_out_of_the_logs(start_poller):
    poller = start_poller("-p", "1", "--log-format", "json",
                          settings={"TASK_LOG_ERROR_MESSAGES": False})
    final(FailTask.create_task())
    poller.wait_for_log('"event": "task.failed"')
    [failed] = [e for e in json_events(poller.output) if e["event"] == "task.failed"]
    assert failed["error_class"] and "error" not in failed


def test_text_logs_keep_one_readable_line_per_event(start_poller):
    poller = start_poller("-p", "1")
    final(FailTask.create_task())
    line = poller.wait_for_log("task failed:").split("task failed:")[1].splitlines()[0]
    assert "op=task_fail" in line and "task=" in line and "worker=" in line
    assert "error_class=" in line and "event=" not in line


# -- the command line -------------------------------------------------------------------


def poll_tasks(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "fullctl_poll_tasks", *args],
        cwd=EXAMPLE_DIR, env=process_env(DATABASE_URL=test_database_url()),
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "1", "--health-port", "0"], "0 is not a port number (1-65535)"),
        (["-p", "1", "--health-port", "70000"], "70000 is not a port number (1-65535)"),
        (["-p", "0"], "--processes must be at least 1"),
        (["-p", "2", "-w", "2"], "give either --processes or --workers, not both"),
        (["-Q"], "fullctl_poll_tasks cannot be queued"),
    ],
)
def test_command_line_mistakes_exit_2_with_a_clean_message(args, message):
    result = poll_tasks(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_health_port_in_use_is_a_clean_error():
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = poll_tasks("-p", "1", "--health-port", str(port))
    assert result.returncode == 2
    assert f"--health-port {port}:" in result.stderr and "Traceback" not in result.stderr


def test_the_operator_command_without_its_extra_says_what_to_install():
    code = (
        "import sys; sys.modules['kopf'] = None\n"
        "import django; django.setup()\n"
        "from django.core.management import call_command\n"
        "call_command('fullctl_operator', '--', '--standalone')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=EXAMPLE_DIR, capture_output=True, text=True,
        env=process_env(DATABASE_URL=test_database_url()), timeout=60,
    )
    assert result.returncode != 0
    assert 'pip install "fullctl-tasks[operator]"' in result.stderr


def test_the_final_failure_of_a_crashed_task_is_a_warning_with_its_reason(start_poller):
    from tests.testapp.models import CrashTask

    poller = start_poller("-p", "1")
    task = final(CrashTask.create_task())  # kills its worker on both attempts
    assert task.status == "failed" and task.attempt == 2
    poller.wait_for_log(f"task failed task={task.pk}")
    failed = [row for row in poller.output.splitlines() if f"task failed task={task.pk}" in row]
    assert failed and "WARNING" in failed[0] and "reason=worker process" in failed[0]
    assert "op=task_crash" in failed[0] and "worker=" in failed[0]
