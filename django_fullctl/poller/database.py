"""Riding out database outages: the one way the poller logs a database error and drops
its connections, and the retry loop built on it."""

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connections

from django_fullctl.poller.logs import event


def close_connections() -> None:
    """Drop every connection of this thread; the next query reconnects."""
    with contextlib.suppress(Exception):
        connections.close_all()


def database_error(message: str, exc: DatabaseError, **fields: Any) -> None:
    """Log a database error as a warning and drop the (probably broken) connections."""
    event(message, logging.WARNING, error=type(exc).__name__, **fields)
    close_connections()


def retry_db(action: Callable[[], Any], give_up: Callable[[], bool]) -> Any:
    """Run ``action`` until the database answers, backing off to 10 s between tries.

    Returns None if ``give_up()`` turns true while waiting (e.g. the worker drains).
    """
    delay = 0.5
    while True:
        try:
            return action()
        except DatabaseError as exc:
            database_error("database unavailable, retrying", exc, retry_in=f"{delay:g}s")
        if give_up():
            return None
        time.sleep(delay)
        delay = min(delay * 2, 10.0)
