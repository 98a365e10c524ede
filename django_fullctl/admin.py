"""Task admin at /admin/django_fullctl/task/ (staff only, as every Django admin page)."""

from django.contrib import admin, messages

from django_fullctl.models import Task, TaskHeartbeat


class TaskHeartbeatInline(admin.StackedInline):
    model = TaskHeartbeat
    readonly_fields = ("timestamp",)
    can_delete = False
    extra = 0
    max_num = 0


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = (
        "id", "op", "source", "queue_id", "parent", "status", "param", "time", "created"
    )
    list_filter = ("status", "op")
    ordering = ("-id",)  # on the admin, not the model: queue queries need no ORDER BY
    search_fields = ("=id", "op")
    list_select_related = ("parent",)
    raw_id_fields = ("parent",)
    inlines = (TaskHeartbeatInline,)
    actions = ("cancel_tasks", "requeue_tasks")
    readonly_fields = (
        "op", "param", "status", "limit_id", "result_data", "error", "time", "source", "queue_id",
        "parent", "waiting", "attempt", "claimed", "started", "finished", "created", "updated",
    )

    @admin.action(description="Cancel selected pending or running tasks")
    def cancel_tasks(self, request, queryset):
        reason = f"cancelled by {request.user} in the admin"
        done = sum(Task.queue.cancel(pk, reason) for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, f"{done} task(s) cancelled", messages.SUCCESS)

    @admin.action(description="Requeue selected failed or cancelled tasks")
    def requeue_tasks(self, request, queryset):
        done = sum(Task.queue.retry(pk) for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, f"{done} task(s) requeued", messages.SUCCESS)
