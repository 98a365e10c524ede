"""Run one claimed task in this process and record how it ended.

Running (user code, no database writes of ours) and recording (one fenced write) are
two steps, so a worker can retry the record through a database outage without running
the task again. ``execute`` does both; ``run_next`` claims and executes one task
in-process (handy in tests, shells and scripts).
"""

import contextlib
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django_fullctl import conf, registry
from django_fullctl.exceptions import TaskTimedOut
from django_fullctl.jsonvalue import json_problem
from django_fullctl.models import Task
from django_fullctl.retry import RetryLater
from django_fullctl.states import RunStatus


class TaskStopped(BaseException):
    """Raised inside a task that is no longer this worker's to run: it was cancelled, or
    rescued and given to another worker. Stopping it keeps one task from running twice."""


@dataclass(frozen=True)
class Outcome:
    """How a run ended, with what is to be recorded (``error``: the traceback) and what
    may be logged (``error_class`` and the first line of the message)."""

    status: RunStatus
    duration: float
    result: Any = None
    error: str | None = None
    error_class: str | None = None
    error_message: str | None = None
    # a failure that will be tried again after this many seconds (None: final)
    retry_in: float | None = None

    @classmethod
    def failed(cls, task: Task, exc: BaseException, duration: float, error: str) -> "Outcome":
        message = str(exc).strip().splitlines()
        return cls(RunStatus.FAILED, duration, error=error, error_class=type(exc).__name__,
                   error_message=message[0] if message else "", retry_in=retry_in(task, exc))


def retry_in(task: Task, exc: BaseException) -> float | None:
    """Seconds until the next attempt of a task that failed with ``exc``, or None when this
    failure is final: the last attempt, or an exception the ``TaskMeta.retry`` policy does
    not retry. ``RetryLater`` always asks for one (within ``max_attempts``)."""
    if task.attempt >= task.max_attempts:
        return None
    if isinstance(exc, RetryLater):
        return exc.delay
    policy = task.task_options().retry
    if policy is not None and policy.retries(type(exc)):
        return policy.delay_for(task.attempt)
    return None


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
    except TaskTimedOut as exc:  # retried only when the policy names TaskTimedOut
        error = timeout_error(task.timeout or 0)
        return Outcome(RunStatus.TIMED_OUT, time.monotonic() - started, error=error,
                       error_class="TaskTimedOut", error_message=error,
                       retry_in=retry_in(task, exc))
    except TaskStopped:
        return Outcome(RunStatus.STOPPED, time.monotonic() - started)
    except (Exception, SystemExit) as exc:  # sys.exit() in a task fails it; the worker goes on
        return Outcome.failed(task, exc, time.monotonic() - started, traceback.format_exc())
    duration = time.monotonic() - started
    problem = _json_result_problem(value) or _result_type_problem(task, value)
    if problem:
        return Outcome(RunStatus.FAILED, duration, error=problem,
                       error_class="TaskResultError", error_message=problem)
    return Outcome(RunStatus.COMPLETED, duration, result=value)


def _json_result_problem(value: Any) -> str | None:
    problem = json_problem(value)
    if problem is None:
        return None
    return f"the result ({type(value).__name__}) cannot be stored as JSON: {problem}"


def _result_type_problem(task: Task, value: Any) -> str | None:
    """Why ``TaskMeta.result_type`` rejects the value ``run()`` returned (None: it takes
    it). Checked before recording, so a completed task's ``.result`` always reads."""
    result_type = task.task_options().result_type
    if result_type is None or value is None:
        return None
    try:
        result_type(value)
    except Exception as exc:
        name = getattr(result_type, "__name__", repr(result_type))
        return (f"the result ({type(value).__name__}) is rejected by result_type {name}:"
                f" {type(exc).__name__}: {exc}")
    return None


def record(task: Task, outcome: Outcome) -> bool:
    """Write the outcome (fenced on the task's lease); False when it was no longer ours."""
    if outcome.status is RunStatus.STOPPED:
        return False  # someone else already decided what became of it
    if outcome.status is RunStatus.COMPLETED:
        done = Task.queue.complete(task.lease, outcome.result, outcome.duration)
    elif outcome.retry_in is not None:
        done = Task.queue.retry_later(
            task.lease, outcome.retry_in, outcome.error or "", outcome.error_class
        )
    else:
        done = Task.queue.fail(
            task.lease, outcome.error or "", outcome.duration, outcome.error_class
        )
    if done:
        task.recorded(outcome)  # the task class's hook: the outcome is written
    return done


def record_and_claim(
    task: Task, outcome: Outcome, claim_for: tuple[str, Iterable[str]] | None
) -> tuple[bool, Task | None]:
    """``record``, and when ``claim_for`` (worker id, ops) is given and the task
    completed, claim that worker's next task in the same statement (see
    ``TaskQueue.complete_and_claim``). Returns (recorded, next task or None)."""
    if claim_for is None or outcome.status is not RunStatus.COMPLETED:
        return record(task, outcome), None
    worker_id, ops = claim_for
    done, next_task = Task.queue.complete_and_claim(
        task.lease, outcome.result, outcome.duration, worker_id, ops
    )
    if done:
        task.recorded(outcome)
    return done, next_task


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
