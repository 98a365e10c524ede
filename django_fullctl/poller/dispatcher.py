"""``--workers`` mode: the supervisor claims tasks and hands each to an idle worker.

The dispatcher listens for new-task notifications of its ops (with a polling backstop),
claims as many tasks as there is idle capacity, and sends each lease to a worker. A
worker's ``("done", lease)`` frees its capacity and triggers the next fetch at once.
While paused (the operator asked this pod to stop claiming, see ``Supervisor.refresh_row``)
it claims nothing; the workers finish what they were handed.
"""

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Protocol

import psycopg
from django.db import DatabaseError

from django_fullctl import notify
from django_fullctl.models import Task
from django_fullctl.poller.database import database_error, reconnecting
from django_fullctl.poller.logs import event
from django_fullctl.states import Lease


class Assignable(Protocol):
    """What the dispatcher needs of a worker: its pipe, and the lease it was handed."""

    conn: Connection
    assigned: Lease | None


class Dispatcher:
    def __init__(self, claimer_id: str, ops: Sequence[str], size: int, poll_interval: float):
        self.claimer_id = claimer_id
        self.ops = tuple(ops)
        self.size = size
        self.poll_interval = poll_interval
        self.listener: psycopg.Connection | None = None
        self.fetch_now = True
        self.next_fetch = 0.0
        self.release_first = False  # the next fetch is at a scheduled task's due time
        self.paused = False  # asked to stop claiming

    def pause(self, paused: bool) -> None:
        """Stop claiming (running tasks finish), or claim again, at once."""
        self.paused = paused
        if not paused:
            self.fetch_now = True

    def timeout(self, now: float) -> float:
        """Seconds until the next backstop fetch (paused: no fetch is due)."""
        if self.paused:
            return self.poll_interval
        return max(0.0, self.next_fetch - now)

    def wait_sources(self) -> list:
        """The listener to wait on (connecting it if needed)."""
        if self.listener is None and notify.can_listen():
            try:
                self.listener = notify.listen(notify.NEW_CHANNEL)
                self.fetch_now = True
            except psycopg.Error as exc:
                event("listener.failed", "cannot listen for new tasks", logging.WARNING,
                      error_class=type(exc).__name__)
        return [self.listener] if self.listener is not None else []

    def on_ready(self, ready: Sequence[object]) -> None:
        """Read the notifications that woke us: a task of our ops means fetch now."""
        if self.listener is None or self.listener not in ready:
            return
        try:
            if notify.received(self.listener) & set(self.ops):
                self.fetch_now = True
        except psycopg.Error:
            event("listener.lost", "listener connection lost, reconnecting", logging.WARNING)
            self.listener = None
            self.fetch_now = True

    def task_done(self, worker: Assignable) -> None:
        worker.assigned = None
        self.fetch_now = True

    def dispatch(
        self, idle: Sequence[Assignable], busy: int, start_worker: Callable[[], Assignable]
    ) -> None:
        """Claim tasks for idle capacity and hand each to an idle (or new) worker."""
        if self.paused:
            return
        now = time.monotonic()
        if not self.fetch_now and now < self.next_fetch:
            return
        self.fetch_now, self.next_fetch = False, now + self.poll_interval
        capacity = self.size - busy
        if capacity <= 0:
            return
        try:
            if self.release_first:
                self.release_first = False
                reconnecting(Task.queue.release_due)
            tasks = reconnecting(lambda: Task.queue.claim(self.claimer_id, self.ops, capacity))
            if len(tasks) < capacity:
                self.plan_release(now)
        except DatabaseError as exc:
            database_error("database.unavailable", "database unavailable", exc)
            return
        spare = list(idle)
        for task in tasks:
            worker = spare.pop() if spare else start_worker()
            worker.assigned = task.lease
            with contextlib.suppress(OSError):
                worker.conn.send(("run", task.lease))

    def plan_release(self, now: float) -> None:
        """Fetch again when the earliest scheduled task of our ops is due, releasing it
        first (sooner than the backstop poll, so a delayed task starts on time)."""
        due = Task.queue.seconds_until_due(self.ops)
        if due is None or now + due >= self.next_fetch:
            return
        self.next_fetch = now + max(due, 0.0)
        self.release_first = True

    def close(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(psycopg.Error):
                self.listener.close()
            self.listener = None
