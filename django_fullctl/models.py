"""The task models and the task API that users write against.

``Task`` is one row per task; task classes are proxy models of it (see ``register``).
Every change of state goes through ``django_fullctl.queue``, the one module that
writes task rows, so the rules of DESIGN.md (one-statement claim, fenced writes,
atomic limits) hold whatever the caller.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from django.db import models
from django.db.models import Q
from django_handleref.models import HandleRefModel

from django_fullctl import conf
from django_fullctl.exceptions import TaskStateError
from django_fullctl.qualifiers import Qualifier


class TaskStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
ACTIVE_STATUSES = (TaskStatus.PENDING, TaskStatus.RUNNING)


@dataclass(frozen=True)
class TaskOptions:
    """A task class's ``TaskMeta``, with the defaults filled in."""

    limit: int | None = None
    result_type: Any = None
    qualifiers: list[Qualifier] = field(default_factory=list)
    timeout: int | None = None
    max_attempts: int | None = None
    priority: int = 0


class TaskManager(models.Manager):
    """On a task class (a proxy), only that class's rows; on ``Task`` itself, all rows."""

    def get_queryset(self) -> models.QuerySet:
        queryset = super().get_queryset()
        if self.model._meta.proxy:
            queryset = queryset.filter(op=self.model.HandleRef.tag)
        return queryset


class Task(HandleRefModel):
    """A unit of work: its op (which class runs it), its arguments, its state and result."""

    op = models.CharField(max_length=255)
    param = models.JSONField(default=dict, help_text='{"args": [...], "kwargs": {...}}')
    status = models.CharField(
        max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING
    )
    limit_id = models.CharField(max_length=255, blank=True, default="")
    result_data = models.JSONField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    timeout = models.PositiveIntegerField(
        null=True, blank=True, help_text="maximum execution time in seconds"
    )
    time = models.FloatField(null=True, blank=True, help_text="execution time in seconds")
    source = models.CharField(max_length=255, blank=True, default="")
    queue_id = models.CharField(max_length=255, null=True, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    waiting = models.BooleanField(
        default=False, help_text="the parent has not completed yet: not claimable"
    )
    attempt = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=2)
    priority = models.IntegerField(default=0)
    claimed = models.DateTimeField(null=True, blank=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    objects = TaskManager()

    class Meta:
        default_manager_name = "objects"
        ordering = ("-id",)
        indexes = [
            # the claim: runnable rows only, in claim order
            models.Index(
                models.F("priority").desc(),
                "id",
                name="fullctl_task_claim",
                condition=Q(status="pending", waiting=False),
            ),
            # limits, per-op counts, running tasks
            models.Index(
                fields=["op", "status", "limit_id"],
                name="fullctl_task_active",
                condition=Q(status__in=["pending", "running"]),
            ),
        ]

    class HandleRef:
        tag = "task"

    class TaskMeta:
        pass

    def __str__(self) -> str:
        return f"{self.op}#{self.pk} ({self.status})"

    # -- definition -------------------------------------------------------

    @classmethod
    def task_options(cls) -> TaskOptions:
        meta = getattr(cls, "TaskMeta", None)
        names = TaskOptions.__dataclass_fields__
        return TaskOptions(**{n: getattr(meta, n) for n in names if hasattr(meta, n)})

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Do the work; task classes override this. The return value is the result."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")

    # -- creation ---------------------------------------------------------

    @classmethod
    def create_task(
        cls, *args: Any, parent: "Task | None" = None, timeout: int | None = None, **kwargs: Any
    ) -> "Task":
        """Queue a new task of this class; ``args``/``kwargs`` are handed to ``run()``.

        Raises ``TypeError`` naming the argument when one cannot be stored as JSON, and
        ``TaskLimitError`` when ``TaskMeta.limit`` instances are already pending or running.
        """
        from django_fullctl import queue, registry

        registry.get_task_class(cls.HandleRef.tag)  # refuse unregistered classes early
        _check_json(cls.HandleRef.tag, args, kwargs)
        options = cls.task_options()
        task = cls(
            op=cls.HandleRef.tag,
            param={"args": list(args), "kwargs": kwargs},
            timeout=timeout if timeout is not None else options.timeout,
            parent=parent,
            source=conf.worker_id(),
            max_attempts=options.max_attempts or conf.get("TASK_DEFAULT_MAX_ATTEMPTS"),
            priority=options.priority,
        )
        task.limit_id = task.compute_limit_id()
        return queue.enqueue(task, options.limit)

    def compute_limit_id(self) -> str:
        """Evaluate ``generate_limit_id``, which may be a property (as documented) or a method."""
        generator = getattr(type(self), "generate_limit_id", None)
        if generator is None:
            return ""
        value = self.generate_limit_id
        if callable(value):
            value = value()
        return "" if value is None else str(value)

    # -- reading ----------------------------------------------------------

    @property
    def result(self) -> Any:
        """The value ``run()`` returned, passed through ``TaskMeta.result_type``."""
        if self.result_data is None:
            return None
        result_type = self.task_options().result_type
        return self.result_data if result_type is None else result_type(self.result_data)

    def cast(self) -> "Task":
        """This row as an instance of its registered task class (raises TaskNotRegistered)."""
        from django_fullctl import registry

        cls = registry.get_task_class(self.op)
        if type(self) is not cls:
            self.__class__ = cls
        return self

    # -- waiting ----------------------------------------------------------

    def wait(self, timeout: float | None = None) -> "Task":
        """Block until the task is completed, failed or cancelled; raise TimeoutError after
        ``timeout`` seconds. Refreshes this instance and returns it."""
        from django_fullctl import notify

        notify.wait_for_final(self.pk, timeout)
        self.refresh_from_db()
        return self

    async def async_wait(self, timeout: float | None = None) -> "Task":
        """``wait()`` for async code: never blocks the event loop."""
        from asgiref.sync import sync_to_async

        from django_fullctl import notify

        await notify.async_wait_for_final(self.pk, timeout)
        await sync_to_async(self.refresh_from_db)()
        return self

    # -- control ----------------------------------------------------------

    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel a pending or running task (and its descendants)."""
        from django_fullctl import queue

        if not queue.cancel(self.pk, reason):
            self.refresh_from_db()
            raise TaskStateError(f"{self} is {self.status}: only pending or running tasks cancel")
        self.refresh_from_db()

    def requeue(self) -> None:
        """Put a failed or cancelled task back in the queue as a fresh start."""
        from django_fullctl import queue

        if not queue.retry(self.pk):
            self.refresh_from_db()
            raise TaskStateError(f"{self} is {self.status}: only failed or cancelled tasks requeue")
        self.refresh_from_db()

    def delete(self, *args: Any, **kwargs: Any):
        """Really delete (HandleRef's soft delete would leave a row in an unknown state)."""
        kwargs.pop("hard", None)
        return models.Model.delete(self, *args, **kwargs)


class TaskHeartbeat(models.Model):
    """The last sign of life of a running task, written by its worker's tracking thread."""

    task = models.OneToOneField(Task, on_delete=models.CASCADE, related_name="heartbeat")
    timestamp = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["timestamp"], name="fullctl_heartbeat_ts")]

    def __str__(self) -> str:
        return f"heartbeat of task {self.task_id} at {self.timestamp:%Y-%m-%d %H:%M:%S}"


def _check_json(op: str, args: tuple, kwargs: dict) -> None:
    """Refuse arguments that cannot be stored, naming the culprit (nothing gets stored)."""
    named = [(f"argument {i}", value) for i, value in enumerate(args)]
    named += [(f"keyword argument {key!r}", value) for key, value in kwargs.items()]
    for name, value in named:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{name} of task {op!r} cannot be stored as JSON"
                f" ({type(value).__name__}: {exc})"
            ) from exc


from django_fullctl.commands import CommandTask  # noqa: E402,F401
