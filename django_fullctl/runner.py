"""Run one claimed task in this process and record how it ended.

The poller's workers call ``execute`` for every task they claim; ``run_next`` claims
and runs one task in-process (handy in tests, management shells and the demo).
"""

import json
import logging
import time
import traceback

from django_fullctl import conf, queue, registry
from django_fullctl.models import Task

log = logging.getLogger("django_fullctl.runner")


class TaskTimedOut(BaseException):
    """Raised inside a task that ran past its timeout (the poller's soft stop).

    A BaseException so that a task's own ``except Exception`` does not swallow it.
    """


def first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def execute(task: Task) -> str:
    """Run a claimed task's ``run()`` and record the outcome (fenced).

    Returns ``"completed"``, ``"failed"`` or ``"timeout"``. User code runs outside any
    transaction of ours; its exceptions become the task's error with the traceback.
    """
    started = time.monotonic()
    try:
        value = task.run(*task.param.get("args", []), **task.param.get("kwargs", {}))
    except TaskTimedOut:
        queue.fail(task, timeout_error(task), time.monotonic() - started)
        return "timeout"
    except Exception:
        queue.fail(task, traceback.format_exc(), time.monotonic() - started)
        return "failed"
    duration = time.monotonic() - started
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        error = f"the result ({type(value).__name__}) cannot be stored as JSON: {exc}"
        queue.fail(task, error, duration)
        return "failed"
    queue.complete(task, value, duration)
    return "completed"


def timeout_error(task: Task) -> str:
    return f"timed out: the task ran longer than its timeout of {task.timeout}s"


def run_next(ops: list[str] | None = None) -> Task | None:
    """Claim one runnable task (of ``ops``, default every qualified op) and run it here."""
    claimed = queue.claim(conf.worker_id(), registry.qualified_ops() if ops is None else ops)
    if not claimed:
        return None
    task = claimed[0]
    execute(task)
    task.refresh_from_db()
    return task
