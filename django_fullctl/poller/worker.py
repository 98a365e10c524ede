"""A worker process: runs tasks one at a time, showing its supervisor what it runs.

In ``--processes`` mode the worker claims its own tasks (woken by LISTEN/NOTIFY, with a
polling backstop); in ``--workers`` mode the supervisor's dispatcher claims and sends it
leases. The running task and its beats go to a shared ``Slot``; the pipe carries
``("drain",)``, ``("pause",)``, ``("resume",)`` and ``("run", lease)`` from the supervisor,
and ``("done", lease)`` back in ``--workers`` mode (that frees capacity at once).

A self-claiming worker that completes a task and will take another right away records
the completion and claims its next task in one statement (``Task.queue.complete_and_
claim``): one round trip and one commit per task. It claims only what it runs next, and
never when it is draining, paused, or about to recycle (``-t``, ``--max-memory-per-
process``).
"""

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

import psycopg
from django.db import connections

from django_fullctl import conf, notify, runner
from django_fullctl.exceptions import TaskTimedOut
from django_fullctl.models import Task
from django_fullctl.poller.database import retry_db
from django_fullctl.poller.heartbeat import HeartbeatTracker
from django_fullctl.poller.logs import event
from django_fullctl.poller.slot import Slot, WorkerConfig
from django_fullctl.states import Lease, RunStatus, TaskStatus


class Worker:
    def __init__(self, conn: Connection, slot: Slot, config: WorkerConfig):
        self.conn = conn
        self.slot = slot
        self.config = config
        self.id = conf.worker_id(pid=os.getpid())
        self.draining = False
        self.paused = False  # asked to stop claiming (the operator drains this pod)
        self.done = 0
        self.tracker = HeartbeatTracker(slot)
        self.listener: psycopg.Connection | None = None
        self.guarded: Lease | None = None  # the lease of the task running inside guard()

    def serve(self) -> None:
        signal.signal(signal.SIGALRM, self.on_timeout)
        signal.signal(signal.SIGUSR1, self.on_stop)
        self.tracker.start()
        event("worker.started", "worker started", worker=self.id)
        if self.config.max_memory_kib and resident_kib() > self.config.max_memory_kib:
            event("worker.memory_limit_low",
                  "--max-memory-per-process is below a fresh worker's memory: every worker"
                  " will be replaced after each task", logging.WARNING, worker=self.id,
                  resident_mib=resident_kib() // 1024)
        reason = "drained"
        task: Task | None = None
        while True:
            if task is not None:  # claimed with the last completion: it is ours to run
                task = self.process(task)
                continue
            if self.config.self_claiming:
                # a drain that arrived while the last task ran: never claim after it (an
                # assigned worker reads its messages, "run" ones too, in next_task)
                self.read_messages(0)
            if self.draining:
                break
            if (recycle := self.recycle_reason()) is not None:
                reason = recycle
                break
            task = self.next_task()
            if task is not None:
                task = self.process(task)
        self.tracker.stop()
        if self.listener is not None:
            self.listener.close()
        event("worker.stopped", "worker stopped", worker=self.id, reason=reason, tasks=self.done)
        connections.close_all()

    # -- getting work ---------------------------------------------------------

    def recycle_reason(self, done: int | None = None) -> str | None:
        """Why this worker should exit to be replaced by a fresh one once it has finished
        ``done`` tasks (default: now), if it should."""
        done = self.done if done is None else done
        if self.config.max_tasks and done >= self.config.max_tasks:
            return f"recycled after {done} tasks"
        limit = self.config.max_memory_kib
        if limit and done and (rss := resident_kib()) > limit:
            return f"recycled at {rss // 1024} MiB resident (limit {limit // 1024} MiB)"
        return None

    def may_claim_next(self) -> bool:
        """Whether the task being recorded may bring the next one with it: only a
        self-claiming worker that goes on claiming after this task."""
        if not self.config.self_claiming:
            return False
        self.read_messages(0)  # a drain or pause that arrived while the task ran
        if self.draining or self.paused:
            return False
        return self.recycle_reason(self.done + 1) is None  # not its last task

    def next_task(self) -> Task | None:
        """Wait for the next task (None when woken without one)."""
        if not self.config.self_claiming:
            return self.receive_assignment()
        if self.paused:
            self.read_messages(self.config.poll_interval)
            return None
        claimed = retry_db(lambda: Task.queue.claim(self.id, self.config.ops, 1), self.stopped)
        if claimed:
            return claimed[0]
        self.wait_for_work(self.config.poll_interval)
        return None

    def stopped(self) -> bool:
        """Give up a claim being retried through an outage: drained or asked to pause."""
        self.read_messages(0)
        return self.draining or self.paused

    def receive_assignment(self) -> Task | None:
        message = self.read_messages(None)
        if not message or message[0] != "run":
            return None
        lease: Lease = message[1]
        task = retry_db(lambda: Task.objects.filter(pk=lease.task_id).first(), lambda: False)
        if task is None or task.status != TaskStatus.RUNNING or task.lease != lease:
            event("task.assignment_stale", "assigned task is no longer running",
                  logging.WARNING, task=lease.task_id, worker=self.id)
            return None
        return task.cast()

    def read_messages(self, timeout: float | None) -> tuple | None:
        """Read one supervisor message within ``timeout``; EOF (supervisor gone) drains."""
        if not self.conn.poll(timeout):
            return None
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            message = ("drain",)
        if message[0] == "drain":
            self.draining = True
        elif message[0] in ("pause", "resume"):
            self.paused = message[0] == "pause"
        return message

    def wait_for_work(self, timeout: float) -> None:
        """Sleep until a task of our ops is announced, a message arrives, the earliest
        scheduled task of our ops is due (then release it), or ``timeout``."""
        listener = self.ensure_listener()  # first: a task scheduled from now on wakes us
        due = retry_db(lambda: Task.queue.seconds_until_due(self.config.ops), self.stopped)
        if due is not None and due <= 0:
            retry_db(Task.queue.release_due, self.stopped)
            return
        if due is not None and due < timeout:
            timeout = due
        else:
            due = None  # the backstop comes first: nothing to release when it ends
        deadline = time.monotonic() + timeout
        while not self.draining and (remaining := deadline - time.monotonic()) > 0:
            sources: list[Any] = [self.conn] + ([listener] if listener else [])
            ready = wait(sources, remaining)
            if self.conn in ready:
                self.read_messages(0)
                return
            if listener is None or listener not in ready:
                continue
            try:
                ops = notify.received(listener)
            except psycopg.Error:
                self.drop_listener()
                return  # reconnect on the next wait, and claim at once meanwhile
            if ops & set(self.config.ops):
                return
        if due is not None and not self.draining:
            retry_db(Task.queue.release_due, self.stopped)

    def ensure_listener(self) -> psycopg.Connection | None:
        if self.listener is None and notify.can_listen():
            try:
                self.listener = notify.listen(notify.NEW_CHANNEL)
            except psycopg.Error as exc:
                event("listener.failed", "cannot listen for new tasks, polling",
                      logging.WARNING, worker=self.id, error_class=type(exc).__name__)
        return self.listener

    def drop_listener(self) -> None:
        event("listener.lost", "listener connection lost, reconnecting", logging.WARNING,
              worker=self.id)
        if self.listener is not None:
            with contextlib.suppress(psycopg.Error):
                self.listener.close()
        self.listener = None

    # -- running ----------------------------------------------------------------

    @contextlib.contextmanager
    def guard(self, task: Task) -> Iterator[None]:
        """While ``task`` runs, its timeout and a stop request raise inside it (signals
        reach Python's main thread, where the task runs). Outside, both are ignored: a
        late signal can never hit the next task."""
        self.guarded = task.lease
        if task.timeout:
            signal.setitimer(signal.ITIMER_REAL, task.timeout)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.guarded = None

    def on_timeout(self, signum: int, frame: Any) -> None:
        if self.guarded is not None:
            raise TaskTimedOut()

    def on_stop(self, signum: int, frame: Any) -> None:
        if self.guarded is not None and self.guarded == self.tracker.lost:
            raise runner.TaskStopped()

    def process(self, task: Task) -> Task | None:
        """Run ``task`` and record its outcome; returns the next task when the record
        claimed one."""
        lease = task.lease
        fields = {"task": task.pk, "op": task.op, "worker": self.id, "attempt": task.attempt}
        self.slot.start(lease, task.timeout)
        event("task.claimed", "task claimed", **fields)
        self.tracker.track(lease)
        outcome = runner.run(task, watchdog=self.guard)
        self.slot.stop_enforcing_timeout()
        # stop tracking before the outcome is recorded: a beat after the record would find
        # the task no longer running and take it for lost
        self.tracker.track(None)
        claim_for = (self.id, self.config.ops) if self.may_claim_next() else None
        recorded, next_task = retry_db(
            lambda: runner.record_and_claim(task, outcome, claim_for), lambda: False
        )
        self.slot.record(task, outcome, recorded)
        self.slot.clear()
        self.done += 1
        if not self.config.self_claiming:
            with contextlib.suppress(OSError):
                self.conn.send(("done", lease))
        log_outcome(outcome, recorded, fields)
        return next_task


def resident_kib() -> int:
    """This process's resident memory (VmRSS), in KiB; 0 where /proc does not tell."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def log_outcome(outcome: runner.Outcome, recorded: bool, fields: dict[str, Any]) -> None:
    """One line for how a task ended; the error's class, and its message's first line
    unless ``TASK_LOG_ERROR_MESSAGES`` is off (messages may quote parameters)."""
    fields = {**fields, "duration_ms": round(outcome.duration * 1000, 3)}
    if outcome.status is RunStatus.STOPPED:
        event("task.stopped", "task stopped: it was cancelled or given to another worker",
              **fields)
        return
    if not recorded:
        event("task.discarded", "task outcome discarded: no longer ours", logging.WARNING,
              **fields)
        return
    if outcome.retry_in is not None:
        event("task.retrying", f"task failed, retrying in {outcome.retry_in:.3g} s",
              logging.WARNING, retry_in=round(outcome.retry_in, 3),
              error_class=outcome.error_class, **fields)
        return
    if outcome.status is RunStatus.COMPLETED:
        event("task.completed", f"task completed in {outcome.duration * 1000:.0f} ms", **fields)
        return
    name = "task.timed_out" if outcome.status is RunStatus.TIMED_OUT else "task.failed"
    error = {"error_class": outcome.error_class}
    summary = outcome.error_class or ""
    if conf.settings().log_error_messages and outcome.error_message:
        error["error"] = outcome.error_message
        summary = f"{summary}: {outcome.error_message}"
    text = "task timed out" if name == "task.timed_out" else f"task failed: {summary}"
    event(name, text, logging.WARNING, **fields, **error)
