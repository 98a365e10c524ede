"""The queue overview in the admin: /admin/django_fullctl/task/overview/ (staff only).

Per op: the tasks by status, the age of the oldest runnable pending task, completed and
failed in the last 5 and 60 minutes, the mean run time over the hour, how many live
pollers claim it; the live pollers with their busy slots (their rows, ``Poller.fleet``);
the running tasks that stopped sending heartbeats; and the throughput per minute over the
last hour as an inline SVG (no script, no CDN). Four aggregate queries: the counts by op
and status, the oldest due time per op (both grouped, on the pending/running index), one
grouped query over the last hour's finished rows, and the stale running tasks; and one
read of the poller table (a row per live poller).

``install()`` (run when ``admin.py`` imports this module, after it registered the Task
admin) adds the page's URL to the Task admin and gives its change list a link to it.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Sum
from django.db.models.functions import TruncMinute
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from django_fullctl import conf
from django_fullctl.models import Poller, Task
from django_fullctl.pollers import PollerRow
from django_fullctl.states import TaskStatus

TEMPLATE = "admin/django_fullctl/queue_overview.html"
CHANGE_LIST_TEMPLATE = "admin/django_fullctl/task_change_list.html"
URL_NAME = "django_fullctl_task_overview"
STATUS_COLUMNS = ("pending", "scheduled", "waiting", "running", "completed", "failed",
                  "cancelled")
WINDOW_MINUTES = 60


@dataclass
class OpRow:
    op: str
    counts: dict[str, int]
    oldest_age: float | None = None
    completed_5: int = 0
    failed_5: int = 0
    completed_60: int = 0
    failed_60: int = 0
    run_time_total: float = 0.0
    run_time_count: int = 0
    pollers: int = 0  # live pollers that claim this op now

    @property
    def to_run(self) -> int:
        return sum(self.counts.get(status, 0) for status in ("pending", "scheduled", "waiting"))

    @property
    def unclaimed(self) -> bool:
        """Tasks wait to run and no live poller claims the op: they wait for nothing."""
        return self.to_run > 0 and not self.pollers

    @property
    def mean_run_time(self) -> float | None:
        return self.run_time_total / self.run_time_count if self.run_time_count else None

    @property
    def status_cells(self) -> list[int]:
        return [self.counts.get(status, 0) for status in STATUS_COLUMNS]


@dataclass
class PollerLine:
    """A live poller as the page shows it."""

    row: PollerRow
    seen_ago: float

    @property
    def name(self) -> str:
        return f"{self.row.host}:{self.row.pid}"

    @property
    def busy_percent(self) -> int:
        return round(100 * self.row.busy_slots / self.row.slots) if self.row.slots else 0

    @property
    def state(self) -> str:
        if self.row.draining:
            return "draining"
        if self.row.claiming_paused:
            return ("stopped claiming, as asked" if self.row.claiming_stopped
                    else "asked to stop claiming")
        return "claiming"


@dataclass
class Overview:
    now: datetime
    rows: list[OpRow]
    stale: list[Any]
    stale_after: float
    per_minute: list[tuple[datetime, int, int]] = field(default_factory=list)
    pollers: list[PollerLine] = field(default_factory=list)

    @property
    def busy_slots(self) -> int:
        return sum(line.row.busy_slots for line in self.pollers)

    @property
    def slots(self) -> int:
        return sum(line.row.slots for line in self.pollers)

    @property
    def totals(self) -> dict[str, int]:
        return {
            "completed_60": sum(r.completed_60 for r in self.rows),
            "failed_60": sum(r.failed_60 for r in self.rows),
        }


def collect(now: datetime | None = None) -> Overview:
    now = now or timezone.now()
    counts = Task.queue.counts_by_op_and_status()
    oldest = Task.queue.oldest_pending_by_op()
    rows = {op: OpRow(op, dict(by_status)) for op, by_status in counts.items()}
    for op, due in oldest.items():
        rows.setdefault(op, OpRow(op, {})).oldest_age = max(0.0, (now - due).total_seconds())

    # the last hour's finished runs, per op, status and minute: one grouped query
    since = now - timedelta(minutes=WINDOW_MINUTES)
    recent = (
        Task.queue.rows()
        .filter(finished__gte=since, status__in=[TaskStatus.COMPLETED, TaskStatus.FAILED])
        .annotate(minute=TruncMinute("finished"))
        .values_list("op", "status", "minute")
        .annotate(n=Count("id"), run_time=Sum("time"), timed=Count("time"))
        .order_by()
    )
    start = _minute(now) - timedelta(minutes=WINDOW_MINUTES - 1)
    minutes = {start + timedelta(minutes=i): [0, 0] for i in range(WINDOW_MINUTES)}
    five_ago = now - timedelta(minutes=5)
    for op, status, minute, n, run_time, timed in recent:
        row = rows.setdefault(op, OpRow(op, {}))
        completed = status == TaskStatus.COMPLETED
        if completed:
            row.completed_60 += n
            row.run_time_total += run_time or 0.0
            row.run_time_count += timed
        else:
            row.failed_60 += n
        # a minute that started before "5 minutes ago" counts whole only when it ended after
        if minute is not None and minute + timedelta(minutes=1) > five_ago:
            if completed:
                row.completed_5 += n
            else:
                row.failed_5 += n
        bucket = minutes.get(_minute(minute)) if minute is not None else None
        if bucket is not None:
            bucket[0 if completed else 1] += n

    stale_after = conf.settings().orphaned_heartbeat_timeout
    pollers = Poller.fleet.live(stale_after)
    for poller in pollers:
        if not poller.claims:
            continue
        for op in poller.ops:
            if op in rows:
                rows[op].pollers += 1
    return Overview(
        now=now,
        rows=[rows[op] for op in sorted(rows)],
        stale=Task.queue.stale_running(stale_after, now=now),
        stale_after=stale_after,
        per_minute=[(minute, c, f) for minute, (c, f) in sorted(minutes.items())],
        pollers=[PollerLine(row, max(0.0, (now - row.last_seen).total_seconds()))
                 for row in pollers],
    )


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


# -- the chart -------------------------------------------------------------------------

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 200, 40, 24, 10
COMPLETED_COLOUR, FAILED_COLOUR = "#3a8a4f", "#ba2121"


def throughput_svg(per_minute: Sequence[tuple[datetime, int, int]]) -> SafeString:
    """Stacked bars per minute (completed below, failed on top), an axis with the peak."""
    peak = max((c + f for _, c, f in per_minute), default=0)
    scale = max(peak, 1)
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / max(len(per_minute), 1)
    bars = []
    for i, (minute, completed, failed) in enumerate(per_minute):
        x = LEFT + i * slot + 1
        y: float = HEIGHT - BOTTOM
        for count, colour, label in ((completed, COMPLETED_COLOUR, "completed"),
                                     (failed, FAILED_COLOUR, "failed")):
            if not count:
                continue
            h = count / scale * plot_h
            y -= h
            bars.append((f"{x:.1f}", f"{y:.1f}", f"{max(slot - 2, 1):.1f}", f"{h:.1f}", colour,
                         f"{timezone.localtime(minute):%H:%M}: {count} {label}"))
    rects = format_html_join(
        "", '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
        bars,
    )
    ticks = []
    for i in range(0, len(per_minute), 10):
        minute = per_minute[i][0]
        ticks.append((f"{LEFT + i * slot:.1f}", HEIGHT - 6,
                      f"{timezone.localtime(minute):%H:%M}"))
    labels = format_html_join(
        "", '<text x="{}" y="{}" font-size="11" fill="currentColor">{}</text>', ticks)
    empty = format_html(
        '<text x="{}" y="{}" font-size="13" fill="currentColor" text-anchor="middle" '
        'class="fullctl-empty">nothing finished in the last hour</text>',
        (WIDTH + LEFT) / 2, HEIGHT / 2,
    ) if not peak else ""
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" '
        'height="{h}" role="img" aria-label="tasks finished per minute, last hour" '
        'class="fullctl-throughput">'
        '<line x1="{left}" y1="{base}" x2="{w}" y2="{base}" stroke="currentColor" '
        'stroke-opacity="0.4"/>'
        '<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="currentColor" '
        'stroke-opacity="0.4"/>'
        '<text x="2" y="{top_text}" font-size="11" fill="currentColor">{peak}</text>'
        '<text x="2" y="{base}" font-size="11" fill="currentColor">0</text>'
        "{rects}{labels}{empty}</svg>",
        w=WIDTH, h=HEIGHT, left=LEFT, base=HEIGHT - BOTTOM, top=TOP, top_text=TOP + 10,
        peak=peak or "", rects=rects, labels=labels, empty=empty,
    )


# -- the page --------------------------------------------------------------------------


def overview_view(request: Any, model_admin: admin.ModelAdmin) -> TemplateResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    overview = collect()
    context: Mapping[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "title": "Task queue overview",
        "opts": model_admin.model._meta,
        "overview": overview,
        "status_columns": STATUS_COLUMNS,
        "chart": throughput_svg(overview.per_minute),
        "changelist_url": reverse("admin:django_fullctl_task_changelist"),
        "completed_colour": COMPLETED_COLOUR,
        "failed_colour": FAILED_COLOUR,
        "is_nav_sidebar_enabled": False,
    }
    return TemplateResponse(request, TEMPLATE, context)


def install(site: admin.AdminSite = admin.site) -> None:
    """Add the overview to the registered Task admin: its URL (staff only, through
    ``admin_view``) and the change list template with the link."""
    model_admin = site.get_model_admin(Task)
    model_admin.change_list_template = CHANGE_LIST_TEMPLATE
    urls = model_admin.get_urls

    def get_urls() -> list:
        view = site.admin_view(lambda request: overview_view(request, model_admin))
        return [path("overview/", view, name=URL_NAME), *urls()]

    model_admin.get_urls = get_urls


install()
