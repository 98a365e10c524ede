"""Run one claimed task in this process and record how it ended.

Running (user code, no database writes of ours) and recording (one fenced write) are
two steps, so a worker can retry the record through a database outage without running
the task again. ``execute`` does both; ``run_next`` claims and executes one task
in-process (handy in tests, shells and scripts).
"""

import contextlib
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django_fullctl import conf, queue, registry
from django_fullctl.models import Task


class TaskTimedOut(BaseException):
    """Raised inside a task that ran past its timeout (the poller's soft stop).

    A BaseException so that a task's own ``except Exception`` does not swallow it.
    """


class TaskStopped(BaseException):
    """Raised inside a task that is no longer this worker's to run: it was cancelled, or
    rescued and given to another worker. Stopping it keeps one task from running twice."""


@dataclass(frozen=True)
class Outcome:
    """How a run ended: ``status`` is completed, failed, timeout or stopped."""

    status: str
    duration: float
    result: Any = None
    error: str | None = None


def first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines and lines[0].startswith("Traceback") else (lines or [""])[0]


def timeout_error(timeout: float) -> str:
    return f"timed out: the task ran longer than its timeout of {timeout:g}s"


def run(
    task: Task, watchdog: Callable[[Task], contextlib.AbstractContextManager] | None = None
) -> Outcome:
    """Call the task's ``run()`` (inside ``watchdog(task)``, which enforces the timeout)."""
    guard = watchdog(task) if watchdog else contextlib.nullcontext()
    started = time.monotonic()
    try:
        with guard:
            value = task.run(*task.param.get("args", []), **task.param.get("kwargs", {}))
    except TaskTimedOut:
        return Outcome("timeout", time.monotonic() - started, error=timeout_error(task.timeout))
    except TaskStopped:
        return Outcome("stopped", time.monotonic() - started)
    except (Exception, SystemExit):  # a task calling sys.exit() fails; the worker goes on
        return Outcome("failed", time.monotonic() - started, error=traceback.format_exc())
    duration = time.monotonic() - started
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        error = f"the result ({type(value).__name__}) cannot be stored as JSON: {exc}"
        return Outcome("failed", duration, error=error)
    return Outcome("completed", duration, result=value)


def record(task: Task, outcome: Outcome) -> bool:
    """Write the outcome (fenced); False when the task was no longer ours."""
    if outcome.status == "stopped":
        return False  # someone else already decided what became of it
    if outcome.status == "completed":
        return queue.complete(task, outcome.result, outcome.duration)
    return queue.fail(task, outcome.error or "", outcome.duration)


def execute(task: Task) -> Outcome:
    """Run a claimed task here and record its outcome."""
    outcome = run(task)
    record(task, outcome)
    return outcome


def run_next(ops: list[str] | None = None) -> Task | None:
    """Claim one runnable task (of ``ops``, default every qualified op) and run it here."""
    claimed = queue.claim(conf.worker_id(), registry.qualified_ops() if ops is None else ops)
    if not claimed:
        return None
    task = claimed[0]
    execute(task)
    task.refresh_from_db()
    return task
