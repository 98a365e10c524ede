"""``Task``, one row per task, and the task API users write against.

Task classes are proxy models of ``Task`` (see ``registry.register``). The user API on
the model (create, wait, cancel, requeue) delegates every write to the model's job
manager, ``Task.queue`` (``django_fullctl.queue``), so the rules of the queue (one-statement
claim, fenced writes, atomic limits) hold whatever the caller.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_handleref.models import HandleRefModel

from django_fullctl import conf, notify, registry
from django_fullctl.exceptions import TaskStateError
from django_fullctl.jsonvalue import json_problem
from django_fullctl.queue import TaskQueue
from django_fullctl.states import FINAL_STATUSES, Lease, TaskStatus
from django_fullctl.taskmeta import TaskOptions


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
        max_length=16, choices=TaskStatus.choices(), default=TaskStatus.PENDING
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
    run_after = models.DateTimeField(
        null=True, blank=True, help_text="not started before this time (the database's clock)"
    )
    scheduled = models.BooleanField(
        default=False, help_text="not due yet (run_after or a retry's delay): not claimable"
    )
    errors = models.JSONField(
        default=list, blank=True, help_text="one entry per failed attempt, oldest first"
    )
    waited = models.BooleanField(
        default=False, help_text="someone waits for it: its completion sends a notification"
    )
    attempt = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=2)
    priority = models.IntegerField(default=0)
    claimed = models.DateTimeField(null=True, blank=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    result_id = models.CharField(max_length=64, null=True, blank=True, unique=True)

    objects = TaskManager()
    # the job manager: every write to task rows, the claim, the fenced transitions
    queue = TaskQueue()

    # how the registry recognises a task class without importing this module
    is_fullctl_task: ClassVar[bool] = True

    class Meta:
        default_manager_name = "objects"
        indexes = [
            # the claim: runnable rows only, each op's in claim order (the claim reads
            # every op of the pool from its own rows: see queue._PICKED)
            models.Index(
                "op",
                models.F("priority").desc(),
                "id",
                name="fullctl_task_claim_by_op",
                condition=Q(status=TaskStatus.PENDING, waiting=False, scheduled=False),
            ),
            # the due-time release and the earliest due time: rows not due yet only
            models.Index(
                fields=["run_after"],
                name="fullctl_task_due",
                condition=Q(status=TaskStatus.PENDING, scheduled=True),
            ),
            # limits, per-op counts, running tasks
            models.Index(
                fields=["op", "status", "limit_id"],
                name="fullctl_task_active",
                condition=Q(status__in=[TaskStatus.PENDING, TaskStatus.RUNNING]),
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
        """This class's ``TaskMeta``, checked when it was registered."""
        return registry.options_of(cls)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Do the work; task classes override this. The return value is the result."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")

    def recorded(self, outcome: Any) -> None:
        """Called by ``runner.record`` once this attempt's outcome is written (never for a
        run that was stopped or lost its lease); task classes may override it."""

    @property
    def lease(self) -> Lease:
        """The fence of this attempt's writes (see ``states.Lease``)."""
        return Lease(self.pk, self.attempt)

    # -- creation ---------------------------------------------------------

    @classmethod
    def create_task(
        cls, *args: Any, parent: "Task | None" = None, timeout: int | None = None, **kwargs: Any
    ) -> "Task":
        """Queue a new task of this class; ``args``/``kwargs`` are handed to ``run()``.

        Raises ``TypeError`` naming the argument when one cannot be stored as JSON, and
        ``TaskLimitError`` when ``TaskMeta.limit`` instances are already pending or running.
        """
        return cls.configure().create_task(*args, parent=parent, timeout=timeout, **kwargs)

    @classmethod
    def create_tasks(
        cls, calls: "Iterable[tuple[Sequence[Any], Mapping[str, Any]]]", *,
        parent: "Task | None" = None, timeout: int | None = None,
    ) -> "list[Task]":
        """Queue many tasks of this class in one statement: ``calls`` is ``[(args,
        kwargs), ...]``. ``TaskMeta.limit`` holds for the whole batch (all or nothing)."""
        return cls.configure().create_tasks(calls, parent=parent, timeout=timeout)

    @classmethod
    def configure(
        cls, *, run_after: datetime | timedelta | None = None, priority: int | None = None
    ) -> "TaskCreator":
        """A creator of tasks of this class that no poller starts before ``run_after`` (an
        aware datetime, or a delay), with ``priority`` instead of ``TaskMeta.priority``:
        ``MyTask.configure(run_after=timedelta(minutes=5)).create_task(...)``."""
        return TaskCreator(cls, run_after=run_after, priority=priority)

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
        cls = registry.get_task_class(self.op)
        if type(self) is not cls:
            self.__class__ = cls
        return self

    # -- waiting ----------------------------------------------------------

    def _finished_check(self) -> Callable[[], bool]:
        """The check ``notify`` re-runs while waiting. Its first run, after the LISTEN,
        marks the row as waited for: only such a task's completion sends a notification,
        so a queue nobody waits on pays no NOTIFY per task."""
        watched = False

        def finished() -> bool:
            nonlocal watched
            if not watched:
                Task.queue.watch(self.pk)
                watched = True
            return Task.objects.filter(pk=self.pk, status__in=FINAL_STATUSES).exists()

        return finished

    def wait(self, timeout: float | None = None) -> "Task":
        """Block until the task is completed, failed or cancelled; raise TimeoutError after
        ``timeout`` seconds. Refreshes this instance and returns it."""
        notify.wait_until(self._finished_check(), notify.DONE_CHANNEL, timeout)
        self.refresh_from_db()
        return self

    async def async_wait(self, timeout: float | None = None) -> "Task":
        """``wait()`` for async code: never blocks the event loop."""
        await notify.async_wait_until(self._finished_check(), notify.DONE_CHANNEL, timeout)
        await self.arefresh_from_db()
        return self

    # -- control ----------------------------------------------------------

    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel a pending or running task (and its descendants)."""
        if not Task.queue.cancel(self.pk, reason):
            self.refresh_from_db()
            raise TaskStateError(f"{self} is {self.status}: only pending or running tasks cancel")
        self.refresh_from_db()

    def requeue(self) -> None:
        """Put a failed or cancelled task back in the queue as a fresh start."""
        if not Task.queue.retry(self.pk):
            self.refresh_from_db()
            raise TaskStateError(f"{self} is {self.status}: only failed or cancelled tasks requeue")
        self.refresh_from_db()

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        """Really delete (HandleRef's soft delete would leave a row in an unknown state)."""
        kwargs.pop("hard", None)
        return models.Model.delete(self, *args, **kwargs)


class TaskCreator:
    """What ``Task.configure(...)`` returns: ``create_task`` with those options."""

    def __init__(
        self, task_class: type[Task], *, run_after: datetime | timedelta | None = None,
        priority: int | None = None,
    ):
        if run_after is not None and not isinstance(run_after, datetime | timedelta):
            raise TypeError(f"run_after must be a datetime or a timedelta, not {run_after!r}")
        if isinstance(run_after, datetime) and settings.USE_TZ and timezone.is_naive(run_after):
            raise ValueError(
                f"run_after {run_after.isoformat()} is a naive datetime while USE_TZ is on:"
                " give it a time zone (e.g. django.utils.timezone.now() + timedelta(...))"
            )
        if priority is not None and type(priority) is not int:
            raise TypeError(f"priority must be a whole number, not {priority!r}")
        self.task_class = task_class
        self.run_after = run_after
        self.priority = priority

    def create_task(
        self, *args: Any, parent: Task | None = None, timeout: int | None = None, **kwargs: Any
    ) -> Task:
        """As ``Task.create_task``: every argument but ``parent`` and ``timeout`` goes to
        ``run()``."""
        task = self._build(args, kwargs, parent, timeout)
        Task.queue.enqueue(task, self.task_class.task_options().limit)
        return task

    def create_tasks(
        self, calls: Iterable[tuple[Sequence[Any], Mapping[str, Any]]], *,
        parent: Task | None = None, timeout: int | None = None,
    ) -> list[Task]:
        """As ``Task.create_tasks``, with these options."""
        tasks = []
        for i, call in enumerate(calls):
            if not (isinstance(call, tuple | list) and len(call) == 2):
                raise TypeError(f"call {i} of create_tasks must be an (args, kwargs) pair,"
                                f" not {call!r}")
            args, kwargs = call
            tasks.append(self._build(tuple(args), dict(kwargs), parent, timeout))
        return Task.queue.enqueue_many(tasks, self.task_class.task_options().limit)

    def _build(
        self, args: tuple, kwargs: dict, parent: Task | None, timeout: int | None
    ) -> Task:
        cls = self.task_class
        registry.get_task_class(cls.HandleRef.tag)  # refuse unregistered classes early
        _check_arguments(cls.HandleRef.tag, args, kwargs)
        options = cls.task_options()
        max_attempts = options.max_attempts or (
            options.retry.max_attempts if options.retry else conf.settings().default_max_attempts
        )
        task = cls(
            op=cls.HandleRef.tag,
            param={"args": list(args), "kwargs": kwargs},
            timeout=timeout if timeout is not None else options.timeout,
            parent=parent,
            source=conf.worker_id(),
            max_attempts=max_attempts,
            priority=options.priority if self.priority is None else self.priority,
            run_after=self.run_after,
        )
        task.limit_id = task.compute_limit_id()
        return task


class TaskHeartbeat(models.Model):
    """The last sign of life of a running task, written by its worker's tracking thread."""

    task = models.OneToOneField(Task, on_delete=models.CASCADE, related_name="heartbeat")
    timestamp = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["timestamp"], name="fullctl_heartbeat_ts")]

    def __str__(self) -> str:
        return f"heartbeat of task {self.task_id} at {self.timestamp:%Y-%m-%d %H:%M:%S}"


def _check_arguments(op: str, args: tuple, kwargs: dict) -> None:
    """Refuse arguments that cannot be stored, naming the culprit (nothing gets stored)."""
    named = [(f"argument {i}", value) for i, value in enumerate(args)]
    named += [(f"keyword argument {key!r}", value) for key, value in kwargs.items()]
    for name, value in named:
        problem = json_problem(value)
        if problem:
            raise TypeError(f"{name} of task {op!r} cannot be stored as JSON ({problem})")
