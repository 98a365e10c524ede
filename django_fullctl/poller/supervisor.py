"""The supervisor: starts and replaces worker processes, enforces timeouts, rescues tasks.

It never runs a task itself. It notices a dead worker at once (its process sentinel)
and rescues that worker's task; it kills a worker whose task outlived its timeout; it
sweeps orphaned tasks of vanished pods; on SIGTERM it drains (see ``begin_drain``).
Everything it waits on — worker pipes, process sentinels, the LISTEN connection, the
signal wake-up socket — goes through one ``wait()`` call per loop. What a worker runs
it reads from the worker's shared ``Slot``, so running a task costs it nothing.
"""

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

import psycopg
from django.db import DatabaseError

from django_fullctl import conf, notify, queue, runner
from django_fullctl.models import Task
from django_fullctl.poller.logs import event
from django_fullctl.poller.spawn import Slot, WorkerConfig, worker_main
from django_fullctl.poller.worker import close_connections

# crashes within this window slow down the restarts (up to MAX_RESTART_DELAY)
CRASH_WINDOW = 60.0
MAX_RESTART_DELAY = 30.0


@dataclass(frozen=True)
class PollerOptions:
    processes: int  # self-claiming workers (--processes)
    workers: int  # supervisor-assigned workers (--workers)
    max_tasks: int
    poll_interval: float
    grace_period: float
    log_format: str = "text"

    @property
    def size(self) -> int:
        return self.processes or self.workers


@dataclass
class WorkerHandle:
    process: multiprocessing.Process
    conn: Connection
    slot: Slot
    id: str
    # --workers mode: the (id, attempt) handed to this worker, until it reports it done
    assigned: tuple[int, int] | None = None
    killed_for_timeout: bool = False

    @property
    def busy(self) -> bool:
        return self.assigned is not None or self.slot.read() is not None


class Supervisor:
    def __init__(self, options: PollerOptions, ops: list[str]):
        self.options = options
        self.ops = tuple(ops)
        self.id = conf.worker_id(pid=os.getpid())
        self.context = multiprocessing.get_context("spawn")
        self.handles: list[WorkerHandle] = []
        self.crashes: deque[float] = deque()
        self.next_start = 0.0
        self.draining = False
        self.stopping = False
        self.drain_deadline = 0.0
        self.loop_beat = time.monotonic()
        self.fetch_now = True
        self.next_fetch = 0.0
        self.next_sweep = 0.0
        self.listener: psycopg.Connection | None = None
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)

    # -- lifecycle -------------------------------------------------------------

    def run(self) -> int:
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        mode = "processes" if self.options.processes else "workers"
        event("poller started", supervisor=self.id, mode=mode, size=self.options.size,
              ops=",".join(self.ops) or "-")
        if not self.ops:
            event("no registered task class qualifies in these settings", logging.WARNING)
        while not self.stopping:
            self.loop_beat = time.monotonic()
            self.pump(self.next_timeout())
            self.reap()
            self.enforce_timeouts()
            if self.draining:
                if not self.handles:
                    break
                if time.monotonic() >= self.drain_deadline:
                    event("grace period over, stopping workers", logging.WARNING)
                    break
                continue
            self.start_missing()
            self.assign()
            self.sweep()
        self.shutdown()
        return 0

    def on_signal(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.draining:
            event(f"{name} again: stopping now", logging.WARNING)
            self.stopping = True
            return
        self.begin_drain(name)

    def begin_drain(self, why: str) -> None:
        """Stop claiming; running tasks may finish within the grace period."""
        self.draining = True
        self.drain_deadline = time.monotonic() + self.options.grace_period
        busy = sum(1 for h in self.handles if h.busy)
        event(f"{why}: draining", busy=busy, grace_period=f"{self.options.grace_period:g}s")
        for handle in self.handles:
            self.tell(handle, "drain")

    def shutdown(self) -> None:
        """Kill what is left and requeue its tasks without using an attempt."""
        for handle in list(self.handles):
            if handle.process.is_alive():
                handle.process.kill()
            handle.process.join(5)
            self.release(handle, "requeue")
        self.handles.clear()
        if self.listener is not None:
            with contextlib.suppress(psycopg.Error):
                self.listener.close()
        event("poller stopped", supervisor=self.id)
        close_connections()

    # -- waiting -----------------------------------------------------------------

    def next_timeout(self) -> float:
        timeout = min(1.0, self.options.poll_interval)
        if self.options.workers and not self.draining:
            timeout = max(0.0, min(timeout, self.next_fetch - time.monotonic()))
        return timeout

    def pump(self, timeout: float) -> None:
        """Wait for any event, then read every pending worker message and notification."""
        listener = self.ensure_listener()
        sources: list = [self.wake_r] + [h.conn for h in self.handles]
        sources += [h.process.sentinel for h in self.handles]
        if listener is not None:
            sources.append(listener)
        ready = wait(sources, timeout)
        if self.wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                self.wake_r.recv(4096)
        for handle in self.handles:
            if handle.conn in ready:
                self.read(handle)
        if listener is not None and listener in ready:
            try:
                if notify.received(listener) & set(self.ops):
                    self.fetch_now = True
            except psycopg.Error:
                event("listener connection lost, reconnecting", logging.WARNING)
                self.listener = None
                self.fetch_now = True

    def ensure_listener(self) -> psycopg.Connection | None:
        """Only the ``--workers`` supervisor claims, so only it listens."""
        if self.options.workers and self.listener is None and notify.enabled():
            try:
                self.listener = notify.listen(notify.NEW_CHANNEL)
                self.fetch_now = True
            except psycopg.Error as exc:
                event("cannot listen for new tasks", logging.WARNING, error=type(exc).__name__)
        return self.listener

    def read(self, handle: WorkerHandle) -> None:
        """Messages from a ``--workers`` worker: ``("done", task_id)``."""
        with contextlib.suppress(EOFError, OSError):
            while handle.conn.poll():
                if handle.conn.recv()[0] == "done":
                    handle.assigned = None
                    self.fetch_now = True

    def tell(self, handle: WorkerHandle, *message: object) -> None:
        with contextlib.suppress(OSError):
            handle.conn.send(message)

    # -- workers ----------------------------------------------------------------

    def start_worker(self) -> WorkerHandle:
        parent_conn, child_conn = self.context.Pipe()
        slot = Slot(self.context)
        config = WorkerConfig(
            self_claiming=bool(self.options.processes), ops=self.ops,
            max_tasks=self.options.max_tasks, poll_interval=self.options.poll_interval,
            log_format=self.options.log_format,
        )
        process = self.context.Process(
            target=worker_main, args=(child_conn, slot, config), name="fullctl-worker"
        )
        process.start()
        child_conn.close()
        handle = WorkerHandle(process, parent_conn, slot, conf.worker_id(pid=process.pid))
        self.handles.append(handle)
        return handle

    def start_missing(self) -> None:
        """Keep ``--processes`` workers running; restarts slow down when workers keep dying."""
        if not self.options.processes or time.monotonic() < self.next_start:
            return
        while len(self.handles) < self.options.processes:
            self.start_worker()

    def reap(self) -> None:
        for handle in [h for h in self.handles if not h.process.is_alive()]:
            handle.process.join()
            self.handles.remove(handle)
            code = handle.process.exitcode
            with contextlib.suppress(OSError):
                handle.conn.close()
            if code == 0 or handle.killed_for_timeout:
                continue
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            event(f"worker died ({how})", logging.WARNING, worker=handle.id)
            self.release(handle, "rescue", f"worker process {handle.id} died ({how})")
            self.note_crash()

    def note_crash(self) -> None:
        now = time.monotonic()
        self.crashes.append(now)
        while self.crashes and self.crashes[0] < now - CRASH_WINDOW:
            self.crashes.popleft()
        if len(self.crashes) > 2:
            delay = min(2.0 ** (len(self.crashes) - 2), MAX_RESTART_DELAY)
            self.next_start = now + delay
            event("workers keep dying, slowing restarts", logging.WARNING, delay=f"{delay:g}s")

    def release(self, handle: WorkerHandle, how: str, reason: str = "") -> None:
        """Give a stopped worker's tasks back: ``rescue`` (a crash: counts an attempt,
        may fail the task) or ``requeue`` (a shutdown: no attempt used).

        The database says what the worker held: a self-claiming worker's ``queue_id``
        covers even a task it claimed but had not shown in its slot yet.
        """
        try:
            if self.options.processes:
                held = queue.running_tasks(queue_ids=[handle.id])
            elif handle.assigned:
                held = [t for t in queue.running_tasks(queue_ids=[self.id])
                        if (t.id, t.attempt) == handle.assigned]
            else:
                held = []
            for item in held:
                if how == "rescue":
                    outcome = queue.rescue(item.as_task(), reason)
                else:
                    requeued = queue.requeue(
                        item.as_task(), "poller shut down", count_attempt=False
                    )
                    outcome = "requeued" if requeued else None
                if outcome:
                    event(f"task {outcome}", task=item.id, op=item.op, worker=handle.id)
        except DatabaseError as exc:
            # the orphan sweep (or the operator) rescues them once the database is back
            event("could not release tasks", logging.WARNING, error=type(exc).__name__)
            close_connections()
        handle.assigned = None

    def enforce_timeouts(self) -> None:
        """Kill a worker whose task ignored the soft stop, and fail that task."""
        grace = float(conf.get("TASK_TIMEOUT_KILL_GRACE_SECONDS"))
        now = time.monotonic()
        for handle in self.handles:
            ref = handle.slot.read()
            if ref is None or not ref.timeout or now - ref.since < ref.timeout + grace:
                continue
            handle.process.kill()
            handle.killed_for_timeout = True
            event("task timed out, worker killed", logging.WARNING, task=ref.id,
                  worker=handle.id, timeout=f"{ref.timeout:g}s")
            try:
                error = runner.timeout_error(ref.timeout)
                queue.fail(Task(pk=ref.id, attempt=ref.attempt), error)
            except DatabaseError:
                close_connections()

    # -- claiming (--workers) and sweeping ------------------------------------

    def assign(self) -> None:
        """Claim tasks for idle capacity and hand each to an idle (or new) worker."""
        if not self.options.workers:
            return
        now = time.monotonic()
        if not self.fetch_now and now < self.next_fetch:
            return
        self.fetch_now, self.next_fetch = False, now + self.options.poll_interval
        idle = [h for h in self.handles if not h.busy]
        capacity = self.options.workers - (len(self.handles) - len(idle))
        if capacity <= 0:
            return
        try:
            tasks = queue.claim(self.id, self.ops, capacity)
        except DatabaseError as exc:
            event("database unavailable", logging.WARNING, error=type(exc).__name__)
            close_connections()
            return
        for task in tasks:
            handle = idle.pop() if idle else self.start_worker()
            handle.assigned = (task.pk, task.attempt)
            self.tell(handle, "run", task.pk, task.attempt)

    def sweep(self) -> None:
        """Rescue running tasks whose heartbeats stopped (their pod vanished)."""
        now = time.monotonic()
        if now < self.next_sweep:
            return
        max_age = float(conf.get("TASK_ORPHANED_HEARTBEAT_TIMEOUT"))
        self.next_sweep = now + min(max_age / 2, 15.0)
        try:
            for item, outcome in queue.rescue_orphans(max_age):
                event(f"orphaned task {outcome}", task=item.id, op=item.op, worker=item.queue_id)
        except DatabaseError as exc:
            event("orphan sweep skipped", logging.WARNING, error=type(exc).__name__)
            close_connections()

    # -- liveness ----------------------------------------------------------------

    def liveness(self) -> tuple[bool, dict]:
        """Is this pod making progress? Judged from the loop and the workers' own beats,
        never from the database (an outage must not restart every pod)."""
        now = time.monotonic()
        loop_age = now - self.loop_beat
        beat_limit = 3 * float(conf.get("TASK_TRACK_INTERVAL_SECONDS")) + 2
        running = [(h, h.slot.read()) for h in self.handles]
        stuck = [h.id for h, ref in running if ref and now - ref.last_beat > beat_limit]
        ok = loop_age < max(30.0, 3 * self.options.poll_interval) and not stuck
        return ok, {
            "status": "ok" if ok else "fail",
            "loop_age_seconds": round(loop_age, 1),
            "workers": len(self.handles),
            "busy": sum(1 for _, ref in running if ref),
            "stuck_workers": stuck,
            "draining": self.draining,
        }
