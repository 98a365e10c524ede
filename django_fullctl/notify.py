"""LISTEN/NOTIFY on PostgreSQL: wake-up hints for pollers and waiters.

The notifications are sent by a trigger on the task table (migration 0003), so every
write path sends them, in the writer's transaction (delivered on commit, identical ones
merged), without a round trip of its own. A notification is only ever a hint that
something may have changed: whoever waits re-reads the database after it, and polls at
a backstop interval in case a hint was lost (a dropped connection, another database).
On other databases nothing is sent and waiting is plain polling.
"""

import asyncio
import logging
import time
from collections.abc import Callable

import psycopg
from asgiref.sync import sync_to_async
from django.db import connection

from django_fullctl import conf
from django_fullctl.exceptions import TaskTimeout

log = logging.getLogger("django_fullctl.notify")

# the channels of the trigger in migrations/0003_notify_trigger.py
NEW_CHANNEL = "fullctl_task_new"  # payload: the op of a task that became runnable
DONE_CHANNEL = "fullctl_task_done"  # payload: the id of a task that reached a final status

# keys of Django's connection parameters that are not libpq/psycopg connection options
_DJANGO_ONLY_PARAMS = {"context", "cursor_factory", "server_side_binding", "pool", "assume_role"}


def enabled() -> bool:
    return connection.vendor == "postgresql"


def connection_params() -> dict:
    """psycopg connection arguments for the default database, as Django would connect."""
    params = connection.get_connection_params()
    return {k: v for k, v in params.items() if k not in _DJANGO_ONLY_PARAMS}


def listen(channel: str) -> psycopg.Connection:
    """A dedicated autocommit connection that listens on ``channel``."""
    listener = psycopg.connect(**connection_params(), autocommit=True)
    listener.execute(f"LISTEN {channel}")
    return listener


def received(listener: psycopg.Connection) -> set[str]:
    """Payloads waiting on a listener whose socket is readable.

    Raises ``psycopg.OperationalError`` when the connection was lost. (A zero timeout
    would not read the socket at all, so neither notifications nor the loss would show.)
    """
    return {n.payload for n in listener.notifies(timeout=0.01, stop_after=1)}


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _next_wait(deadline: float | None) -> float:
    """Seconds to sleep before the next check; raises TimeoutError once the deadline passed."""
    interval = float(conf.get("TASK_WAIT_POLL_INTERVAL_SECONDS"))
    if deadline is None:
        return interval
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TaskTimeout("the task did not finish in time")
    return min(interval, remaining)


def _is_final(task_id: int) -> bool:
    from django_fullctl.models import FINAL_STATUSES, Task

    return Task.objects.filter(pk=task_id, status__in=FINAL_STATUSES).exists()


def wait_for_final(task_id: int, timeout: float | None) -> None:
    """Block until task ``task_id`` has a final status; TimeoutError after ``timeout`` s."""
    wait_until(lambda: _is_final(task_id), DONE_CHANNEL, timeout)


def wait_until(check: Callable[[], bool], channel: str, timeout: float | None) -> None:
    """Re-run ``check`` on every notification on ``channel`` and at the backstop interval."""
    deadline = _deadline(timeout)
    listener = _try_listen(channel)
    try:
        while not check():
            pause = _next_wait(deadline)
            if listener is None:
                time.sleep(pause)
                continue
            try:
                for _ in listener.notifies(timeout=pause, stop_after=1):
                    pass
            except psycopg.OperationalError:
                listener.close()
                listener = _try_listen(channel)
    finally:
        if listener is not None:
            listener.close()


def _try_listen(channel: str) -> psycopg.Connection | None:
    if not enabled():
        return None
    try:
        return listen(channel)
    except psycopg.OperationalError as exc:
        log.warning("cannot LISTEN on %s, polling instead: %s", channel, exc)
        return None


async def async_wait_for_final(task_id: int, timeout: float | None) -> None:
    """``wait_for_final`` for the event loop: database reads run in a thread, the
    listener is an async connection, so the loop is never blocked."""

    deadline = _deadline(timeout)
    is_pg = await sync_to_async(enabled)()
    params = await sync_to_async(connection_params)() if is_pg else None
    listener = await _try_async_listen(params)
    try:
        while not await sync_to_async(_is_final)(task_id):
            pause = _next_wait(deadline)
            if listener is None:
                await asyncio.sleep(pause)
                continue
            try:
                async for _ in listener.notifies(timeout=pause, stop_after=1):
                    pass
            except psycopg.OperationalError:
                await listener.close()
                listener = await _try_async_listen(params)
    finally:
        if listener is not None:
            await listener.close()


async def _try_async_listen(params: dict | None) -> psycopg.AsyncConnection | None:
    if params is None:
        return None
    try:
        listener = await psycopg.AsyncConnection.connect(**params, autocommit=True)
        await listener.execute(f"LISTEN {DONE_CHANNEL}")
        return listener
    except psycopg.OperationalError as exc:
        log.warning("cannot LISTEN on %s, polling instead: %s", DONE_CHANNEL, exc)
        return None
