"""Task classes that exist only for the tests: each one breaks its worker, or the rules,
in a way the poller or the runner has to survive."""

import contextlib
import os
import signal
import sys
import time

from fullctl.django.models import Task
from fullctl.django.tasks import register


@register
class UnstorableResultTask(Task):
    """Returns what JSON cannot store: the task fails with a clear error."""

    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_unstorable"

    def run(self, *args, **kwargs):
        return object()


@register
class StubbornTask(Task):
    """Ignores the soft timeout: the supervisor has to kill its worker."""

    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_stubborn"

    def run(self, seconds, *args, **kwargs):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            # swallowing the soft timeout is the point of this task
            with contextlib.suppress(BaseException):
                time.sleep(0.05)
        return seconds


@register
class CrashTask(Task):
    """Kills its own worker process, like an OOM kill or a segfault would."""

    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_crash"

    def run(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)


@register
class ExitTask(Task):
    """Calls sys.exit(): the task fails, the worker process must not."""

    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_exit"

    def run(self, code=1, *args, **kwargs):
        sys.exit(code)
