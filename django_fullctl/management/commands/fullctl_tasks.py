"""``manage.py fullctl_tasks status|purge``: the queue at a glance, and its housekeeping.

``status`` prints the tasks per op and status (one grouped query), the live pollers (their
rows, ``Poller.fleet``) and, per op with tasks to run, whether a live poller claims it, the
workers that are running tasks with fresh heartbeats, and the running tasks whose
heartbeat is older than ``TASK_ORPHANED_HEARTBEAT_TIMEOUT``. It never prints task
parameters. ``purge`` deletes
tasks that finished long enough ago (run it from a cron job, or queue it with ``-Q``).
"""

import argparse
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime

from django.utils import timezone

from django_fullctl import conf
from django_fullctl.management.base import CommandInterface
from django_fullctl.models import Poller, Task
from django_fullctl.models.schedule import schedule_overview
from django_fullctl.pollers import PollerRow

COLUMNS = ("pending", "scheduled", "waiting", "running", "completed", "failed", "cancelled")
TO_RUN = ("pending", "scheduled", "waiting")  # tasks that still need a poller


def status_report(now: datetime | None = None) -> dict:
    """The data that ``status`` prints: JSON-safe, without any task parameter."""
    now = now or timezone.now()
    max_age = conf.settings().orphaned_heartbeat_timeout
    counts = Task.queue.counts_by_op_and_status()
    running = Task.queue.running_tasks()
    stale = sorted(Task.queue.stale_running(max_age, now=now), key=lambda item: item.id)
    stale_ids = {item.id for item in stale}
    workers = Counter(item.queue_id or "" for item in running if item.id not in stale_ids)
    pollers = Poller.fleet.live(max_age)
    return {
        "ops": {op: {c: counts[op].get(c, 0) for c in COLUMNS} for op in sorted(counts)},
        "totals": {c: sum(entry.get(c, 0) for entry in counts.values()) for c in COLUMNS},
        "workers": [{"queue_id": q, "running": n} for q, n in sorted(workers.items())],
        "pollers": [
            {**row.as_dict(), "name": f"{row.host}:{row.pid}", "claims": row.claims,
             "seen_seconds_ago": _age(row.last_seen, now)}
            for row in pollers
        ],
        "claimed": claim_coverage(counts, pollers),
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


def claim_coverage(
    counts: Mapping[str, Mapping[str, int]], pollers: Sequence[PollerRow]
) -> dict[str, dict]:
    """Per op with tasks still to run (pending, scheduled or waiting): the live pollers
    that claim it now, and those that would but stopped claiming (draining, or asked to
    stop). ``claimed`` False means nothing will run these tasks as things stand."""
    coverage = {}
    for op in sorted(counts):
        to_run = sum(counts[op].get(c, 0) for c in TO_RUN)
        if not to_run:
            continue
        serving = [row for row in pollers if op in row.ops]
        coverage[op] = {
            "to_run": to_run,
            "claimed": any(row.claims for row in serving),
            "pollers": [f"{row.host}:{row.pid}" for row in serving if row.claims],
            "stopped_pollers": [f"{row.host}:{row.pid}" for row in serving if not row.claims],
        }
    return coverage


def _poller_line(poller: dict) -> str:
    state = []
    if poller["draining"]:
        state.append("draining")
    if poller["claiming_paused"]:
        acked = "stopped" if poller["claiming_stopped"] else "not acknowledged yet"
        state.append(f"asked to stop claiming ({acked})")
    seen = poller["seen_seconds_ago"]
    return "  ".join([
        f"  {poller['name']}", poller["mode"], f"{poller['busy_slots']}/{poller['slots']} busy",
        *state, f"seen {max(seen or 0, 0):g}s ago",
        f"ops: {', '.join(poller['ops']) or '-'}",
    ])


def _claim_line(op: str, entry: dict) -> str:
    head = f"  {op}  {entry['to_run']} to run"
    if entry["claimed"]:
        names = entry["pollers"]
        return f"{head}  claimed by {len(names)} live poller(s): {', '.join(names)}"
    if entry["stopped_pollers"]:
        return (f"{head}  NOT CLAIMED: the pollers of this op stopped claiming"
                f" ({', '.join(entry['stopped_pollers'])})")
    return (f"{head}  NOT CLAIMED: no live poller claims this op (none runs, or none"
            " qualifies for it in its settings)")


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
    pollers = report.get("pollers", [])
    lines.append("")
    lines.append(f"live pollers (refreshed within {max_age}): {len(pollers)}")
    lines.extend(_poller_line(poller) for poller in pollers)
    claimed = report.get("claimed", {})
    unclaimed = sum(1 for entry in claimed.values() if not entry["claimed"])
    lines.append(f"ops with tasks to run: {len(claimed)}, not claimed by any live poller:"
                 f" {unclaimed}")
    lines.extend(_claim_line(op, entry) for op, entry in claimed.items())
    workers = report["workers"]
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
            help="tasks per op and status, live pollers and what they claim, live workers,"
            " stale heartbeats",
            description="Tasks per op and status, live pollers, whether a live poller claims"
            " each op with tasks to run, live workers and stale heartbeats."
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
