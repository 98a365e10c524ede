"""The worker's tracking thread: it writes the running task's heartbeat every
``TASK_TRACK_INTERVAL_SECONDS`` and shows each beat to the supervisor through the slot,
even when the database is away, so liveness reflects this process and not the database.

When a beat finds that the lease no longer holds (the task was cancelled, or rescued
and claimed again), it marks that lease lost and signals its own process, whose
``SIGUSR1`` handler stops the task only if that very lease is still running.
"""

import logging
import os
import signal
import threading

from django.db import DatabaseError, connections

from django_fullctl import conf
from django_fullctl.models import Task
from django_fullctl.poller.database import database_error, reconnecting
from django_fullctl.poller.logs import event
from django_fullctl.poller.slot import Slot
from django_fullctl.states import Lease


class HeartbeatTracker(threading.Thread):
    def __init__(self, slot: Slot):
        super().__init__(name="heartbeat", daemon=True)
        self.slot = slot
        self.current: Lease | None = None
        self.lost: Lease | None = None  # a lease whose row says it is no longer ours
        self.wake = threading.Event()
        self.stopping = False

    def track(self, lease: Lease | None) -> None:
        """Follow ``lease`` (None: nothing). The first beat comes within one interval: the
        claim's ``started`` covers the time before it, and short tasks never need one."""
        self.current = lease

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        self.join(timeout=5)

    def run(self) -> None:
        while not self.stopping:
            current = self.current
            if current is not None:
                self.beat(current)
            self.wake.wait(conf.settings().track_interval)
            self.wake.clear()
        connections.close_all()

    def beat(self, lease: Lease) -> None:
        try:
            if not reconnecting(lambda: Task.queue.heartbeat(lease)) and self.current == lease:
                event("task.lost", "task is no longer ours: stopping it", logging.WARNING,
                      task=lease.task_id, attempt=lease.attempt)
                self.lost = lease
                os.kill(os.getpid(), signal.SIGUSR1)
        except DatabaseError as exc:
            database_error("heartbeat.failed", "heartbeat not written", exc,
                           task=lease.task_id)
        self.slot.beat()
