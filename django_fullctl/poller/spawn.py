"""How worker processes start, and their entry point (``worker_main``).

The supervisor starts its workers in the multiprocessing context ``TASK_WORKER_START`` names:

* ``"forkserver"`` (the default): the supervisor starts one fork server, a fresh
  interpreter (an exec, not a fork of the supervisor), which imports Django, every app's
  models (so every task class) and the worker's modules once (``preload``), and then forks
  each worker from that state. The workers share those pages with the fork server and
  with each other until they write to them.
* ``"spawn"``: each worker is a fresh interpreter that sets Django up by itself.

Either way a worker inherits no database connection, no thread and no lock: a spawned one
starts from nothing, a forked one from a single-threaded fork server that never connected
to the database (``preload`` makes sure of it and ``worker_main`` logs it when it did not).

This module imports nothing of Django at the top: a spawned worker must run
``django.setup()`` before any model module is imported.
"""

import multiprocessing
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from django_fullctl.poller.slot import Slot, WorkerConfig

if TYPE_CHECKING:
    from django_fullctl.poller.preload import PreloadReport

PRELOAD = "django_fullctl.poller.preload"

# What a fork server started by this process imports before it forks any worker: the
# main script first, as multiprocessing does by default (a script that configures Django
# at import, outside its main guard, runs the same in every worker), then ``preload``.
# Registered on import, because the supervisor imports this module for ``worker_main``
# before it starts its first worker; a process that never starts a fork server (a
# spawned worker, a web process) never reads it.
multiprocessing.set_forkserver_preload(["__main__", PRELOAD])


def worker_main(conn: Connection, slot: Slot, config: WorkerConfig) -> None:
    """Entry point of a worker process."""
    # the supervisor decides when we stop: a Ctrl-C in a terminal reaches the whole
    # process group, and we must not drop a running task because of it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # what the fork server's preload found, if this worker was forked from one
    preloaded = getattr(sys.modules.get(PRELOAD), "REPORT", None)
    if preloaded is not None and preloaded.error:
        fail_like_a_spawned_worker(preloaded)
    import django
    from django.apps import apps

    if not apps.ready:  # spawned (or the fork server could not import the preload)
        django.setup()
    from django_fullctl.poller import logs
    from django_fullctl.poller.database import use_prepared_statements
    from django_fullctl.poller.worker import Worker

    logs.configure(config.log_format, config.verbosity)
    report_fork_server(preloaded)
    use_prepared_statements()
    Worker(conn, slot, config).serve()


def fail_like_a_spawned_worker(report: "PreloadReport") -> None:
    """The fork server could not set Django up: print why and exit 1, as a spawned worker
    whose ``django.setup()`` raised would (the supervisor's crash-loop back-off applies).
    Stop the fork server too: the next worker gets a fresh one, which tries again (a
    failed set-up cannot be retried in the same interpreter)."""
    sys.stderr.write(f"the worker fork server could not set Django up:\n{report.error}")
    sys.stderr.flush()
    # every worker of a failed fork server is failing like this one; once the fork server
    # is gone our parent is someone else, whom we leave alone
    if os.getppid() == report.pid:
        os.kill(report.pid, signal.SIGKILL)
    sys.exit(1)


def fork_server_threads(pid: int) -> int:
    """Threads of the fork server (this process's parent) as the kernel counts them, which
    includes threads that C libraries start; 0 where /proc does not tell."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def report_fork_server(report: "PreloadReport | None") -> None:
    """Warn when this worker did not get the clean, shared start that the fork server
    promises (it never fails the worker: what it warns of is what spawn avoids)."""
    import logging

    from django_fullctl import conf
    from django_fullctl.poller.logs import event

    worker = conf.worker_id(pid=os.getpid())
    if multiprocessing.get_start_method(allow_none=True) != "forkserver":
        return
    if report is None:
        event("worker.not_preloaded", f"the fork server could not import {PRELOAD}: this"
              " worker set Django up by itself and shares nothing with the others",
              logging.WARNING, worker=worker)
        return
    if report.connections:
        event("worker.fork_server_connected", "setting Django up opened database connections"
              " in the fork server (closed before forking): check the apps' ready()",
              logging.WARNING, worker=worker, connections=",".join(report.connections))
    threads = fork_server_threads(report.pid) if os.getppid() == report.pid else 0
    if report.threads or threads > 1:
        event("worker.fork_server_threads", "the fork server runs threads: a lock one of them"
              " held when it forked is held for ever in this worker; set TASK_WORKER_START ="
              " \"spawn\" if a task module starts threads at import", logging.WARNING,
              worker=worker, threads=",".join(report.threads) or threads)
