"""``FullctlBackend``: Django's Tasks API on fullctl's task table and queue.

* ``enqueue`` inserts one row of op ``django.tasks:<queue>`` (``calls.DjangoTaskCall``)
  through ``Task.queue.enqueue``: inside the caller's transaction, so a rollback leaves
  nothing, and the pollers are woken on commit. ``aenqueue`` runs it in a thread
  (``sync_to_async``), never in the event loop.
* The result id is ``Task.result_id``: ``secrets.token_urlsafe(32)``, not the primary key.
* Statuses: pending (also scheduled, waiting for a retry) is READY, running is RUNNING,
  completed is SUCCESSFUL, failed and cancelled are FAILED (a cancellation adds a
  ``TaskCancelled`` error). ``errors`` has one ``TaskError`` per entry of the row's error
  history (``calls`` explains how the dotted class path gets there).
* Signals: ``task_enqueued`` after the insert (in the caller's process), ``task_started``
  in the worker before the function is called, ``task_finished`` in the worker once the
  final outcome is written (``runner.record`` calls ``DjangoTaskCall.recorded``): never for
  a run that was stopped or lost its lease, nor for a failed attempt that will be retried.
"""

import secrets
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from asgiref.sync import sync_to_async
from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from django_fullctl import conf
from django_fullctl.jsonvalue import json_problem
from django_fullctl.retry import Retry
from django_fullctl.tasks_backend import compat, rows
from django_fullctl.tasks_backend.options import retry_policy
from django_fullctl.tasks_backend.results import FullctlTaskResult, find_row, to_result


def _calls() -> Any:
    """The task class and its helpers, imported when first needed: they are models of the
    ``django_fullctl`` app, which cannot be imported when the app is not installed (then
    ``check()`` says so instead of an import error)."""
    from django_fullctl.tasks_backend import calls

    return calls


@dataclass(frozen=True, slots=True, kw_only=True)
class FullctlTask(compat.Task):
    """The framework's ``Task`` with fullctl's per-task options, given to ``@task``:
    ``@task(max_attempts=5, timeout=60, retry=Retry(on=(ConnectionError,)))``. Unset, they
    come from the backend's ``OPTIONS``."""

    max_attempts: int | None = None
    timeout: int | None = None
    retry: Any = None  # a Retry, a dict of its fields, or None


class FullctlBackend(compat.BaseTaskBackend):
    """``TASKS = {"default": {"BACKEND": "django_fullctl.tasks_backend.FullctlBackend",
    "QUEUES": [...], "OPTIONS": {"max_attempts": 3, "timeout": 600, "retry": {...}}}}``"""

    task_class = FullctlTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        options = dict(self.options)
        unknown = set(options) - {"max_attempts", "timeout", "retry"}
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown keys {sorted(unknown)}: the fullctl"
                " backend takes max_attempts, timeout and retry"
            )
        self.max_attempts = _positive(alias, "max_attempts", options.get("max_attempts"))
        self.timeout = _positive(alias, "timeout", options.get("timeout"))
        try:
            self.retry: Retry | None = retry_policy(
                options.get("retry"), self.max_attempts or 1
            )
        except (TypeError, ValueError, ImportError) as exc:
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']['retry']: {exc}") from exc
        # the ops of these queues, also when the settings changed since the app loaded
        if apps.is_installed("django_fullctl"):
            _calls().register_configured_queues(self.queues)

    # -- the framework's API ---------------------------------------------------

    def validate_task(self, task: Any) -> None:
        """The framework's checks (raising its own exceptions), with ``run_after`` also as
        a delay (a ``timedelta``, counted on the database's clock), and fullctl's options."""
        if isinstance(task.run_after, timedelta):
            names = ("func", "priority", "backend", "queue_name", "takes_context")
            super().validate_task(SimpleNamespace(
                run_after=None, **{name: getattr(task, name) for name in names}
            ))
        else:
            super().validate_task(task)
        for name in ("max_attempts", "timeout"):
            value = getattr(task, name, None)
            if value is not None and (type(value) is not int or value < 1):
                raise compat.InvalidTask(f"{name} must be a positive whole number, not {value!r}")
        try:
            retry_policy(getattr(task, "retry", None), 1)
        except (TypeError, ValueError, ImportError) as exc:
            raise compat.InvalidTask(f"retry: {exc}") from exc

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> FullctlTaskResult:
        try:
            call_args = compat.normalize_json(list(args))
            call_kwargs = compat.normalize_json(dict(kwargs))
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"the arguments of task {task.module_path} cannot be stored as JSON: {exc}"
            ) from exc
        problem = json_problem([call_args, call_kwargs])
        if problem:
            raise TypeError(
                f"the arguments of task {task.module_path} cannot be stored as JSON: {problem}"
            )
        max_attempts = self._max_attempts(task)
        calls = _calls()
        row = calls.DjangoTaskCall(
            op=rows.queue_op(task.queue_name),
            param={"args": [task.module_path, call_args, call_kwargs, self.alias], "kwargs": {}},
            timeout=getattr(task, "timeout", None) or self.timeout,
            max_attempts=max_attempts,
            priority=task.priority,
            run_after=task.run_after,
            source=conf.worker_id(),
            result_id=secrets.token_urlsafe(32),
        )
        calls.Task.queue.enqueue(row, None)
        result = to_result(row, task)
        compat.task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> FullctlTaskResult:
        return await sync_to_async(self.enqueue, thread_sensitive=True)(task, args, kwargs)

    def get_result(self, result_id: str) -> FullctlTaskResult:
        return to_result(find_row(result_id))

    async def aget_result(self, result_id: str) -> FullctlTaskResult:
        return await sync_to_async(self.get_result, thread_sensitive=True)(result_id)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors: list[checks.CheckMessage] = list(super().check(**kwargs))
        if not apps.is_installed("django_fullctl"):
            errors.append(checks.Error(
                f"TASKS[{self.alias!r}] uses the fullctl backend, but 'django_fullctl' is"
                " not in INSTALLED_APPS", hint="Add 'django_fullctl' to INSTALLED_APPS.",
                id="fullctl.E201",
            ))
        if compat.FRAMEWORK_APP and not apps.is_installed(compat.FRAMEWORK_APP):
            errors.append(checks.Error(
                f"TASKS[{self.alias!r}] uses the fullctl backend on Django 5.2, where the"
                f" Tasks framework is the django-tasks backport: {compat.FRAMEWORK_APP!r} is"
                " not in INSTALLED_APPS", hint=f"Add {compat.FRAMEWORK_APP!r} to INSTALLED_APPS.",
                id="fullctl.E202",
            ))
        return errors

    # -- fullctl's options --------------------------------------------------------

    def _max_attempts(self, task: Any) -> int:
        own = getattr(task, "max_attempts", None)
        if own:
            return int(own)
        if self.max_attempts:
            return self.max_attempts
        policy = retry_policy(getattr(task, "retry", None), 1) or self.retry
        return policy.max_attempts if policy else conf.settings().default_max_attempts


def _positive(alias: str, name: str, value: Any) -> int | None:
    if value is None or (type(value) is int and value > 0):
        return value
    raise ImproperlyConfigured(
        f"TASKS[{alias!r}]['OPTIONS'][{name!r}] must be a positive whole number, not {value!r}"
    )
