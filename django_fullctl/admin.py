"""Task admin at /admin/django_fullctl/task/ (staff only, as every Django admin page).

A window on the queue, not an editor: tasks are created by ``create_task`` and change state
through ``Task.queue``, never through a form. So there is no "Add task", a task's page is
view-only (every field read-only, no save button), and the only changes made here are the
cancel and requeue actions, which call ``Task.queue``, and Django's delete (superusers, or
staff given the delete permission), which goes through the model's ``delete``.
"""

import contextlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.urls import reverse
from django.utils.html import format_html

from django_fullctl.display import (
    format_age,
    format_duration,
    format_param_preview,
    format_timestamp,
)
from django_fullctl.models import Task, TaskHeartbeat
from django_fullctl.states import ACTIVE_STATUSES, TaskStatus


def _pre(text: str) -> str:
    return format_html(
        '<pre style="margin: 0; white-space: pre-wrap; overflow-wrap: anywhere">{}</pre>', text
    )


def _json(value: Any) -> str:
    return _pre(json.dumps(value, indent=2, ensure_ascii=False))


def _column(
    field: str, render: Callable[[Any], str], nowrap: bool = False
) -> Callable[[Task], str | None]:
    """A change-list column showing ``field`` through ``render`` and sorting on it.

    Named after the field, so its cells keep the field's classes (``column-time``,
    ``field-time``), as a plain field column would. ``nowrap``: on one line (``2 min 5 s``).
    """

    def column(task: Task) -> str | None:
        value = getattr(task, field)
        if value is None:
            return None
        if nowrap:
            return format_html('<span style="white-space: nowrap">{}</span>', render(value))
        return render(value)

    column.__name__ = field
    label = str(Task._meta.get_field(field).verbose_name)
    return admin.display(description=label, ordering=field)(column)


def _parent_link(task: Task) -> str | None:
    """The parent column: ``#12``, a link to the parent's page."""
    if task.parent_id is None:
        return None
    url = reverse("admin:django_fullctl_task_change", args=[task.parent_id])
    return format_html('<a href="{}">#{}</a>', url, task.parent_id)


_parent_link.__name__ = "parent"  # the documented column class: column-parent
parent_column = admin.display(description="parent", ordering="parent")(_parent_link)


def _timestamp(field: str, label: str | None = None) -> Callable[[Any, Task], str]:
    """A read-only field of the task's page: timestamp ``field`` to the second."""

    @admin.display(description=label or field)
    def show(model_admin: Any, task: Task) -> str:
        return model_admin._or_empty(getattr(task, field), format_timestamp)

    return show


@admin.display(description="status", ordering="status")
def status(task: Task) -> str:
    """The status, with "scheduled" for a pending task that is not due yet."""
    if task.status == TaskStatus.PENDING and task.scheduled:
        return "Scheduled"
    return task.get_status_display()


def _history_entry(entry: dict[str, Any]) -> str:
    """``attempt 2, 2026-12-02 10:00:03, ConnectionError`` and the error below it."""
    head = [f"attempt {entry.get('attempt')}"]
    with contextlib.suppress(KeyError, TypeError, ValueError):
        head.append(format_timestamp(datetime.fromisoformat(str(entry["at"]))))
    if entry.get("error_class"):
        head.append(str(entry["error_class"]))
    return f"{', '.join(head)}\n{entry.get('error') or ''}".rstrip()


def _can_view_tasks(request: Any) -> bool:
    opts = Task._meta
    return any(
        request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
        for action in ("view", "change")
    )


# -- the admin ---------------------------------------------------------------


class TaskHeartbeatInline(admin.StackedInline):
    """The task's last sign of life, and how long ago that was (read-only: the worker
    writes it; requeuing the task removes it)."""

    model = TaskHeartbeat
    fields = readonly_fields = ("last_beat", "age")
    extra = 0
    max_num = 0

    @admin.display(description="timestamp")
    def last_beat(self, heartbeat: TaskHeartbeat) -> str:
        return format_timestamp(heartbeat.timestamp)

    @admin.display(description="age")
    def age(self, heartbeat: TaskHeartbeat) -> str:
        return format_age(heartbeat.timestamp)

    def has_view_permission(self, request: Any, obj: Any = None) -> bool:
        return _can_view_tasks(request)  # whoever sees the task sees its heartbeat

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = (
        "id", "op", "source", "queue_id", parent_column, status,
        _column("param", format_param_preview), _column("time", format_duration, nowrap=True),
        _column("created", format_timestamp, nowrap=True),
    )
    list_filter = ("status", "op")
    ordering = ("-id",)  # on the admin, not the model: queue queries need no ORDER BY
    search_fields = ("=id", "op")
    inlines = (TaskHeartbeatInline,)
    actions = ("cancel_tasks", "requeue_tasks")
    fieldsets = (
        (None, {"fields": (
            "op", "status", "parent", "param_json", "result_json", "error_text", "error_history",
        )}),
        ("Queue", {"fields": (
            "source", "queue_id", "waiting", "scheduled", "limit_id", "priority", "attempts",
            "timeout", "duration",
        )}),
        ("Times", {"fields": (
            "created_at", "due_at", "claimed_at", "started_at", "finished_at", "updated_at",
        )}),
    )
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]

    # -- what may be done here: look, cancel, requeue, delete ------------------

    def has_add_permission(self, request: Any) -> bool:
        return False  # tasks are created by create_task()

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        # a task's page is view-only (Django renders every field read-only, without save
        # buttons, and refuses a POST); on the list, the change permission allows the actions
        return obj is None and super().has_change_permission(request)

    def get_inline_instances(self, request: Any, obj: Any = None) -> list:
        # the heartbeat section only when there is one (a task that never ran has none)
        if obj is None or not TaskHeartbeat.objects.filter(task_id=obj.pk).exists():
            return []
        return super().get_inline_instances(request, obj)

    def changelist_view(self, request: Any, extra_context: dict | None = None) -> Any:
        # the list is a wide table: it gets the whole window, without the navigation sidebar
        # (the breadcrumbs stay), so that it reads well in 1400 px
        context = {"is_nav_sidebar_enabled": False, **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    # -- the task's page ---------------------------------------------------------

    @admin.display(description="param")
    def param_json(self, task: Task) -> str:
        return _json(task.param)

    # (Django shows a read-only method's None as "None": these show "-" as the list does)

    @admin.display(description="result")
    def result_json(self, task: Task) -> str:
        return self._or_empty(task.result_data, _json)

    @admin.display(description="error")
    def error_text(self, task: Task) -> str:
        return self._or_empty(task.error or None, _pre)

    @admin.display(description="failed attempts")
    def error_history(self, task: Task) -> str:
        """Each failed attempt's error, oldest first (the last one is also ``error``)."""
        if not task.errors:
            return self.get_empty_value_display()
        return _pre("\n\n".join(_history_entry(e) for e in task.errors))

    @admin.display(description="attempt")
    def attempts(self, task: Task) -> str:
        return f"{task.attempt} of {task.max_attempts}"

    @admin.display(description="time")
    def duration(self, task: Task) -> str:
        return self._or_empty(task.time, format_duration)

    def _or_empty(self, value: Any, render: Callable[[Any], str]) -> str:
        return self.get_empty_value_display() if value is None else render(value)

    created_at = _timestamp("created")
    due_at = _timestamp("run_after", "due")
    claimed_at = _timestamp("claimed")
    started_at = _timestamp("started")
    finished_at = _timestamp("finished")
    updated_at = _timestamp("updated")

    # -- the actions ------------------------------------------------------------

    @admin.action(description="Cancel selected pending or running tasks", permissions=["change"])
    def cancel_tasks(self, request: Any, queryset: Any) -> None:
        reason = f"cancelled by {request.user} in the admin"
        selected = dict(queryset.values_list("pk", "status"))
        active = sorted(pk for pk, status in selected.items() if status in ACTIVE_STATUSES)
        for pk in active:  # parents first: a cancelled parent takes its pending children along
            Task.queue.cancel(pk, reason)
        done = queryset.filter(pk__in=active, status=TaskStatus.CANCELLED).count()
        self._report(
            request, done, len(selected) - done, "cancelled",
            "had already finished (only pending or running tasks are cancelled)",
        )

    @admin.action(description="Requeue selected failed or cancelled tasks", permissions=["change"])
    def requeue_tasks(self, request: Any, queryset: Any) -> None:
        selected = dict(queryset.values_list("pk", "status"))
        final = (TaskStatus.FAILED, TaskStatus.CANCELLED)
        retryable = sorted(pk for pk, status in selected.items() if status in final)
        for pk in retryable:  # a requeued parent takes its cancelled descendants along
            Task.queue.retry(pk)
        done = queryset.filter(pk__in=retryable, status=TaskStatus.PENDING).count()
        self._report(
            request, done, len(selected) - done, "requeued",
            "had neither failed nor been cancelled (only failed or cancelled tasks are requeued)",
        )

    def _report(self, request: Any, done: int, skipped: int, verb: str, why: str) -> None:
        """Success when every selected task changed; a warning when some or all did not."""
        if not skipped:
            self.message_user(request, f"{_tasks(done)} {verb}.", messages.SUCCESS)
        elif not done:
            subject = "the selected task" if skipped == 1 else f"the {skipped} selected tasks"
            self.message_user(request, f"Nothing {verb}: {subject} {why}.", messages.WARNING)
        else:
            self.message_user(
                request, f"{_tasks(done)} {verb}; {skipped} skipped, which {why}.",
                messages.WARNING,
            )


def _tasks(count: int) -> str:
    return f"{count} task" if count == 1 else f"{count} tasks"


from django_fullctl import admin_overview  # noqa: E402, F401  (the queue overview page and its link)
from django_fullctl.admin_schedules import TaskScheduleRunAdmin  # noqa: E402, F401  (periodic tasks)
