"""Riding out database outages: the one way the poller logs a database error and drops
its connections, the retry loop built on it, and a reconnect after a server restart."""

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.db.backends.signals import connection_created

from django_fullctl import conf
from django_fullctl.db import describe_error
from django_fullctl.poller import metrics
from django_fullctl.poller.logs import event

T = TypeVar("T")


def close_connections() -> None:
    """Drop every connection of this thread; the next query reconnects."""
    with contextlib.suppress(Exception):
        connections.close_all()


def database_error(name: str, message: str, exc: DatabaseError, **fields: Any) -> None:
    """Log a database error as a warning (its class and what the server said) and drop
    the (probably broken) connections."""
    metrics.count_db_error(name)  # this process's table: a worker's slot, the supervisor's
    event(name, message, logging.WARNING, error_class=type(exc).__name__,
          error=describe_error(exc), **fields)
    close_connections()


def use_prepared_statements() -> None:
    """Let this process's database connections prepare their statements on the server
    after ``TASK_PREPARE_THRESHOLD`` executions (Django turns it off by default, for
    poolers): the claim and the record are then planned once, not on every task. A
    project's own ``OPTIONS["prepare_threshold"]`` wins.

    Behind a transaction-mode pooler (``TASK_DATABASE_POOLER = "transaction"``) they stay
    off unless ``TASK_PREPARE_THRESHOLD`` is set: PgBouncer before 1.21 (Debian 12 has
    1.18) hands the next transaction to a server connection that never saw the statement.
    With PgBouncer 1.21 or later and ``max_prepared_statements`` above 0, set it to turn
    them back on."""
    threshold = conf.prepare_threshold()
    if not threshold:
        return

    def prepare(sender: Any, connection: Any, **kwargs: Any) -> None:
        if connection.vendor != "postgresql":
            return
        if "prepare_threshold" in connection.settings_dict.get("OPTIONS", {}):
            return
        connection.connection.prepare_threshold = threshold

    connection_created.connect(prepare, weak=False, dispatch_uid="fullctl.prepare_threshold")


def reconnecting(action: Callable[[], T]) -> T:
    """Run ``action``; if the connection it used had died meanwhile (a database restart
    between two uses of a long-lived connection), reconnect and run it once more.

    A live server answers the second try, so a restart costs no failed heartbeat or
    claim; when the server is really away, the second error is raised to the caller.
    """
    try:
        return action()
    except (OperationalError, InterfaceError):
        close_connections()
        return action()


def retry_db(action: Callable[[], Any], give_up: Callable[[], bool]) -> Any:
    """Run ``action`` until the database answers, backing off to 10 s between tries.

    Returns None if ``give_up()`` turns true while waiting (e.g. the worker drains).
    """
    delay = 0.5
    while True:
        try:
            return reconnecting(action)
        except DatabaseError as exc:
            database_error("database.unavailable", "database unavailable, retrying", exc,
                           retry_in=f"{delay:g}s")
        if give_up():
            return None
        time.sleep(delay)
        delay = min(delay * 2, 10.0)
