"""``DjangoTaskCall``: the one task class behind every Django Tasks queue.

A row of op ``django.tasks:<queue>`` stores the call in its param: ``args`` is
``[module path of the @task, args, kwargs, backend alias]``. ``run()`` imports the
``@task`` by that path, calls its function (an async one with ``asyncio.run``, or through
``async_to_sync`` when an event loop already runs in this thread), handing it a
``TaskContext`` first when it ``takes_context``, and returns the JSON-normalised value.

This module is imported by ``django_fullctl.models`` (so pollers know the ops of the
configured queues without anyone enqueuing first) and imports neither the Tasks framework
nor the backend at module level: loading the app never needs either.

Error class paths: fullctl's error history stores an exception's class *name*. ``run()``
adds one note to an exception before it propagates (``[fullctl] exception <dotted path>,
attempt <n>, worker <id>, started <iso time>``), so the traceback in the history says the
full path, the worker and the start of the failed attempt; ``backend`` reads it back into
``TaskError.exception_class_path``, ``worker_ids`` and ``started_at``. Failures without a
traceback are named by the classes below (``WorkerLost``, ``TaskCancelled``, ...).
"""

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from django.db import models
from django.utils.module_loading import import_string

from django_fullctl import registry
from django_fullctl.models.task import Task
from django_fullctl.states import RunStatus
from django_fullctl.taskmeta import TaskOptions
from django_fullctl.tasks_backend.options import retry_policy
from django_fullctl.tasks_backend.rows import (
    OP_PREFIX,
    backend_options,
    configured_backends,
    exception_path,
    queue_op,
)

log = logging.getLogger("django_fullctl.tasks_backend")

def register_configured_queues(queues: Any = None) -> list[str]:
    """Register ``DjangoTaskCall`` under the op of every queue of ``queues`` (default: every
    queue of every ``TASKS`` alias that uses this backend)."""
    if queues is None:
        queues = set()
        for params in configured_backends().values():
            queues.update(params.get("QUEUES") or ["default"])
    ops = [queue_op(q) for q in sorted(queues)]
    for op in ops:
        registry.register_op(op, DjangoTaskCall)
    return ops


class DjangoTaskCallManager(models.Manager):
    """The rows of every Django Tasks queue."""

    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(op__startswith=OP_PREFIX)


class _OptionsOfRow:
    """``task_options``: on the class, its ``TaskMeta`` (as on every task class); on a row,
    also the retry policy of its ``@task`` or of its backend's ``OPTIONS``, which is what
    the runner asks when an attempt failed."""

    def __get__(self, instance: Any, owner: type) -> Any:
        if instance is None:
            return lambda: registry.options_of(owner)
        return instance.row_options


class DjangoTaskCall(Task):
    """Runs one call of a Django ``@task`` function (see the module's docstring)."""

    objects = DjangoTaskCallManager()

    task_options = _OptionsOfRow()

    class Meta:
        proxy = True
        app_label = "django_fullctl"
        verbose_name = "Django task call"

    class HandleRef:
        tag = "django.tasks"

    # -- what the row holds ----------------------------------------------------

    @property
    def call(self) -> tuple[str, list, dict, str]:
        """(module path of the @task, args, kwargs, backend alias) of this row."""
        args = list(self.param.get("args") or [])
        path, call_args, call_kwargs, alias = (args + [None, [], {}, "default"][len(args):])[:4]
        return str(path), list(call_args or []), dict(call_kwargs or {}), str(alias)

    def framework_task(self) -> Any:
        """The ``@task`` object this row calls, imported by its module path."""
        return import_string(self.call[0])

    def row_options(self) -> TaskOptions:
        options = registry.options_of(type(self))
        alias = self.call[3]
        policy = None
        with contextlib.suppress(ImportError):
            policy = getattr(self.framework_task(), "retry", None)
        if policy is None:
            policy = backend_options(alias).get("retry")
        return replace(options, retry=retry_policy(policy, self.max_attempts),
                       timeout=self.timeout, max_attempts=self.max_attempts)

    # -- running ---------------------------------------------------------------

    def run(self, path: str, args: list, kwargs: dict, alias: str = "default",
            *_: Any, **__: Any) -> Any:
        from django_fullctl.tasks_backend import compat, results

        try:
            framework_task = import_string(path)
            result = results.to_result(self, framework_task)
            compat.task_started.send(type(framework_task.get_backend()), task_result=result)
            func = framework_task.func
            if framework_task.takes_context:
                args = [compat.TaskContext(task_result=result), *args]
            if asyncio.iscoroutinefunction(func):
                value = _run_coroutine(func, args, kwargs)
            else:
                value = func(*args, **kwargs)
            return compat.normalize_json(value)
        except BaseException as exc:
            started = self.started.isoformat() if self.started else "-"
            exc.add_note(
                f"[fullctl] exception {exception_path(type(exc))}, attempt {self.attempt},"
                f" worker {self.queue_id or '-'}, started {started}"
            )
            raise

    def recorded(self, outcome: Any) -> None:
        """The outcome is written: send ``task_finished`` when it is final (a success, or a
        failure that will not be retried)."""
        final = outcome.status is RunStatus.COMPLETED or outcome.retry_in is None
        if not final:
            return
        try:
            from django_fullctl.tasks_backend import compat, results

            row = Task.objects.get(pk=self.pk)
            row.__class__ = DjangoTaskCall
            framework_task = import_string(self.call[0])
            result = results.to_result(row, framework_task)
            compat.task_finished.send(type(framework_task.get_backend()), task_result=result)
        except Exception:
            log.exception("task_finished of task %s could not be sent", self.pk)


def _run_coroutine(func: Any, args: list, kwargs: dict) -> Any:
    """Run an async task function to its end: in this thread (the worker's main thread,
    where the timeout's SIGALRM lands), or in a thread of its own when an event loop
    already runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(func(*args, **kwargs))
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, func(*args, **kwargs)).result()


register_configured_queues()
