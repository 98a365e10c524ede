"""What a Django Tasks row holds and how its pieces are named: the op of a queue, the
backends configured in ``settings.TASKS``, the exception classes fullctl records without a
traceback of their own, and the note ``DjangoTaskCall.run`` adds to every exception.
Pure helpers: no model, no framework."""

import re
from typing import Any

from django.conf import settings as django_settings

from django_fullctl.exceptions import TaskTimedOut

OP_PREFIX = "django.tasks:"
BACKEND_PREFIX = "django_fullctl.tasks_backend"
NOTE = re.compile(
    r"^\[fullctl\] exception (?P<path>\S+), attempt (?P<attempt>\d+),"
    r" worker (?P<worker>\S+), started (?P<started>\S+)$", re.M,
)
LOST_WORKER = re.compile(r"worker (?:process )?(?P<worker>\S+:\d+)")


class WorkerLost(Exception):  # noqa: N818 - named after the error history's entry
    """The worker running the attempt died or stopped sending heartbeats (a SIGKILL, an
    OOM kill, a lost node): the attempt was rescued, retried or failed for good."""


class TaskCancelled(Exception):  # noqa: N818 - what happened, not an error of the code
    """The task was cancelled (``Task.cancel()``, the admin), or its parent failed."""


class TaskResultError(Exception):
    """The value the function returned could not be stored."""


class TaskFailed(Exception):  # noqa: N818
    """A failure recorded without an exception (e.g. the poller gave up on the attempt)."""


# the class of a history entry that carries no dotted path of its own
KNOWN_CLASSES = {
    "WorkerLost": f"{__name__}.WorkerLost",
    "TaskTimedOut": f"{TaskTimedOut.__module__}.TaskTimedOut",
    "TaskResultError": f"{__name__}.TaskResultError",
}


def queue_op(queue_name: str) -> str:
    return f"{OP_PREFIX}{queue_name}"


def queue_of(op: str) -> str:
    return op[len(OP_PREFIX):] if op.startswith(OP_PREFIX) else op


def exception_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def configured_backends() -> dict[str, dict[str, Any]]:
    """The aliases of ``settings.TASKS`` that use this backend, with their parameters."""
    tasks = getattr(django_settings, "TASKS", None) or {}
    return {
        alias: params for alias, params in tasks.items()
        if isinstance(params, dict) and str(params.get("BACKEND", "")).startswith(BACKEND_PREFIX)
    }


def backend_options(alias: str) -> dict[str, Any]:
    return dict(configured_backends().get(alias, {}).get("OPTIONS") or {})
