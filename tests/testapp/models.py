"""Task classes that exist only for the tests: each one breaks its worker, or the rules,
in a way the poller or the runner has to survive."""

import contextlib
import os
import signal
import sys
import time

from fullctl.django.models import Task
from fullctl.django.tasks import Retry, RetryLater, TaskTimedOut, register


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


@register
class FlakyTask(Task):
    """Fails with ConnectionError on its first ``failures`` attempts, then returns the
    wall-clock start of every attempt (the earlier ones read from its error history), so
    a test can measure the backoff. ``kill_on`` attempt: SIGKILLs its own worker instead."""

    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_flaky"

    class TaskMeta:
        retry = Retry(max_attempts=4, on=(ConnectionError,), delay=0.4, factor=2.0,
                      jitter=False)

    def run(self, failures: int, kill_on: int = 0):
        started = time.time()
        if self.attempt == kill_on:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.attempt <= failures:
            raise ConnectionError(f"attempt {self.attempt} started at {started!r}")
        return started


@register
class PatientTask(Task):
    """Asks for another attempt with RetryLater, whatever the policy: once."""

    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_patient"

    def run(self):
        if self.attempt == 1:
            raise RetryLater(delay=0.3, reason="the upstream said 503")
        return self.attempt


@register
class SlowOnceTask(Task):
    """Runs past its timeout on the first attempt; timeouts are retried by its policy."""

    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_slow_once"

    class TaskMeta:
        timeout = 1
        retry = Retry(max_attempts=2, on=(TaskTimedOut,), delay=0.1, jitter=False)

    def run(self):
        if self.attempt == 1:
            time.sleep(5)
        return "second time lucky"
