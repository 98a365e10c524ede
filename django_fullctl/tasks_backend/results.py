"""Rows as the framework's ``TaskResult``: statuses, return values, one ``TaskError`` per
failed attempt (with the dotted path ``DjangoTaskCall.run`` noted in its traceback), the
worker of every attempt, and fullctl's ``wait()``/``async_wait()`` extension."""

import builtins
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.utils.module_loading import import_string

from django_fullctl.models.task import Task
from django_fullctl.states import TaskStatus
from django_fullctl.tasks_backend import compat, rows

_STATUS = {
    TaskStatus.PENDING: compat.TaskResultStatus.READY,
    TaskStatus.RUNNING: compat.TaskResultStatus.RUNNING,
    TaskStatus.COMPLETED: compat.TaskResultStatus.SUCCESSFUL,
    TaskStatus.FAILED: compat.TaskResultStatus.FAILED,
    TaskStatus.CANCELLED: compat.TaskResultStatus.FAILED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class FullctlTaskResult(compat.TaskResult):
    """The framework's ``TaskResult``, plus fullctl's ``wait()``/``async_wait()``: block
    (woken by LISTEN/NOTIFY, with a poll backstop) until the task is finished."""

    def wait(self, timeout: float | None = None) -> "FullctlTaskResult":
        """Block until the task is finished (raise TimeoutError after ``timeout`` seconds),
        then ``refresh()``."""
        find_row(self.id).wait(timeout)
        self.refresh()
        return self

    async def async_wait(self, timeout: float | None = None) -> "FullctlTaskResult":
        """``wait()`` for async code: never blocks the event loop."""
        row = await sync_to_async(find_row)(self.id)
        await row.async_wait(timeout)
        await self.arefresh()
        return self


def find_row(result_id: Any) -> Any:
    """The row of a result id, as its task class; an unknown or malformed id raises the
    framework's ``TaskResultDoesNotExist``."""
    if not isinstance(result_id, str) or not 0 < len(result_id) <= 64:
        raise compat.TaskResultDoesNotExist(f"no task result has the id {result_id!r}")
    row = Task.objects.filter(result_id=result_id, op__startswith=rows.OP_PREFIX).first()
    if row is None:
        raise compat.TaskResultDoesNotExist(f"no task result has the id {result_id!r}")
    return row.cast()


# -- rows as results ------------------------------------------------------------------


def to_result(row: Any, framework_task: Any = None) -> FullctlTaskResult:
    """The framework's view of a row (its ``@task`` imported by path unless given)."""
    path, args, kwargs, alias = row.call
    if framework_task is None:
        framework_task = import_string(path)
    status = _STATUS[TaskStatus(row.status)]
    entries = [e for e in (row.errors or []) if isinstance(e, dict)]
    errors = [
        compat.TaskError(exception_class_path=_class_path(e), traceback=str(e.get("error") or ""))
        for e in entries
    ]
    if row.status == TaskStatus.CANCELLED:
        errors.append(compat.TaskError(exception_class_path=rows.exception_path(
                                           rows.TaskCancelled),
                                       traceback=row.error or "cancelled"))
    elif row.status == TaskStatus.FAILED and not entries:
        errors.append(compat.TaskError(exception_class_path=rows.exception_path(
                                           rows.TaskFailed),
                                       traceback=row.error or "failed"))
    workers, first_start = _attempts(row, entries)
    result = FullctlTaskResult(
        task=_task_of_row(framework_task, row, alias),
        id=row.result_id or "",
        status=status,
        enqueued_at=row.created,
        started_at=first_start,
        finished_at=row.finished if status in (
            compat.TaskResultStatus.SUCCESSFUL, compat.TaskResultStatus.FAILED) else None,
        last_attempted_at=row.started if row.attempt else None,
        args=args,
        kwargs=kwargs,
        backend=alias,
        errors=errors,
        worker_ids=workers,
    )
    if status == compat.TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", row.result_data)
    return result


def _task_of_row(framework_task: Any, row: Any, alias: str) -> Any:
    """The ``@task`` as this row was enqueued: its queue, priority and due time."""
    try:
        return framework_task.using(
            queue_name=rows.queue_of(row.op), priority=row.priority, backend=alias,
            run_after=row.run_after,
        )
    except compat.InvalidTask:  # e.g. a queue since removed from the settings
        return framework_task


def _last_note(entry: dict) -> Any:
    match = None
    for match in rows.NOTE.finditer(str(entry.get("error") or "")):  # noqa: B007 - the last one
        pass
    return match


def _class_path(entry: dict) -> str:
    """The dotted path of the exception of one history entry: from the note ``run()`` added
    to its traceback, else from the entries fullctl writes without one."""
    note = _last_note(entry)
    if note:
        return note["path"]
    name = entry.get("error_class")
    if name in rows.KNOWN_CLASSES:
        return rows.KNOWN_CLASSES[name]
    if isinstance(name, str) and isinstance(getattr(builtins, name, None), type):
        return f"builtins.{name}"
    return rows.exception_path(rows.TaskFailed)


def _attempts(
    row: Any, entries: list[dict]
) -> tuple[list[str], datetime | None]:
    """One worker id per attempt (from the notes and rescue messages of the history, and
    the row's worker for the last attempt), and the start of the first attempt."""
    workers: dict[int, str] = {}
    starts: list[datetime] = []
    for entry in entries:
        attempt = entry.get("attempt")
        note = _last_note(entry)
        if note:
            workers[int(note["attempt"])] = note["worker"]
            with contextlib.suppress(ValueError):
                starts.append(datetime.fromisoformat(note["started"]))
        elif isinstance(attempt, int):
            lost = rows.LOST_WORKER.search(str(entry.get("error") or ""))
            if lost:
                workers.setdefault(attempt, lost["worker"])
    if row.attempt and row.queue_id:
        workers.setdefault(row.attempt, row.queue_id)
    if row.started and row.attempt:
        starts.append(row.started)
    return [workers.get(n, "") for n in range(1, row.attempt + 1)], min(starts, default=None)
