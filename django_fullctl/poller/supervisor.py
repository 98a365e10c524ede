"""The supervisor: keeps the pool of worker processes of one poller.

It starts and replaces workers, reaps the dead ones and rescues their tasks, kills a
worker whose task outlived its timeout, drains on SIGTERM (see ``begin_drain``) and
answers the liveness probe. It never runs a task itself. In ``--workers`` mode its
``Dispatcher`` claims and assigns tasks; the maintenance services (orphan rescue) run
from its loop. Everything it waits on (worker pipes, process sentinels, the dispatcher's
listener, the signal wake-up socket) goes through one ``wait()`` call per loop. What a
worker runs it reads from the worker's shared ``Slot``, so a task costs it nothing.

It keeps this poller's row (``Poller.fleet``) fresh every ``TASK_TRACK_INTERVAL_SECONDS``
(see ``refresh_row``): slots, busy slots, draining; a database error only delays the next
try. Each refresh reads back the operator's stop-claiming request: while it is set, the
workers are told ``("pause",)`` (``--processes``) or the dispatcher stops claiming
(``--workers``), and a later refresh reports that claiming stopped and the busy slots as
they drain; ``("resume",)`` when it is cleared. The row is deleted on a clean exit.
"""

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from django.db import DatabaseError

from django_fullctl import conf, runner
from django_fullctl.models import Poller, Task
from django_fullctl.poller import liveness
from django_fullctl.poller.backoff import SlotBackoff
from django_fullctl.poller.collector import Exposition, PollerCollector, PollerNumbers
from django_fullctl.poller.database import close_connections, database_error, reconnecting
from django_fullctl.poller.dispatcher import Dispatcher
from django_fullctl.poller.logs import event
from django_fullctl.poller.maintenance import Maintenance
from django_fullctl.poller.maintenance.due import DueRelease
from django_fullctl.poller.maintenance.orphans import OrphanRescue
from django_fullctl.poller.maintenance.pollers import SilentPollers
from django_fullctl.poller.maintenance.retention import Retention
from django_fullctl.poller.maintenance.schedules import ScheduleFiring
from django_fullctl.poller.metrics import Layout, Totals, use_process_table
from django_fullctl.poller.options import PollerOptions
from django_fullctl.poller.slot import Slot, WorkerConfig
from django_fullctl.poller.spawn import worker_main
from django_fullctl.pollers import PollerReport, host_name
from django_fullctl.states import Lease, RescueOutcome


@dataclass
class WorkerHandle:
    process: BaseProcess
    conn: Connection
    slot: Slot
    id: str
    index: int | None = None  # --processes mode: which slot of the pool it fills
    # --workers mode: the lease handed to this worker, until it reports it done
    assigned: Lease | None = None
    killed_for_timeout: bool = False
    told_to_drain: bool = False

    @property
    def busy(self) -> bool:
        return self.assigned is not None or self.slot.read() is not None


class Supervisor:
    def __init__(self, options: PollerOptions, ops: list[str]):
        self.options = options
        self.ops = tuple(ops)
        self.id = conf.worker_id(pid=os.getpid())
        # TASK_WORKER_START: fork workers from a fork server that set Django up once (its
        # preload is registered by ``spawn``), or start each in a fresh interpreter
        self.context = (
            multiprocessing.get_context("spawn") if conf.settings().worker_start == "spawn"
            else multiprocessing.get_context("forkserver")
        )
        self.handles: list[WorkerHandle] = []
        self.backoffs = [SlotBackoff() for _ in range(options.size)]
        self.draining = False
        self.stopping = False
        self.drain_deadline = 0.0
        self.loop_beat = time.monotonic()
        self.dispatcher = (
            None if options.self_claiming
            else Dispatcher(self.id, self.ops, options.size, options.poll_interval)
        )
        self.maintenance = Maintenance([
            OrphanRescue(), DueRelease(), ScheduleFiring(), Retention(), SilentPollers()
        ])
        # this poller's row: who it is, and the operator's stop-claiming request
        self.host = host_name()
        self.paused = False  # asked through the row to stop claiming, and told the workers
        self.row_started: datetime | None = None  # the row's ``started``, once written
        self.next_refresh = 0.0  # time.monotonic() of the next write of the row
        self.refresh_delay = 0.5  # back-off after a failed write
        # metrics: one fixed table layout for the qualified ops, the supervisor's totals
        # (its own counts and every reaped worker's numbers) and one registry, read by the
        # HTTP thread at scrape time under ``metrics_lock``
        self.layout = Layout(self.ops)
        self.totals = Totals(self.layout)
        use_process_table(self.totals)
        self.metrics_lock = threading.Lock()
        self.metrics = Exposition(PollerCollector(self.layout, self.metrics_numbers))
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)

    # -- lifecycle -------------------------------------------------------------

    def run(self) -> int:
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        event("poller.started", "poller started", supervisor=self.id,
              mode=self.options.mode.value, size=self.options.size, ops=",".join(self.ops) or "-")
        if not self.ops:
            event("poller.no_ops", "no registered task class qualifies in these settings",
                  logging.WARNING, supervisor=self.id)
        # before the first worker starts: a pod asked to stop claiming claims nothing
        self.refresh_row()
        while not self.stopping:
            self.loop_beat = time.monotonic()
            self.pump(self.next_timeout())
            self.reap()
            self.enforce_timeouts()
            self.refresh_row()
            if self.draining:
                self.tell_drain()
                if not self.handles:
                    break
                if time.monotonic() >= self.drain_deadline:
                    event("poller.grace_over", "grace period over, stopping workers",
                          logging.WARNING, supervisor=self.id)
                    break
                continue
            self.start_missing()
            if self.dispatcher is not None:
                idle = [h for h in self.handles if not h.busy]
                self.dispatcher.dispatch(idle, len(self.handles) - len(idle), self.start_worker)
            self.maintenance.run_due()
        self.shutdown()
        return 0

    def on_signal(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.draining:
            event("poller.stopping", f"{name} again: stopping now", logging.WARNING,
                  supervisor=self.id)
            self.stopping = True
            return
        self.begin_drain(name)

    def begin_drain(self, why: str) -> None:
        """Stop claiming; running tasks may finish within the grace period.

        Called from the signal handler, so it only sets the state: the loop tells the
        workers (``tell_drain``) once the step it was in has finished. The signal may land
        while the dispatcher is between claiming tasks and handing them to workers it is
        starting; a "drain" sent from here would miss those workers, or cut into a "run"
        message being written to the same pipe."""
        self.draining = True
        self.drain_deadline = time.monotonic() + self.options.grace_period
        self.next_refresh = 0.0  # the row says "draining" on the loop's next turn
        busy = sum(1 for h in self.handles if h.busy)
        event("poller.draining", f"{why}: draining", supervisor=self.id, busy=busy,
              grace_period=f"{self.options.grace_period:g}s")

    def tell_drain(self) -> None:
        """Every worker not told yet finishes what it runs (or was just handed) and stops."""
        for handle in self.handles:
            if not handle.told_to_drain:
                self.tell(handle, "drain")
                handle.told_to_drain = True

    def shutdown(self) -> None:
        """Kill what is left and requeue its tasks without using an attempt."""
        for handle in list(self.handles):
            if handle.process.is_alive():
                handle.process.kill()
            handle.process.join(5)
            self.release(handle, crashed=False)
        self.handles.clear()
        if self.dispatcher is not None:
            self.dispatcher.close()
        self.remove_row()
        event("poller.stopped", "poller stopped", supervisor=self.id)
        close_connections()

    # -- this poller's row -----------------------------------------------------------

    def refresh_row(self) -> None:
        """Write this poller's row when it is due and act on the stop-claiming request it
        reads back. A database error is logged and the write tried again after a back-off
        (0.5 s doubling to 10 s): an outage never stops the loop.

        What the row says about claiming is what was done before this write: the request
        read now is acted on after it, and the next write (at most a second later)
        reports it, with the busy slots read then. A worker that was in the middle of a
        claim when it was told to pause shows that task in its slot by then."""
        now = time.monotonic()
        if now < self.next_refresh:
            return
        report = PollerReport(
            host=self.host, pid=os.getpid(), worker_id=self.id, mode=self.options.mode.value,
            ops=self.ops, slots=self.options.size,
            busy_slots=sum(1 for h in self.handles if h.busy), draining=self.draining,
            claiming_stopped=self.paused or self.draining, started=self.row_started,
            claiming_paused=self.paused,
        )
        try:
            row = reconnecting(lambda: Poller.fleet.report(report))
        except DatabaseError as exc:
            database_error("poller.refresh_failed", "poller row not written", exc,
                           supervisor=self.id, retry_in=f"{self.refresh_delay:g}s")
            self.next_refresh = now + self.refresh_delay
            self.refresh_delay = min(self.refresh_delay * 2, 10.0)
            return
        interval = conf.settings().track_interval
        self.refresh_delay = 0.5
        self.row_started = row.started
        self.next_refresh = now + interval
        if row.claiming_paused != self.paused:
            self.pause_claiming(row.claiming_paused)
            self.next_refresh = now + min(interval, 1.0)  # report it soon

    def pause_claiming(self, paused: bool) -> None:
        """Stop claiming new tasks (running ones finish), or claim again."""
        self.paused = paused
        if self.dispatcher is not None:
            self.dispatcher.pause(paused)
        elif not self.draining:  # a drain already stops every claim for good
            for handle in self.handles:
                self.tell(handle, "pause" if paused else "resume")
        busy = sum(1 for h in self.handles if h.busy)
        if paused:
            event("poller.claiming_paused", "asked to stop claiming: running tasks finish",
                  supervisor=self.id, busy=busy)
        else:
            event("poller.claiming_resumed", "claiming again", supervisor=self.id, busy=busy)

    def remove_row(self) -> None:
        """This poller is gone: delete its row (if that fails, the silent-row sweep will)."""
        try:
            reconnecting(lambda: Poller.fleet.remove(self.host, os.getpid()))
        except DatabaseError as exc:
            database_error("poller.remove_failed", "poller row not deleted", exc,
                           supervisor=self.id)

    # -- waiting -----------------------------------------------------------------

    def next_timeout(self) -> float:
        timeout = min(1.0, self.options.poll_interval,
                      max(0.0, self.next_refresh - time.monotonic()))
        if self.dispatcher is not None and not self.draining:
            timeout = min(timeout, self.dispatcher.timeout(time.monotonic()))
        return timeout

    def pump(self, timeout: float) -> None:
        """Wait for any event, then read every pending worker message and notification."""
        sources: list = [self.wake_r] + [h.conn for h in self.handles]
        sources += [h.process.sentinel for h in self.handles]
        if self.dispatcher is not None:
            sources += self.dispatcher.wait_sources()
        ready = wait(sources, timeout)
        if self.wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                self.wake_r.recv(4096)
        for handle in self.handles:
            if handle.conn in ready:
                self.read(handle)
        if self.dispatcher is not None:
            self.dispatcher.on_ready(ready)

    def read(self, handle: WorkerHandle) -> None:
        """Messages from a ``--workers`` worker: ``("done", lease)``."""
        with contextlib.suppress(EOFError, OSError):
            while handle.conn.poll():
                if handle.conn.recv()[0] == "done" and self.dispatcher is not None:
                    self.dispatcher.task_done(handle)

    def tell(self, handle: WorkerHandle, *message: object) -> None:
        with contextlib.suppress(OSError):
            handle.conn.send(message)

    # -- workers ----------------------------------------------------------------

    def start_worker(self, index: int | None = None) -> WorkerHandle:
        parent_conn, child_conn = self.context.Pipe()
        slot = Slot(self.context, self.layout)
        config = WorkerConfig(
            self_claiming=self.options.self_claiming, ops=self.ops,
            max_tasks=self.options.max_tasks, poll_interval=self.options.poll_interval,
            log_format=self.options.log_format, verbosity=self.options.verbosity,
            max_memory_kib=self.options.max_memory_mib * 1024,
        )
        process = self.context.Process(
            target=worker_main, args=(child_conn, slot, config), name="fullctl-worker"
        )
        process.start()
        child_conn.close()
        handle = WorkerHandle(process, parent_conn, slot, conf.worker_id(pid=process.pid), index)
        self.handles.append(handle)
        if self.paused and self.options.self_claiming:
            self.tell(handle, "pause")  # read before its first claim
        return handle

    def start_missing(self) -> None:
        """Keep every ``--processes`` slot filled; a slot whose workers keep dying before
        finishing anything waits a little (see ``backoff``), the others never do."""
        if not self.options.self_claiming:
            return
        filled = {h.index for h in self.handles}
        for index, backoff in enumerate(self.backoffs):
            if index not in filled and backoff.may_start():
                self.start_worker(index)

    def reap(self) -> None:
        for handle in [h for h in self.handles if not h.process.is_alive()]:
            handle.process.join()
            code = handle.process.exitcode or 0
            with self.metrics_lock:  # a scrape sees the worker's numbers once, never twice
                self.totals.fold(handle.slot.metrics.snapshot())
                self.handles.remove(handle)
                if not self.draining:
                    self.totals.count_restart(
                        "timed_out" if handle.killed_for_timeout
                        else "died" if code != 0 else "recycled"
                    )
            with contextlib.suppress(OSError):
                handle.conn.close()
            if code == 0 or handle.killed_for_timeout:
                continue
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            event("worker.died", f"worker died ({how})", logging.WARNING, worker=handle.id,
                  exit_code=code, tasks=handle.slot.finished)
            self.release(handle, crashed=True, reason=f"worker process {handle.id} died ({how})")
            if handle.index is None:
                continue
            delay = self.backoffs[handle.index].died(
                handle.slot.finished, killed_from_outside=code == -signal.SIGKILL
            )
            if delay is not None:
                event("worker.restart_delayed", "worker keeps dying, slowing its restarts",
                      logging.WARNING, slot=handle.index, delay=f"{delay:g}s")

    def release(self, handle: WorkerHandle, crashed: bool, reason: str = "") -> None:
        """Give a stopped worker's tasks back: rescued after a crash (counts an attempt,
        may fail the task), requeued at shutdown (no attempt used).

        The database says what the worker held: a self-claiming worker's ``queue_id``
        covers even a task it claimed but had not shown in its slot yet.
        """
        try:
            if self.options.self_claiming:
                held = Task.queue.running_tasks(queue_ids=[handle.id])
            elif handle.assigned:
                held = [t for t in Task.queue.running_tasks(queue_ids=[self.id])
                        if t.lease == handle.assigned]
            else:
                held = []
            for item in held:
                outcome: RescueOutcome | None
                if crashed:
                    outcome = Task.queue.rescue(item.lease, reason)
                    # the worker died before it could count this task
                    self.totals.count_claimed(item.op)
                    if outcome is RescueOutcome.REQUEUED:
                        self.totals.count_retried(item.op, "worker_died")
                    elif outcome is RescueOutcome.FAILED:
                        self.totals.count_finished(item.op, "failed")
                else:
                    requeued = Task.queue.requeue(
                        item.lease, "poller shut down", count_attempt=False
                    )
                    outcome = RescueOutcome.REQUEUED if requeued else None
                if outcome:
                    level = logging.WARNING if outcome is RescueOutcome.FAILED else logging.INFO
                    event(f"task.{outcome.value}", f"task {outcome.value}", level, task=item.id,
                          op=item.op, worker=handle.id, attempt=item.attempt,
                          reason=reason or "poller shut down")
        except DatabaseError as exc:
            # the orphan sweep (or the operator) rescues them once the database is back
            database_error("task.release_failed", "could not release tasks", exc,
                           worker=handle.id)
        handle.assigned = None

    def enforce_timeouts(self) -> None:
        """Kill a worker whose task ignored the soft stop, and fail that task."""
        grace = conf.settings().timeout_kill_grace
        now = time.monotonic()
        for handle in self.handles:
            ref = handle.slot.read()
            if ref is None or not ref.timeout or now - ref.since < ref.timeout + grace:
                continue
            handle.process.kill()
            handle.killed_for_timeout = True
            op = None
            try:
                op = Task.objects.filter(pk=ref.lease.task_id).values_list("op", flat=True).first()
                Task.queue.fail(ref.lease, runner.timeout_error(ref.timeout))
            except DatabaseError as exc:
                database_error("task.record_failed", "timeout not recorded", exc,
                               task=ref.lease.task_id, worker=handle.id)
            # the killed worker cannot count this run any more
            self.totals.count_claimed(op)
            self.totals.count_finished(op, "timed_out")
            self.totals.observe(self.layout.run_hist, op, now - ref.since)
            event("task.timed_out", "task timed out, worker killed", logging.WARNING,
                  task=ref.lease.task_id, op=op, worker=handle.id, attempt=ref.lease.attempt,
                  timeout=f"{ref.timeout:g}s", error_class="TaskTimedOut")

    # -- liveness and metrics --------------------------------------------------------

    def metrics_numbers(self) -> PollerNumbers:
        """The totals plus every live worker's table (called by the scrape's thread)."""
        with self.metrics_lock:
            tables = [self.totals.snapshot()]
            busy = 0
            for handle in list(self.handles):
                tables.append(handle.slot.metrics.snapshot())
                busy += handle.busy
            count = len(tables) - 1
        numbers = [sum(column) for column in zip(*tables, strict=True)]
        return PollerNumbers(numbers, busy, count - busy)

    def liveness(self) -> tuple[bool, dict]:
        """This pod's liveness (see ``liveness.judge``)."""
        return liveness.judge(
            now=time.monotonic(), loop_beat=self.loop_beat,
            poll_interval=self.options.poll_interval,
            track_interval=conf.settings().track_interval,
            workers=[(h.id, h.slot.read()) for h in self.handles],
            draining=self.draining,
        )
