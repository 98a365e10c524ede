"""What the fork server imports once, before it forks any worker
(``TASK_WORKER_START = "forkserver"``, the default; registered in ``spawn``).

The fork server is a fresh interpreter that the supervisor starts with its first worker
(an exec, not a fork of the supervisor: it inherits none of the supervisor's connections
or threads). Importing this module there sets Django up (every app's models, so every task
class), loads the database backend and the worker's own modules, and freezes the result
for the garbage collector, so that the workers forked from it share those pages
copy-on-write instead of each building its own copy.

It leaves nothing a worker could inherit by mistake: ``django.setup()`` and this project's
``ready()`` open no database connection and start no thread. Any connection opened anyway
is closed before the first fork; connections opened and threads still running are noted
in ``REPORT`` and each worker logs them as a warning (``spawn.worker_main``).

A failure (a settings module that raises, a missing app) is kept in ``REPORT`` rather than
raised: the fork server has to stay up to hand it on. Each worker forked from it prints
that error and exits, as a spawned worker would, and stops the fork server, so that the
next worker gets a fresh one that tries again.
"""

import gc
import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from multiprocessing import forkserver
from types import FrameType


@dataclass
class PreloadReport:
    pid: int  # the fork server's
    error: str | None = None  # the traceback of a failed set-up
    connections: list[str] = field(default_factory=list)  # aliases opened (and closed)
    threads: list[str] = field(default_factory=list)  # threads alive besides the main one
    frozen: int = 0  # objects moved to the collector's permanent generation


def fork_server_frame() -> FrameType | None:
    """The frame of ``multiprocessing.forkserver.main()`` importing this module, if it is."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code is not forkserver.main.__code__:
        frame = frame.f_back
    return frame


def use_supervisor_sys_path(frame: FrameType) -> None:
    """Take the supervisor's ``sys.path``, as a spawned worker does: a project started as
    ``python path/to/manage.py`` finds its modules through the script's directory.
    multiprocessing passes it to ``forkserver.main()``, and Python 3.11-3.13 leave it
    unused there (the workers get it after the fork)."""
    sys_path = frame.f_locals.get("sys_path")
    if isinstance(sys_path, list) and sys_path != sys.path:
        sys.path[:] = sys_path


def preload(frame: FrameType) -> PreloadReport:
    report = PreloadReport(pid=os.getpid())
    use_supervisor_sys_path(frame)
    from django.db.backends.signals import connection_created

    def opened(sender: object, connection: object, **kwargs: object) -> None:
        report.connections.append(getattr(connection, "alias", "?"))

    connection_created.connect(opened, weak=False, dispatch_uid="fullctl.preload")
    try:
        import django

        django.setup()
        from django.db import connections
        from django.db.utils import load_backend

        for alias in connections:  # the backend modules (psycopg ...), not a connection
            load_backend(connections.settings[alias]["ENGINE"])
        # the modules a worker imports on its way to its first task
        import django_fullctl.poller.database
        import django_fullctl.poller.logs
        import django_fullctl.poller.worker  # noqa: F401

        for wrapper in connections.all(initialized_only=True):
            if wrapper.connection is not None:
                if wrapper.alias not in report.connections:
                    report.connections.append(wrapper.alias)
                wrapper.close()  # this process's own: safe to close before any fork
    except BaseException:
        report.error = traceback.format_exc()
    finally:
        connection_created.disconnect(dispatch_uid="fullctl.preload")
    report.threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    # what is imported now lives as long as the fork server: out of the collector's
    # reach, a worker's collections never write to (and so never copy) those pages.
    # Measured after 20,000 no-op tasks at -p 4: 3 MiB less PSS for the pod than without;
    # a gc.collect() first made no difference.
    gc.freeze()
    report.frozen = gc.get_freeze_count()
    return report


# only in a fork server: imported anywhere else (a tool that imports every module), it
# does nothing
_frame = fork_server_frame()
REPORT: PreloadReport | None = preload(_frame) if _frame is not None else None
del _frame
