"""The admin's read-only view of periodic tasks: the handled ticks (``TaskScheduleRun``),
with the configured schedules, their next tick and their last run above the list.
Pollers write these rows; nothing here changes them."""

from typing import Any

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from django_fullctl.display import format_timestamp
from django_fullctl.models import Task, TaskScheduleRun
from django_fullctl.models.schedule import schedule_overview


def _task_link(task_id: int | None) -> str:
    if task_id is None:
        return "-"
    url = reverse(f"admin:{Task._meta.app_label}_{Task._meta.model_name}_change", args=[task_id])
    return format_html('<a href="{}">{}</a>', url, task_id)


def schedules_table() -> str:
    """The configured schedules as an HTML table (escaped)."""
    rows = schedule_overview(timezone.now())
    if not rows:
        return format_html("<p>{}</p>", "No periodic tasks are configured.")
    body = format_html_join("", "<tr><td>{}</td><td>{}</td><td><code>{}</code></td>"
                            "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
        (row["name"], row["op"], row["cron"], row["next_tick"], row["last_tick"] or "never",
         row["last_outcome"] or "-", _task_link(row["last_task_id"]))
        for row in rows
    ))
    return format_html(
        '<table id="fullctl-schedules" style="margin-bottom:1em"><thead><tr><th>schedule</th>'
        "<th>op</th><th>cron</th><th>next tick</th><th>last tick</th><th>outcome</th>"
        "<th>last task</th></tr></thead><tbody>{}</tbody></table>", body,
    )


@admin.register(TaskScheduleRun)
class TaskScheduleRunAdmin(admin.ModelAdmin):
    list_display = ("schedule", "tick_at", "outcome", "task_link", "created_at")
    list_filter = ("schedule", "outcome")
    ordering = ("-tick",)
    fields = readonly_fields = ("schedule", "tick_at", "outcome", "task_link", "created_at")

    @admin.display(description="tick", ordering="tick")
    def tick_at(self, run: TaskScheduleRun) -> str:
        return format_timestamp(run.tick)

    @admin.display(description="created", ordering="created")
    def created_at(self, run: TaskScheduleRun) -> str:
        return format_timestamp(run.created)

    @admin.display(description="task")
    def task_link(self, run: TaskScheduleRun) -> str:
        return _task_link(run.task_id)

    def changelist_view(self, request: Any, extra_context: dict | None = None) -> Any:
        # the configured schedules go where the admin's base template prints a subtitle
        extra_context = {**(extra_context or {}), "subtitle": schedules_table()}
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False
