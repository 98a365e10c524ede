"""A ``@task`` of Django's Tasks API that reports how the worker process running it
started, for tests/poller/test_worker_start.py.

Nothing imports this module in advance: a worker imports it by the path stored in the
task's row when it runs the task (as for ``tests.testapp.django_tasks``), so it needs no
registration, no proxy model and no migration.
"""

import gc
import multiprocessing
import os
import sys
import threading
import time

from django.db import connection

from tests.testapp.tasks_framework import task

PRELOAD = "django_fullctl.poller.preload"


def process_age() -> float:
    """Seconds since this process was created (forked), by the kernel's boot-time clock,
    which is the clock of ``starttime`` in /proc/self/stat (rounded down to a tick, so
    the age is never too small)."""
    with open("/proc/self/stat") as file:
        fields = file.read().rpartition(")")[2].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


def os_threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


@task()
def probe() -> dict:
    # the age of the connection this worker claimed the task with, by the database's clock
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM clock_timestamp() - backend_start)"
            " FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        connection_age = float(cursor.fetchone()[0])
    age = process_age()
    preload = sys.modules.get(PRELOAD)
    report = getattr(preload, "REPORT", None)
    return {
        "pid": os.getpid(),
        "parent": os.getppid(),
        "parent_os_threads": os_threads(os.getppid()),
        "start_method": multiprocessing.get_start_method(allow_none=True),
        "preloaded": preload is not None,
        "fork_server": report.pid if report else None,
        "fork_server_error": report.error if report else None,
        "fork_server_connections": report.connections if report else None,
        "fork_server_threads": report.threads if report else None,
        "gc_frozen": gc.get_freeze_count(),
        "threads": sorted(t.name for t in threading.enumerate()),
        "connection_age": connection_age,
        "process_age": age,
    }
