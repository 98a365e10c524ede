"""Who is serving: the rows the pollers keep of themselves, and every read and write of them.

``PollerFleet`` is the ``Poller.fleet`` manager (the model is ``models/poller.py``), at the
layer of ``queue``: it reaches the table through ``self.model`` and imports no model. One
row per supervisor, keyed by (host, pid); the host is the pod's name (``HOSTNAME``).

* The supervisor writes its row every ``TASK_TRACK_INTERVAL_SECONDS`` (``report``): mode,
  ops, slots, busy slots, draining, whether it has stopped claiming; the write inserts the
  row when it is missing (at start, or after the silent-row sweep took it during a long
  outage) and reads back the operator's stop-claiming request. It deletes the row when it
  exits (``remove``).
* A row whose ``last_seen`` is older than ``TASK_ORPHANED_HEARTBEAT_TIMEOUT`` (by the
  database's clock) belongs to a poller that is gone: it is not live, and the maintenance
  service ``poller/maintenance/pollers.py`` deletes it (``delete_silent``).
* The operator asks the pods it wants to remove to stop claiming
  (``request_stop_claiming``), reads their rows per host (``by_host``) until each says
  ``claiming_stopped`` with no busy slot (``PollerRow.drained``), and can take the request
  back (``clear_stop_claiming``).

Every timestamp is the database's ``now()``, so pods with skewed clocks agree.
"""

import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, models, transaction
from django.db.models import ExpressionWrapper
from django.db.models.functions import Now

from django_fullctl import conf
from django_fullctl.db import is_postgresql

# advisory lock namespace of the silent-row sweep (the task queue's are 0x46C1..)
_POLLER_SWEEP_LOCK = 0x46D1

_COLUMNS = (
    "host", "pid", "worker_id", "mode", "ops", "slots", "busy_slots", "started", "last_seen",
    "draining", "claiming_paused", "claiming_paused_at", "claiming_stopped",
)


def host_name() -> str:
    """This machine's name as the rows know it: ``HOSTNAME`` (a pod's name), else the
    system's host name."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def silent_after() -> float:
    """Seconds without a refresh after which a poller counts as gone: the same tolerance
    as a running task's heartbeat (``TASK_ORPHANED_HEARTBEAT_TIMEOUT``)."""
    return conf.settings().orphaned_heartbeat_timeout


@dataclass(frozen=True)
class PollerReport:
    """What a supervisor writes of itself on each refresh."""

    host: str
    pid: int
    worker_id: str  # the supervisor's id in the logs (and in ``queue_id`` in --workers mode)
    mode: str  # processes | workers
    ops: Sequence[str]
    slots: int
    busy_slots: int
    draining: bool = False
    claiming_stopped: bool = False  # it acted on a stop-claiming request (or drains)
    started: datetime | None = None  # None on the first report: the database's now()
    # the stop-claiming request as this poller last read it: kept when the row has to be
    # inserted again (the operator's request survives the sweep of a silent row)
    claiming_paused: bool = False


@dataclass(frozen=True)
class PollerRow:
    """One poller as its row tells it (JSON-safe through ``as_dict``)."""

    host: str
    pid: int
    worker_id: str
    mode: str
    ops: tuple[str, ...]
    slots: int
    busy_slots: int
    started: datetime
    last_seen: datetime
    draining: bool
    claiming_paused: bool  # the operator asked it to stop claiming
    claiming_paused_at: datetime | None  # when it was asked (the database's clock)
    claiming_stopped: bool  # it says it claims no new task (it acted on the request, or drains)

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> "PollerRow":
        row = dict(zip(_COLUMNS, values, strict=True))
        row["ops"] = tuple(row["ops"] or ())
        return cls(**row)

    @property
    def claims(self) -> bool:
        """Whether it takes new tasks of its ops now."""
        return not (self.draining or self.claiming_paused or self.claiming_stopped)

    @property
    def drained(self) -> bool:
        """Asked to stop claiming, it stopped, and runs nothing: safe to remove."""
        return self.claiming_paused and self.claiming_stopped and self.busy_slots == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host, "pid": self.pid, "worker_id": self.worker_id,
            "mode": self.mode, "ops": list(self.ops), "slots": self.slots,
            "busy_slots": self.busy_slots, "started": self.started.isoformat(),
            "last_seen": self.last_seen.isoformat(), "draining": self.draining,
            "claiming_paused": self.claiming_paused,
            "claiming_paused_at": (
                self.claiming_paused_at.isoformat() if self.claiming_paused_at else None
            ),
            "claiming_stopped": self.claiming_stopped,
        }


def _ago(seconds: float) -> ExpressionWrapper:
    """The database's ``now()`` minus ``seconds``."""
    return ExpressionWrapper(Now() - timedelta(seconds=seconds),
                             output_field=models.DateTimeField())


class PollerFleet(models.Manager):
    """The ``Poller.fleet`` manager: every read and write of poller rows."""

    def rows(self) -> models.QuerySet:
        return self.model._base_manager.all()

    # -- the supervisor ----------------------------------------------------------------

    def report(self, report: PollerReport) -> PollerRow:
        """Write ``report`` into this poller's row (inserting it when missing) and return
        the row as stored, with the operator's stop-claiming request. One short
        transaction: an update, an insert only when the row was missing, a read back."""
        mine = self.rows().filter(host=report.host, pid=report.pid)
        fields: dict[str, Any] = {
            "worker_id": report.worker_id[:255], "mode": report.mode, "ops": list(report.ops),
            "slots": report.slots, "busy_slots": report.busy_slots,
            "draining": report.draining, "claiming_stopped": report.claiming_stopped,
            "last_seen": Now(),
        }
        with transaction.atomic():
            updated = mine.update(
                **fields, **({"started": Now()} if report.started is None else {})
            )
            if not updated:
                # first report, a row left by the last process with this host and pid
                # (updated above), or a row the silent sweep took during an outage
                paused = report.claiming_paused
                self.rows().create(
                    host=report.host[:255], pid=report.pid,
                    started=report.started or Now(), claiming_paused=paused,
                    claiming_paused_at=Now() if paused else None, **fields,
                )
            return PollerRow.from_values(mine.values_list(*_COLUMNS).get())

    def remove(self, host: str, pid: int) -> int:
        """Delete this poller's row (it exits); returns how many rows went."""
        deleted, _ = self.rows().filter(host=host, pid=pid).delete()
        return deleted

    # -- maintenance -------------------------------------------------------------------

    def delete_silent(self, max_age: float) -> list[PollerRow]:
        """Delete the rows not refreshed for ``max_age`` seconds (database clock); returns
        them. One sweeper at a time on PostgreSQL: the others return [] at once."""
        with transaction.atomic():
            if is_postgresql():
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_try_advisory_xact_lock(%s, 0)",
                                   [_POLLER_SWEEP_LOCK])
                    if not cursor.fetchone()[0]:
                        return []
            silent = self.rows().filter(last_seen__lt=_ago(max_age))
            gone = [PollerRow.from_values(v) for v in silent.values_list(*_COLUMNS)]
            if gone:
                self.rows().filter(
                    pk__in=list(silent.values_list("pk", flat=True))
                ).delete()
            return gone

    # -- readers: status, the admin, the operator ----------------------------------------

    def live(self, max_age: float | None = None) -> list[PollerRow]:
        """Pollers refreshed within ``max_age`` seconds (default ``silent_after()``), by
        host then pid. One query on a table of one row per poller."""
        age = silent_after() if max_age is None else max_age
        rows = self.rows().filter(last_seen__gte=_ago(age)).order_by("host", "pid")
        return [PollerRow.from_values(v) for v in rows.values_list(*_COLUMNS)]

    def by_host(
        self, hosts: Iterable[str] | None = None, max_age: float | None = None
    ) -> dict[str, list[PollerRow]]:
        """Live pollers per host (pod name), optionally only of ``hosts``. A pod normally
        has one; two for a moment when its container was restarted."""
        wanted = None if hosts is None else set(hosts)
        found: dict[str, list[PollerRow]] = {}
        for row in self.live(max_age):
            if wanted is None or row.host in wanted:
                found.setdefault(row.host, []).append(row)
        return found

    # -- the operator's requests -----------------------------------------------------------

    def request_stop_claiming(self, hosts: Iterable[str]) -> set[str]:
        """Ask the pollers of ``hosts`` to stop claiming new tasks (they finish what they
        run). Idempotent: a row already asked keeps the time it was first asked. Returns
        the hosts that have a row; a pod without one (not started yet, or gone) is not
        asked, so call it again on the next tick."""
        names = list(set(hosts))
        if not names:
            return set()
        rows = self.rows().filter(host__in=names)
        rows.filter(claiming_paused=False).update(claiming_paused=True,
                                                  claiming_paused_at=Now())
        return set(rows.values_list("host", flat=True))

    def clear_stop_claiming(self, hosts: Iterable[str]) -> set[str]:
        """Let the pollers of ``hosts`` claim again; returns the hosts whose request was
        taken back."""
        names = list(set(hosts))
        if not names:
            return set()
        rows = self.rows().filter(host__in=names, claiming_paused=True)
        cleared = set(rows.values_list("host", flat=True))
        rows.update(claiming_paused=False, claiming_paused_at=None)
        return cleared


__all__ = ["PollerFleet", "PollerReport", "PollerRow", "host_name", "silent_after"]
