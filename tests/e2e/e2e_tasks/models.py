"""Tasks that write down every run, so a test can tell a task that ran once from one that
was redone or ran in two places at once.

Each run appends two JSON lines to the file named by its ``record`` argument: ``start``
when ``run()`` begins and ``end`` (or ``interrupted``, with the exception's class) when it
leaves, each with the task's id and attempt, the host (the pod's name: pods run in their
own UTS namespace) and the worker's pid. One ``os.write`` of a short line to a file opened
with ``O_APPEND`` is atomic, so lines from many processes never interleave. A worker killed
with SIGKILL leaves a ``start`` without an end.
"""

import json
import os
import socket
import time

from fullctl.django.models import Task
from fullctl.django.tasks import qualifiers, register


def write_record(path: str, **fields: object) -> None:
    line = json.dumps({**fields, "host": socket.gethostname(), "pid": os.getpid(),
                       "at": time.time()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class RecordedRun:
    """``run(seconds, record)``: sleep ``seconds``, writing the run's start and end."""

    def run(self, seconds: float = 0.0, record: str = "", *args, **kwargs):
        write_record(record, event="start", task=self.pk, attempt=self.attempt, op=self.op)
        try:
            time.sleep(seconds)
        except BaseException as exc:
            write_record(record, event="interrupted", task=self.pk, attempt=self.attempt,
                         op=self.op, error=type(exc).__name__)
            raise
        write_record(record, event="end", task=self.pk, attempt=self.attempt, op=self.op)
        return socket.gethostname()


@register
class RecordedTask(RecordedRun, Task):
    """Any pod may run it."""

    class Meta:
        proxy = True
        app_label = "fullctl_e2e"

    class HandleRef:
        tag = "e2e_recorded"


@register
class EuTask(RecordedRun, Task):
    """Only pods whose settings say ``E2E_REGION = "eu"``."""

    class Meta:
        proxy = True
        app_label = "fullctl_e2e"

    class HandleRef:
        tag = "e2e_eu"

    class TaskMeta:
        qualifiers = [qualifiers.Setting("E2E_REGION", "eu")]


@register
class UsTask(RecordedRun, Task):
    """Only pods whose settings say ``E2E_REGION = "us"``."""

    class Meta:
        proxy = True
        app_label = "fullctl_e2e"

    class HandleRef:
        tag = "e2e_us"

    class TaskMeta:
        qualifiers = [qualifiers.Setting("E2E_REGION", "us")]
