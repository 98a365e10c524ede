"""``manage.py fullctl_tasks status|purge``: the queue at a glance, and its housekeeping.

``status`` prints the tasks per op and status (one grouped query), the workers that are
running tasks with fresh heartbeats, and the running tasks whose heartbeat is older than
``TASK_ORPHANED_HEARTBEAT_TIMEOUT``. It never prints task parameters. ``purge`` deletes
tasks that finished long enough ago (run it from a cron job, or queue it with ``-Q``).
"""

import argparse
import json
from collections import Counter
from datetime import datetime

from django.utils import timezone

from django_fullctl import conf
from django_fullctl.management.base import CommandInterface
from django_fullctl.models import Task
from django_fullctl.models.schedule import schedule_overview

COLUMNS = ("pending", "scheduled", "waiting", "running", "completed", "failed", "cancelled")


def status_report(now: datetime | None = None) -> dict:
    """The data that ``status`` prints: JSON-safe, without any task parameter."""
    now = now or timezone.now()
    max_age = conf.settings().orphaned_heartbeat_timeout
    counts = Task.queue.counts_by_op_and_status()
    running = Task.queue.running_tasks()
    stale = sorted(Task.queue.stale_running(max_age, now=now), key=lambda item: item.id)
    stale_ids = {item.id for item in stale}
    workers = Counter(item.queue_id or "" for item in running if item.id not in stale_ids)
    return {
        "ops": {op: {c: counts[op].get(c, 0) for c in COLUMNS} for op in sorted(counts)},
        "totals": {c: sum(entry.get(c, 0) for entry in counts.values()) for c in COLUMNS},
        "workers": [{"queue_id": q, "running": n} for q, n in sorted(workers.items())],
        "stale_after_seconds": max_age,
        "stale": [
            {
                "id": item.id,
                "op": item.op,
                "queue_id": item.queue_id,
                "attempt": item.attempt,
                "last_sign_of_life": _iso(item.last_sign_of_life()),
                "age_seconds": _age(item.last_sign_of_life(), now),
            }
            for item in stale
        ],
        "schedules": schedule_overview(now),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _age(moment: datetime | None, now: datetime) -> float | None:
    return round((now - moment).total_seconds(), 1) if moment else None


def format_report(report: dict) -> str:
    lines = []
    if report["ops"]:
        rows: list[tuple[str, ...]] = [("op", *COLUMNS)]
        rows += [(op, *map(str, entry.values())) for op, entry in report["ops"].items()]
        rows.append(("total", *map(str, report["totals"].values())))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells).rstrip())
    else:
        lines.append("no tasks")
    max_age = f"{report['stale_after_seconds']:g}s"
    workers = report["workers"]
    lines.append("")
    lines.append(f"live workers (running a task, heartbeat within {max_age}): {len(workers)}")
    for worker in workers:
        lines.append(f"  {worker['queue_id']}  {worker['running']} running")
    stale = report["stale"]
    lines.append(f"stale heartbeats (older than {max_age}): {len(stale)}")
    for item in stale:
        age = "never" if item["age_seconds"] is None else f"{item['age_seconds']:g}s ago"
        lines.append(
            f"  task {item['id']}  {item['op']}  on {item['queue_id']}"
            f"  attempt {item['attempt']}  last sign of life {age}"
        )
    scheduled = report.get("schedules", [])
    lines.append(f"schedules: {len(scheduled)}")
    for entry in scheduled:
        last = entry["last_tick"] or "never"
        task = "" if entry["last_task_id"] is None else f"  last task {entry['last_task_id']}"
        lines.append(
            f"  {entry['name']}  {entry['op']}  \"{entry['cron']}\"  next {entry['next_tick']}"
            f"  last {last}{task}"
        )
    return "\n".join(lines)


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h`` or ``7d`` (``conf.duration``)."""
    try:
        return conf.duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Command(CommandInterface):
    help = "Look at the task queue without the admin, and purge old tasks."

    def add_arguments(self, parser):
        subcommands = parser.add_subparsers(
            dest="subcommand", required=True, metavar="SUBCOMMAND", title="subcommands"
        )
        status = subcommands.add_parser(
            "status",
            help="tasks per op and status, live workers, stale heartbeats",
            description="Tasks per op and status, live workers and stale heartbeats."
            " Never prints task parameters.",
        )
        status.add_argument("--json", action="store_true", help="print JSON")
        purge = subcommands.add_parser(
            "purge",
            help="delete tasks that finished long enough ago",
            description="Delete completed, failed and cancelled tasks that finished more than"
            " --older-than ago (a parent only once its children are gone).",
        )
        purge.add_argument("--older-than", type=duration, required=True, metavar="AGE",
                           help="e.g. 7d, 12h, 30m or seconds")

    def run(self, *args, subcommand: str, **options):
        return getattr(self, f"run_{subcommand}")(**options)

    def run_status(self, **options):
        report = status_report()
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self.stdout.write(format_report(report))

    def run_purge(self, older_than: float, **options):
        deleted = Task.queue.purge(older_than)
        self.stdout.write(f"deleted {deleted} finished task(s) older than {older_than:g}s")
