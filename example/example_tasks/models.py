"""Sample task classes, written exactly as the task documentation shows them."""

import os
import time

from fullctl.django.models import Task
from fullctl.django.tasks import qualifiers, register


@register
class SumTask(Task):
    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_sum"

    class TaskMeta:
        result_type = int

    def run(self, a, b, *args, **kwargs):
        return a + b


@register
class PairTask(Task):
    """The docs' first example: limited to one, result passed through ``str``."""

    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_pair"

    class TaskMeta:
        limit = 1
        result_type = str
        qualifiers = [qualifiers.Setting("IMPORTANT_SETTING", True)]

    def run(self, a, b, *args, **kwargs):
        return (a, b)


@register
class ImportantTask(Task):
    """Only pollers whose settings qualify may run it."""

    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_important"

    class TaskMeta:
        qualifiers = [
            qualifiers.Settings("IMPORTANT_SETTING", True),
            qualifiers.Settings("IMPORTANT_LIST", lambda v: "xyz" in v),
        ]

    def run(self, *args, **kwargs):
        return {"ran_on": os.environ.get("HOSTNAME", "")}


@register
class LimitedTask(Task):
    """One pending or running instance per first argument."""

    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_limited"

    class TaskMeta:
        limit = 1

    @property
    def generate_limit_id(self):
        return self.param["args"][0]

    def run(self, key, *args, **kwargs):
        return key


@register
class EchoTask(Task):
    """Returns its arguments: used to check what reaches run() and what comes back."""

    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_echo"

    def run(self, value=None, *args, **kwargs):
        return value


@register
class SleepTask(Task):
    """Sleeps: for timeouts, heartbeats, draining and the demo's slow task."""

    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_sleep"

    def run(self, seconds, *args, **kwargs):
        time.sleep(seconds)
        return seconds


@register
class FailTask(Task):
    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_fail"

    def run(self, message="boom", *args, **kwargs):
        raise RuntimeError(message)


@register
class NoopTask(Task):
    """Does nothing: the benchmark's unit of work."""

    class Meta:
        proxy = True

    class HandleRef:
        tag = "task_noop"

    def run(self, *args, **kwargs):
        return None
