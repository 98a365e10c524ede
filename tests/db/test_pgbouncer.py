"""Behind a transaction-mode pooler (``TASK_DATABASE_POOLER = "transaction"``): the ORM
work needs no session, LISTEN goes to ``TASK_LISTEN_DATABASE_URL`` or not at all, and
prepared statements stay off unless asked for. The pooler is a real PgBouncer in
transaction mode that wipes every server connection after each transaction
(tests/pgbouncer.py); the settings' own rules need none."""

import asyncio
import json
import logging

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.core import checks as django_checks
from django.db import connection, connections
from django.db.backends.signals import connection_created
from django.test import override_settings
from example_tasks.models import LimitedTask, SumTask
from helpers import test_database_url, wait_for
from pgbouncer import (
    pgbouncer_fixture,  # noqa: F401 (the pgbouncer fixture)
    pooled_env,
    run_shell,
    start_shell,
)

from django_fullctl import checks, conf, notify
from django_fullctl.models import Task
from django_fullctl.poller.database import use_prepared_statements

pytestmark = pytest.mark.django_db(transaction=True)

POOLED = {"TASK_DATABASE_POOLER": "transaction"}


@pytest.fixture(autouse=True)
def polling_not_said_yet(monkeypatch):
    """The polling notice is said once per process: here, once per test."""
    monkeypatch.setattr(notify, "_said_polling", False)


# -- the pooler really is one ---------------------------------------------------------------


def test_the_pooler_forgets_prepared_statements_between_transactions(pgbouncer):
    """Why the poller's prepared statements are off behind it: PgBouncer before 1.21 (and
    any without max_prepared_statements) loses them with the server connection."""
    with psycopg.connect(pgbouncer.conninfo, autocommit=True) as pooled:
        assert pooled.execute("SELECT %s::int", [1]).fetchone() == (1,)  # not prepared
        # psycopg prepares in a round trip of its own and then runs the statement by name:
        # by then the server connection was handed on (and here wiped)
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            pooled.execute("SELECT %s::int", [2], prepare=True)


def test_a_listen_through_the_pooler_hears_nothing(pgbouncer):
    """Why LISTEN needs its own direct connection."""
    with psycopg.connect(pgbouncer.conninfo, autocommit=True) as pooled:
        pooled.execute(f"LISTEN {notify.NEW_CHANNEL}")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, 'task_sum')", [notify.NEW_CHANNEL])
        assert list(pooled.notifies(timeout=1)) == []


# -- the settings -----------------------------------------------------------------------------


@pytest.mark.portable
def test_bad_pooler_settings_are_system_check_errors():
    with override_settings(TASK_DATABASE_POOLER="statement",
                           TASK_LISTEN_DATABASE_URL="pg-direct secret-password"):
        errors = checks.check_settings()
    by_id = {e.id: e.msg for e in errors}
    assert set(by_id) == {checks.SETTING_IDS["TASK_DATABASE_POOLER"],
                          checks.SETTING_IDS["TASK_LISTEN_DATABASE_URL"]}
    assert "'statement' is not None, \"session\" or \"transaction\"" in by_id[
        checks.SETTING_IDS["TASK_DATABASE_POOLER"]]
    listen_error = by_id[checks.SETTING_IDS["TASK_LISTEN_DATABASE_URL"]]
    assert "libpq connection string" in listen_error
    assert "secret-password" not in listen_error  # a URL may hold a password


@pytest.mark.portable
@pytest.mark.parametrize("value, parsed", [
    (None, None), ("none", None), ("session", None), ("Transaction", "transaction"),
])
def test_pooler_values(value, parsed):
    with override_settings(TASK_DATABASE_POOLER=value):
        assert conf.settings().database_pooler == parsed


def test_session_state_settings_are_warnings_behind_a_transaction_pooler(postgresql_only):
    database = connection.settings_dict
    with override_settings(**POOLED):
        assert [w.id for w in checks.check_pooler()] == ["fullctl.W001"]
        database["OPTIONS"]["assume_role"] = "app"
        database["DISABLE_SERVER_SIDE_CURSORS"] = True
        try:
            assert [w.id for w in checks.check_pooler()] == ["fullctl.W002"]
        finally:
            del database["OPTIONS"]["assume_role"]
            database["DISABLE_SERVER_SIDE_CURSORS"] = False
    assert checks.check_pooler() == []  # no pooler: nothing to warn about
    assert checks.check_pooler in django_checks.registry.registry.get_checks()


@pytest.mark.portable
def test_prepared_statements_are_off_behind_a_transaction_pooler_unless_set():
    assert conf.prepare_threshold() == 2
    with override_settings(**POOLED):
        assert conf.prepare_threshold() == 0
    with override_settings(**POOLED, TASK_PREPARE_THRESHOLD=2):  # PgBouncer 1.21+
        assert conf.prepare_threshold() == 2


def test_the_poller_connections_prepare_nothing_behind_a_transaction_pooler(postgresql_only):
    try:
        with override_settings(**POOLED):
            use_prepared_statements()
            connection.close()
            connection.ensure_connection()
            assert connection.connection.prepare_threshold is None
    finally:
        connection_created.disconnect(dispatch_uid="fullctl.prepare_threshold")
        connection.close()


def test_the_listen_connection_takes_the_parameters_the_url_names(postgresql_only):
    default = notify.connection_params()
    assert notify.listen_params() == default
    with override_settings(**POOLED, TASK_LISTEN_DATABASE_URL="host=pg-direct port=6543"):
        params = notify.listen_params()
    assert params == {**default, "host": "pg-direct", "port": "6543"}  # name, user kept
    with override_settings(TASK_LISTEN_DATABASE_URL="postgresql://other@pg-direct/app"):
        params = notify.listen_params()
    assert (params["host"], params["user"], params["dbname"]) == ("pg-direct", "other", "app")


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_without_a_listen_url_nothing_listens_behind_a_transaction_pooler(postgresql_only):
    records = Records()
    notify.log.addHandler(records)
    try:
        with override_settings(**POOLED):
            assert notify.listen_params() is None
            assert not notify.can_listen()
            for _ in range(3):
                with pytest.raises(notify.ListenUnavailable) as raised:
                    notify.listen(notify.NEW_CHANNEL)
    finally:
        notify.log.removeHandler(records)
    assert isinstance(raised.value, psycopg.OperationalError)  # callers poll on those
    assert records.messages == [f"listening is off, polling: {notify.POLLING_REASON}"]


def test_wait_behind_a_transaction_pooler_without_a_listen_url_opens_no_connection(
        postgresql_only, monkeypatch):
    def no_connection(*args, **kwargs):
        raise AssertionError("a listening connection was opened")

    monkeypatch.setattr(notify, "listen", no_connection)  # wait()'s listener
    monkeypatch.setattr(psycopg.AsyncConnection, "connect", no_connection)  # async_wait()'s
    task = SumTask.create_task(1, 2)
    with override_settings(**POOLED, TASK_WAIT_POLL_INTERVAL_SECONDS=0.05):
        Task.queue.watch(task.pk)
        finish(task)
        assert task.wait(timeout=10).result == 3

        async def async_wait():
            await task.async_wait(timeout=10)
            await sync_to_async(connections.close_all)()  # the check's thread's connection

        asyncio.run(async_wait())


def test_listen_goes_to_the_listen_url(postgresql_only):
    direct = test_database_url()
    with override_settings(**POOLED, TASK_LISTEN_DATABASE_URL=direct):
        listener = notify.listen(notify.NEW_CHANNEL)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, 'task_sum')", [notify.NEW_CHANNEL])
        wait_for(lambda: "task_sum" in notify.received(listener), timeout=10)
    finally:
        listener.close()


# -- the ORM work through the pooler ----------------------------------------------------------

LIMIT_RACE = """
import json, threading
from django.db import connections
from example_tasks.models import LimitedTask
from fullctl.django.models import TaskLimitError
barrier, outcomes = threading.Barrier(12), []
def create():
    barrier.wait()
    try:
        LimitedTask.create_task("race")
        outcomes.append("created")
    except TaskLimitError:
        outcomes.append("refused")
    finally:
        connections.close_all()
threads = [threading.Thread(target=create) for _ in range(12)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(sorted(outcomes)))
"""


def test_task_limits_hold_through_the_pooler(pgbouncer):
    """Twelve creators at once, each transaction on whichever server connection is free:
    the limit's advisory lock lives in the transaction, so exactly one task is created."""
    out = run_shell(LIMIT_RACE, pooled_env(pgbouncer))
    outcomes = json.loads(out.strip().splitlines()[-1])
    assert outcomes == ["created"] + ["refused"] * 11
    assert LimitedTask.objects.filter(limit_id="race").count() == 1


QUEUE_ROUND = """
import json
from example_tasks.models import SumTask
from fullctl.django.models import Task
from django_fullctl.poller.database import use_prepared_statements
use_prepared_statements()  # what a worker does at start: off behind this pooler
results = []
for i in range(6):  # more than TASK_PREPARE_THRESHOLD claims and completions
    SumTask.create_task(i, i)
    [task] = Task.queue.claim("pooled:1", ["task_sum"])
    Task.queue.heartbeat(task.lease)
    assert Task.queue.complete(task.lease, task.run(*task.param["args"]), 0.01)
    results.append(Task.objects.get(pk=task.pk).result_data)
print(json.dumps(results))
"""


def test_claims_heartbeats_and_fenced_completions_through_the_pooler(pgbouncer):
    out = run_shell(QUEUE_ROUND, pooled_env(pgbouncer))
    assert json.loads(out.strip().splitlines()[-1]) == [0, 2, 4, 6, 8, 10]
    assert set(Task.objects.values_list("status", "attempt")) == {("completed", 1)}


def test_prepared_statements_forced_on_fail_through_an_old_pooler(pgbouncer):
    """TASK_PREPARE_THRESHOLD set by hand through a pooler without prepared statement
    support: the claim breaks, which is why the pooler setting turns them off."""
    with pytest.raises(AssertionError, match="prepared statement"):
        run_shell(QUEUE_ROUND, pooled_env(pgbouncer, TASK_PREPARE_THRESHOLD="2"))


WAIT = """
import sys
from fullctl.django.models import Task
task = Task.objects.get(pk={pk}).cast()
task.wait(timeout=60)
print("finished", task.status, task.result)
"""


def finish(task: Task) -> None:
    [claimed] = Task.queue.claim("w", [task.op])
    assert Task.queue.complete(claimed.lease, claimed.run(*claimed.param["args"]), 0.01)


def listeners_on(channel: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname ="
                       " current_database() AND query = %s", [f"LISTEN {channel}"])
        return cursor.fetchone()[0]


def test_wait_through_the_pooler_is_woken_on_the_listen_connection(pgbouncer, tmp_path):
    task = SumTask.create_task(2, 3)
    # the backstop poll is ten minutes away: returning at all means a notification came
    env = pooled_env(pgbouncer, FULLCTL_POOL_SETTINGS='{"TASK_WAIT_POLL_INTERVAL_SECONDS": 600}')
    waiter = start_shell(WAIT.format(pk=task.pk), env, tmp_path / "waiter.log")
    try:
        wait_for(lambda: listeners_on(notify.DONE_CHANNEL) == 1, timeout=30)
        wait_for(lambda: Task.objects.filter(pk=task.pk, waited=True).exists(), timeout=30)
        finish(task)
        assert waiter.wait(30) == 0
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert "finished completed 5" in (tmp_path / "waiter.log").read_text()


def test_wait_through_the_pooler_without_a_listen_url_polls(pgbouncer, tmp_path):
    task = SumTask.create_task(2, 2)
    env = pooled_env(pgbouncer, listen=False,
                     FULLCTL_POOL_SETTINGS='{"TASK_WAIT_POLL_INTERVAL_SECONDS": 0.2}')
    waiter = start_shell(WAIT.format(pk=task.pk), env, tmp_path / "waiter.log")
    try:
        wait_for(lambda: Task.objects.filter(pk=task.pk, waited=True).exists(), timeout=30)
        assert listeners_on(notify.DONE_CHANNEL) == 0
        finish(task)
        assert waiter.wait(30) == 0
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    output = (tmp_path / "waiter.log").read_text()
    assert "finished completed 4" in output
    assert output.count("listening is off, polling") == 1
