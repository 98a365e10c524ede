"""LISTEN/NOTIFY on PostgreSQL: wake-up hints for pollers and waiters (transport only).

The notifications are sent by a trigger on the task table (migration 0003), so every
write path sends them, in the writer's transaction (delivered on commit, identical ones
merged), without a round trip of its own. A notification is only ever a hint that
something may have changed: whoever waits re-runs its own check after it, and at a
backstop interval in case a hint was lost (a dropped connection, another database).
On other databases nothing is sent and waiting is plain polling. This module knows no
model: callers hand it the check.

LISTEN needs a session of its own, which a transaction-mode pooler (PgBouncer's
``pool_mode = transaction``) cannot give: behind one (``TASK_DATABASE_POOLER =
"transaction"``) the listening connection goes straight to PostgreSQL through
``TASK_LISTEN_DATABASE_URL``, and without that setting nobody listens: pollers and
``wait()`` poll, which this module says once per process.
"""

import asyncio
import logging
import time
from collections.abc import Callable

import psycopg
from asgiref.sync import sync_to_async
from django.db import connection

from django_fullctl import conf
from django_fullctl.db import is_postgresql
from django_fullctl.exceptions import TaskTimeout

log = logging.getLogger("django_fullctl.notify")

# the channels of the trigger in migrations/0003_notify_trigger.py
NEW_CHANNEL = "fullctl_task_new"  # payload: the op of a task that became runnable
DONE_CHANNEL = "fullctl_task_done"  # payload: the id of a task that reached a final status

# keys of Django's connection parameters that are not libpq/psycopg connection options
_DJANGO_ONLY_PARAMS = {"context", "cursor_factory", "server_side_binding", "pool", "assume_role"}


POLLING_REASON = (
    "TASK_DATABASE_POOLER is \"transaction\" and TASK_LISTEN_DATABASE_URL is not set:"
    " nothing listens for notifications, new and finished tasks are noticed by polling"
)


class ListenUnavailable(psycopg.OperationalError):
    """No connection may LISTEN here: the database is reached through a transaction-mode
    pooler and no direct listening connection is configured."""


def connection_params() -> dict:
    """psycopg connection arguments for the default database, as Django would connect."""
    params = connection.get_connection_params()
    return {k: v for k, v in params.items() if k not in _DJANGO_ONLY_PARAMS}


def listen_params() -> dict | None:
    """psycopg connection arguments of a listening connection: the default database's,
    with those of ``TASK_LISTEN_DATABASE_URL`` in their place when it is set; None behind
    a transaction-mode pooler without it (a LISTEN through the pooler would stay on a
    server connection that the next transaction of anyone may get)."""
    current = conf.settings()
    params = connection_params()
    if current.listen_database_url:
        params.update(psycopg.conninfo.conninfo_to_dict(current.listen_database_url))
        return params
    if current.database_pooler == "transaction":
        return None
    return params


_said_polling = False


def _say_polling() -> None:
    global _said_polling
    if not _said_polling:
        _said_polling = True
        log.warning("listening is off, polling: %s", POLLING_REASON,
                    extra={"event": "listener.polling"})


def can_listen() -> bool:
    """Whether this process may LISTEN: on PostgreSQL, unless only a transaction-mode
    pooler leads there (then it says once per process that it polls)."""
    if not is_postgresql():
        return False
    if listen_params() is None:
        _say_polling()
        return False
    return True


def listen(channel: str) -> psycopg.Connection:
    """A dedicated autocommit connection that listens on ``channel``: to the default
    database, or to ``TASK_LISTEN_DATABASE_URL`` when it is set. Raises
    ``ListenUnavailable`` (a ``psycopg.OperationalError``) behind a transaction-mode
    pooler without it: the caller polls."""
    params = listen_params()
    if params is None:
        _say_polling()
        raise ListenUnavailable(POLLING_REASON)
    listener = psycopg.connect(**params, autocommit=True)
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
    """Seconds to sleep before the next check; raises TaskTimeout once the deadline passed."""
    interval = conf.settings().wait_poll_interval
    if deadline is None:
        return interval
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TaskTimeout("the task did not finish in time")
    return min(interval, remaining)


def wait_until(check: Callable[[], bool], channel: str, timeout: float | None) -> None:
    """Re-run ``check`` on every notification on ``channel`` and at the backstop interval
    until it is true; ``TaskTimeout`` after ``timeout`` seconds."""
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
    if not can_listen():
        return None
    try:
        return listen(channel)
    except psycopg.OperationalError as exc:
        log.warning("cannot LISTEN on %s, polling instead: %s", channel, exc)
        return None


async def async_wait_until(
    check: Callable[[], bool], channel: str, timeout: float | None
) -> None:
    """``wait_until`` for the event loop: ``check`` (database reads) runs in a thread and
    the listener is an async connection, so the loop is never blocked."""
    deadline = _deadline(timeout)
    params = await sync_to_async(_async_listen_params)()
    listener = await _try_async_listen(params, channel)
    try:
        while not await sync_to_async(check)():
            pause = _next_wait(deadline)
            if listener is None:
                await asyncio.sleep(pause)
                continue
            try:
                async for _ in listener.notifies(timeout=pause, stop_after=1):
                    pass
            except psycopg.OperationalError:
                await listener.close()
                listener = await _try_async_listen(params, channel)
    finally:
        if listener is not None:
            await listener.close()


def _async_listen_params() -> dict | None:
    return listen_params() if can_listen() else None


async def _try_async_listen(params: dict | None, channel: str) -> psycopg.AsyncConnection | None:
    if params is None:
        return None
    try:
        listener = await psycopg.AsyncConnection.connect(**params, autocommit=True)
        await listener.execute(f"LISTEN {channel}")
        return listener
    except psycopg.OperationalError as exc:
        log.warning("cannot LISTEN on %s, polling instead: %s", channel, exc)
        return None
