"""Run one claimed task in this process and record how it ended.

Running (user code, no database writes of ours) and recording (one fenced write) are
two steps, so a worker can retry the record through a database outage without running
the task again. ``execute`` does both; ``run_next`` claims and executes one task
in-process (handy in tests, shells and scripts).
"""

import contextlib
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django_fullctl import conf, registry
from django_fullctl.jsonvalue import json_problem
from django_fullctl.models import Task
from django_fullctl.states import RunStatus


class TaskTimedOut(BaseException):
    """Raised inside a task that ran past its timeout (the poller's soft stop).

    A BaseException so that a task's own ``except Exception`` does not swallow it.
    """


class TaskStopped(BaseException):
    """Raised inside a task that is no longer this worker's to run: it was cancelled, or
    rescued and given to another worker. Stopping it keeps one task from running twice."""


@dataclass(frozen=True)
class Outcome:
    """How a run ended, with what is to be recorded."""

    status: RunStatus
    duration: float
    result: Any = None
    error: str | None = None


def first_line(text: str | None) -> str:
    """The line of an error worth a log line: a traceback's last line, else the first."""
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines and lines[0].startswith("Traceback") else (lines or [""])[0]


def timeout_error(timeout: float) -> str:
    return f"timed out: the task ran longer than its timeout of {timeout:g}s"


Watchdog = Callable[[Task], contextlib.AbstractContextManager]


def run(task: Task, watchdog: Watchdog | None = None) -> Outcome:
    """Call the task's ``run()`` (inside ``watchdog(task)``, which enforces the timeout)."""
    guard = watchdog(task) if watchdog else contextlib.nullcontext()
    started = time.monotonic()
    try:
        with guard:
            value = task.run(*task.param.get("args", []), **task.param.get("kwargs", {}))
    except TaskTimedOut:
        error = timeout_error(task.timeout or 0)
        return Outcome(RunStatus.TIMED_OUT, time.monotonic() - started, error=error)
    except TaskStopped:
        return Outcome(RunStatus.STOPPED, time.monotonic() - started)
    except (Exception, SystemExit):  # a task calling sys.exit() fails; the worker goes on
        error = traceback.format_exc()
        return Outcome(RunStatus.FAILED, time.monotonic() - started, error=error)
    duration = time.monotonic() - started
    problem = json_problem(value)
    if problem:
        error = f"the result ({type(value).__name__}) cannot be stored as JSON: {problem}"
        return Outcome(RunStatus.FAILED, duration, error=error)
    return Outcome(RunStatus.COMPLETED, duration, result=value)


def record(task: Task, outcome: Outcome) -> bool:
    """Write the outcome (fenced on the task's lease); False when it was no longer ours."""
    if outcome.status is RunStatus.STOPPED:
        return False  # someone else already decided what became of it
    if outcome.status is RunStatus.COMPLETED:
        return Task.queue.complete(task.lease, outcome.result, outcome.duration)
    return Task.queue.fail(task.lease, outcome.error or "", outcome.duration)


def execute(task: Task) -> Outcome:
    """Run a claimed task here and record its outcome."""
    outcome = run(task)
    record(task, outcome)
    return outcome


def run_next(ops: list[str] | None = None) -> Task | None:
    """Claim one runnable task (of ``ops``, default every qualified op) and run it here."""
    ops = registry.qualified_ops() if ops is None else ops
    claimed = Task.queue.claim(conf.worker_id(), ops)
    if not claimed:
        return None
    task = claimed[0]
    execute(task)
    task.refresh_from_db()
    return task
