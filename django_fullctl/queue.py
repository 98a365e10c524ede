"""The job manager: every write to task rows, and the reads that scheduling decisions need.

``TaskQueue`` is the ``Task.queue`` manager. The poller, the runner, the admin, the
operator and the task API call it and never write task rows themselves. Its rules:

* the claim is one statement (PostgreSQL: ``FOR UPDATE SKIP LOCKED`` in a CTE);
* every later write is fenced on the task's ``Lease`` (``id, attempt`` and ``status =
  'running'``), so a late writer (a worker that was given up on, a second sweeper)
  changes nothing;
* each transition commits on its own, in a short transaction;
* limits are checked and the row inserted under one lock per (op, limit_id);
* wake-up notifications are not sent from here: a trigger on the table sends them on
  PostgreSQL (see ``notify``).

It reaches the task table through ``self.model`` (the concrete ``Task``), as Django's
managers do, so the models import it and it imports no model.
"""

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import psycopg
from django.db import connection, models, transaction
from django.db.models import Case, Count, Expression, F, Func, Min, Q, Value, When
from django.db.models.functions import Cast, Coalesce, Concat, Now
from django.db.models.lookups import GreaterThan, LessThanOrEqual
from django.utils import timezone

from django_fullctl.db import is_postgresql
from django_fullctl.exceptions import TaskLimitError
from django_fullctl.states import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Lease,
    RescueOutcome,
    TaskStatus,
)

log = logging.getLogger("django_fullctl.queue")

# advisory lock namespaces (first key of PostgreSQL's two-key advisory locks)
_LIMIT_LOCK = 0x46C1
_SWEEP_LOCK = 0x46C2
_RELEASE_LOCK = 0x46C3

# The hot statements, built from three parts. ``picked`` and ``take`` are the claim: the
# runnable rows of the worker's ops in claim order, locked without waiting for rows that
# others hold, then marked running with one more attempt. ``done`` is the completion,
# fenced on the lease, releasing the task's waiting children in the same statement.
#
# ``picked`` reads each of the pool's ops from its own rows: the first ``limit`` of every
# op, walked in claim order on the per-op claim index and locked without waiting, then the
# first ``limit`` of those. Its cost grows with the pool's ops, never with the rows of
# other ops. (One scan with ``op = ANY(...)`` cannot follow that index in claim order; it
# walks all runnable rows in claim order instead, past every row of the ops it does not
# claim.) The op is bounded from both sides rather than compared for equality so that the
# planner keeps ``op`` in the sort order, which only the per-op index provides, whatever
# its statistics (or a generic plan of the prepared statement) say of how the op's rows
# are spread. Heads that were locked and not taken stay locked only until the statement
# commits.
_PICKED = """picked AS (
    SELECT head.id FROM unnest(%s::text[]) AS pool(op) CROSS JOIN LATERAL (
        SELECT id, priority FROM {table}
        WHERE status = '{pending}' AND NOT waiting AND NOT scheduled
            AND op >= pool.op AND op <= pool.op{only_if}
        ORDER BY op, priority DESC, id
        LIMIT %s
        FOR UPDATE SKIP LOCKED
    ) AS head
    ORDER BY head.priority DESC, head.id
    LIMIT %s
)"""

_TAKE = """UPDATE {table} AS t
SET status = '{running}', queue_id = %s, attempt = t.attempt + 1,
    claimed = %s, started = %s, updated = %s, error = NULL
FROM picked WHERE t.id = picked.id
RETURNING {columns}"""

_DONE = """done AS (
    UPDATE {table}
    SET status = '{completed}', result_data = %s, time = %s, finished = %s, updated = %s,
        error = NULL
    WHERE id = %s AND attempt = %s AND status = '{running}'
    RETURNING id
), released AS (
    UPDATE {table} SET waiting = false, updated = %s
    WHERE parent_id IN (SELECT id FROM done) AND status = '{pending}' AND waiting
)"""

_CLAIM_SQL = f"WITH {_PICKED.replace('{only_if}', '')}\n{_TAKE}"

_COMPLETE_SQL = f"WITH {_DONE}\nSELECT count(*) FROM done"

# The completion of one task and the claim of the worker's next, in one statement: one
# round trip and one commit per task. The claim runs only when the completion held its
# lease: a worker that lost its task takes no other. Every part sees the statement's one
# snapshot, so children released here are claimable from the next statement on. Always
# one row: the completion's count, then the claimed row (all NULL when none was).
_COMPLETE_AND_CLAIM_SQL = f"""WITH {_DONE}, {
    _PICKED.replace('{only_if}', ' AND EXISTS (SELECT 1 FROM done)')
}, claimed AS (
{_TAKE}
)
SELECT (SELECT count(*) FROM done), claimed.* FROM (SELECT 1) AS one LEFT JOIN claimed ON true
"""


def claim_params(ops: list[str], limit: int) -> list[Any]:
    """The parameters of the claim part (``picked``) of the hot statements. An op named
    twice would bring its head twice (a statement does not skip its own locks)."""
    return [list(dict.fromkeys(ops)), limit, limit]


@dataclass(frozen=True)
class RunningTask:
    """What schedulers need to know about a running task."""

    id: int
    op: str
    attempt: int
    max_attempts: int
    queue_id: str | None
    started: datetime | None
    heartbeat: datetime | None

    @property
    def lease(self) -> Lease:
        return Lease(self.id, self.attempt)

    @property
    def host(self) -> str:
        """The host (pod name) of the worker that runs it: ``queue_id`` is ``host:pid``."""
        return (self.queue_id or "").rsplit(":", 1)[0]

    def last_sign_of_life(self) -> datetime | None:
        return self.heartbeat or self.started


_RUNNING_COLUMNS = (
    "pk", "op", "attempt", "max_attempts", "queue_id", "started", "heartbeat__timestamp"
)


def _appended(lease: Lease, error_class: str | None, error: str, when: datetime) -> Any:
    """The ``errors`` column with one more entry, as an expression of the update itself
    (no read of the row first: the write stays one fenced statement)."""
    entry = json.dumps({
        "attempt": lease.attempt, "error_class": error_class, "error": error,
        "at": when.isoformat(),
    })
    if is_postgresql():
        return Func(F("errors"), Cast(Value(f"[{entry}]"), models.JSONField()), function="",
                    arg_joiner=" || ", output_field=models.JSONField())
    return Func(F("errors"), Value("$[#]"), Func(Value(entry), function="json"),
                function="json_insert", output_field=models.JSONField())


@contextmanager
def hot_cursor() -> Iterator[psycopg.Cursor]:
    """A cursor on Django's own connection that binds its parameters on the server, for
    the statements every task runs (the claim, the completion). Django's cursors bind on
    the client, which makes psycopg's prepared statements impossible; with this one, a
    connection whose ``prepare_threshold`` is set (the poller's, see ``TASK_PREPARE_
    THRESHOLD``) plans each of them once. Errors are Django's, as from any cursor."""
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor


def _counts_by_state(rows: models.QuerySet, keys: list[str]) -> dict[str, dict[str, int]]:
    """Rows per op and state, one grouped query: a pending row counts as ``waiting`` (for
    its parent) or ``scheduled`` (not due yet) before it counts as ``pending``."""
    grouped = (
        rows.values_list("op", "status", "waiting", "scheduled").annotate(n=Count("id")).order_by()
    )
    counts: dict[str, dict[str, int]] = {}
    for op, status, waiting, scheduled, n in grouped:
        key = status
        if status == TaskStatus.PENDING and waiting:
            key = "waiting"
        elif status == TaskStatus.PENDING and scheduled:
            key = "scheduled"
        entry = counts.setdefault(op, dict.fromkeys(keys, 0))
        entry[key] = entry.get(key, 0) + n
    return counts


class TaskQueue(models.Manager):
    """``Task.queue``: the claim, the fenced transitions, the user and admin actions."""

    # -- the tables ----------------------------------------------------------

    @property
    def task_model(self) -> Any:
        """The concrete task model (also when reached through a proxy task class)."""
        return self.model._meta.concrete_model

    def rows(self) -> models.QuerySet:
        """All task rows, whatever class this manager was reached through."""
        return self.task_model._base_manager.all()

    def heartbeats(self) -> models.QuerySet:
        return self.task_model._meta.get_field("heartbeat").related_model.objects.all()

    def _running(self, lease: Lease) -> models.QuerySet:
        return self.rows().filter(
            pk=lease.task_id, attempt=lease.attempt, status=TaskStatus.RUNNING
        )

    @cached_property
    def statements(self) -> dict[str, str]:
        """The hot statements, built once per process from the model's own columns."""
        meta = self.task_model._meta
        names = {s.name.lower(): s.value for s in TaskStatus}
        columns = ", ".join(f"t.{f.column}" for f in meta.concrete_fields)
        statements = {"complete": _COMPLETE_SQL, "claim": _CLAIM_SQL,
                      "complete_and_claim": _COMPLETE_AND_CLAIM_SQL}
        return {
            name: text.format(table=meta.db_table, columns=columns, **names)
            for name, text in statements.items()
        }

    # -- creating -----------------------------------------------------------

    def enqueue(self, task: Any, limit: int | None) -> Any:
        """Insert a new pending task, enforcing its limit atomically.

        Runs inside the caller's transaction when there is one, so a rollback leaves no
        task (and PostgreSQL only delivers the wake-up notification on commit). Without a
        limit or a parent it is one INSERT: no transaction, lock or savepoint of its own.
        """
        if limit is None and task.parent_id is None:
            return self._insert(task)
        with transaction.atomic():
            if limit is not None:
                self._lock_limit(task.op, task.limit_id)
                active = self.rows().filter(
                    op=task.op, limit_id=task.limit_id, status__in=ACTIVE_STATUSES
                ).count()
                if active >= limit:
                    raise TaskLimitError(task.op, task.limit_id, limit)
            if task.parent_id is not None:
                # lock the parent row so its completion cannot slip between this read and
                # our insert: it then either sees our child (and releases it) or we see it
                # completed
                parent_status = (
                    self.rows().select_for_update().filter(pk=task.parent_id)
                    .values_list("status", flat=True).get()
                )
                if parent_status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                    task.status = TaskStatus.CANCELLED
                    task.error = f"parent task {task.parent_id} is {parent_status}"
                    task.finished = timezone.now()
                task.waiting = parent_status != TaskStatus.COMPLETED
            return self._insert(task)

    def _insert(self, task: Any) -> Any:
        if task.run_after is not None:
            self._set_due_time(task)
        task.save(force_insert=True)
        if isinstance(task.scheduled, Expression) or isinstance(task.run_after, Expression):
            # the database worked out the due time: read what it decided
            task.refresh_from_db(fields=["run_after", "scheduled"])
        return task

    def enqueue_many(self, tasks: list[Any], limit: int | None) -> list[Any]:
        """Insert tasks of one op in one statement (one notification per op on commit),
        enforcing the op's limit for the whole batch: all or nothing, and the error names
        the first ``limit_id`` (in batch order) that would go over it. Inside the caller's
        transaction when there is one. The tasks share their parent, if any."""
        if not tasks:
            return []
        op, parent_id = tasks[0].op, tasks[0].parent_id
        with transaction.atomic():
            if limit is not None:
                self._check_batch_limit(op, [t.limit_id for t in tasks], limit)
            if parent_id is not None:
                parent_status = (
                    self.rows().select_for_update().filter(pk=parent_id)
                    .values_list("status", flat=True).get()
                )
                for task in tasks:
                    if parent_status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                        task.status = TaskStatus.CANCELLED
                        task.error = f"parent task {parent_id} is {parent_status}"
                        task.finished = timezone.now()
                    task.waiting = parent_status != TaskStatus.COMPLETED
            if any(t.run_after is not None for t in tasks):
                self._set_due_times(tasks)
            if is_postgresql():
                return self._insert_many(tasks)
            return self.task_model.objects.bulk_create(tasks, batch_size=2000)

    def _insert_many(self, tasks: list[Any]) -> list[Any]:
        """One INSERT for the whole batch. A column whose value is the same for every task
        (most of them: the op, the options, the timestamps) is sent once; the others go
        as one array each, unnested by the server. Django's ``bulk_create`` prepares every
        field of every task instead, which costs more than the insert itself."""
        meta = self.task_model._meta
        now = timezone.now()  # one clock for the batch
        columns: list[str] = []
        selected: list[str] = []  # per column: a constant parameter or an unnested array
        params: list[Any] = []
        arrays: list[tuple[str, list[Any]]] = []  # (the column's type, one value per task)
        for field in meta.concrete_fields:
            if field.primary_key:
                continue
            if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                for task in tasks:
                    setattr(task, field.attname, now)
            values = [getattr(task, field.attname) for task in tasks]
            cast = field.db_type(connection)
            columns.append(connection.ops.quote_name(field.column))
            first = values[0]
            if all(value == first for value in values):
                selected.append(f"%s::{cast}")
                params.append(field.get_db_prep_save(first, connection))
            else:
                selected.append(f"batch.c{len(arrays)}")
                arrays.append((cast, [field.get_db_prep_save(v, connection) for v in values]))
        unnest = ", ".join(f"%s::{cast}[]" for cast, _ in arrays)
        names = ", ".join(f"c{i}" for i in range(len(arrays)))
        source = (f" FROM unnest({unnest}) WITH ORDINALITY AS batch({names}, n)"
                  " ORDER BY batch.n" if arrays
                  else " FROM generate_series(1, %s) AS batch(n) ORDER BY batch.n")
        statement = (f"INSERT INTO {meta.db_table} ({', '.join(columns)})"
                     f" SELECT {', '.join(selected)}{source} RETURNING id")
        values = [*params, *(array for _, array in arrays)] if arrays else [*params, len(tasks)]
        with connection.cursor() as cursor:
            cursor.execute(statement, values)
            ids = [row[0] for row in cursor.fetchall()]
        for task, pk in zip(tasks, ids, strict=True):
            task.pk = pk
            task._state.adding = False
            task._state.db = connection.alias
        return tasks

    def _check_batch_limit(self, op: str, limit_ids: list[str], limit: int) -> None:
        wanted = Counter(limit_ids)
        for limit_id in sorted(wanted):  # one order for every creator: no deadlock
            self._lock_limit(op, limit_id)
        active = dict(
            self.rows().filter(op=op, limit_id__in=list(wanted), status__in=ACTIVE_STATUSES)
            .values_list("limit_id").annotate(n=Count("id")).order_by()
        )
        for limit_id in limit_ids:
            if active.get(limit_id, 0) + wanted[limit_id] > limit:
                raise TaskLimitError(op, limit_id, limit)

    def _set_due_times(self, tasks: list[Any]) -> None:
        """``_set_due_time`` for a batch: the database's clock, read once."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT CURRENT_TIMESTAMP")
            now = cursor.fetchone()[0]
        if isinstance(now, str):  # SQLite: text, in UTC
            now = datetime.fromisoformat(now)
        if timezone.is_naive(now):  # SQLite answers in UTC without a zone
            now = timezone.make_aware(now, UTC)
        for task in tasks:
            if isinstance(task.run_after, timedelta):
                task.run_after = now + task.run_after if task.run_after > timedelta(0) else None
            task.scheduled = task.run_after is not None and task.run_after > now

    @staticmethod
    def _set_due_time(task: Any) -> None:
        """Keep a task that is not due yet out of the claim index. Due times are the
        database's clock: a delay is added to its ``now()``, and an absolute time is
        compared with it, so pods with skewed clocks agree."""
        if isinstance(task.run_after, timedelta):
            if task.run_after <= timedelta(0):
                task.run_after = None
                return
            task.run_after = Now() + Value(task.run_after)
            task.scheduled = True
        else:
            task.scheduled = GreaterThan(
                Value(task.run_after, output_field=models.DateTimeField()), Now()
            )

    def _lock_limit(self, op: str, limit_id: str) -> None:
        """Serialise creations of one (op, limit_id) until the end of the transaction."""
        if is_postgresql():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    [_LIMIT_LOCK, f"{op}\n{limit_id}"],
                )
        else:
            # SQLite: take the database write lock now, before counting, so concurrent
            # creators queue up behind each other instead of all counting zero
            self.rows().filter(pk=-1).update(op=op)

    # -- claiming -------------------------------------------------------------

    def claim(self, worker_id: str, ops: Iterable[str], limit: int = 1) -> list[Any]:
        """Claim up to ``limit`` runnable tasks of ``ops`` for ``worker_id``.

        Returns them as instances of their task classes, in claim order, already
        ``running`` with their attempt counted. Rows of other ops are never locked.
        """
        ops = list(ops)
        if not ops or limit < 1:
            return []
        now = timezone.now()
        if is_postgresql():
            # one statement is atomic on its own: no BEGIN/COMMIT round trips around it
            with hot_cursor() as cursor:
                cursor.execute(
                    self.statements["claim"],
                    [*claim_params(ops, limit), worker_id, now, now, now],
                )
                tasks = [self._from_row(row) for row in cursor.fetchall()]
        else:
            tasks = self._claim_portable(worker_id, ops, limit, now)
        tasks.sort(key=lambda t: (-t.priority, t.pk))
        return [t.cast() for t in tasks]

    @cached_property
    def _row_loading(self) -> tuple[list[str], list[Any]]:
        """The attribute name and the converter (None: the value as it is) of each column
        of a claimed row, worked out once per process."""
        fields = self.task_model._meta.concrete_fields
        return [f.attname for f in fields], [getattr(f, "from_db_value", None) for f in fields]

    def _from_row(self, row: tuple) -> Any:
        """A model instance from a claimed row, as a queryset would load it (cheaper than
        ``raw()``, which works out its column mapping and converters on every call)."""
        attnames, converters = self._row_loading
        values = [
            value if convert is None else convert(value, None, connection)
            for convert, value in zip(converters, row, strict=True)
        ]
        return self.task_model.from_db(connection.alias, attnames, values)

    def _claim_portable(
        self, worker_id: str, ops: list[str], limit: int, now: datetime
    ) -> list[Any]:
        """Optimistic claim for databases without SKIP LOCKED: a conditional UPDATE per row."""
        candidates = self.rows().filter(
            status=TaskStatus.PENDING, waiting=False, scheduled=False, op__in=ops
        ).order_by("-priority", "id")
        claimed = []
        for task in candidates[: limit * 4]:
            won = self.rows().filter(pk=task.pk, status=TaskStatus.PENDING, attempt=task.attempt)
            if won.update(
                status=TaskStatus.RUNNING, queue_id=worker_id, attempt=task.attempt + 1,
                claimed=now, started=now, updated=now, error=None,
            ):
                task.refresh_from_db()
                claimed.append(task)
                if len(claimed) == limit:
                    break
        return claimed

    # -- fenced transitions of a running task ---------------------------------

    def complete(self, lease: Lease, result: object, duration: float) -> bool:
        """Record a successful run and release the task's waiting children, atomically.

        ``result`` must already be JSON-safe (see ``runner.run``). Returns False, and
        changes nothing, when this lease no longer holds the task.
        """
        now = timezone.now()
        if is_postgresql():
            # the hot path: one statement, one round trip
            with hot_cursor() as cursor:
                cursor.execute(
                    self.statements["complete"],
                    self._completion_params(lease, result, duration, now),
                )
                row = cursor.fetchone()
            done = row[0] if row else 0
        else:
            with transaction.atomic():
                done = self._running(lease).update(
                    status=TaskStatus.COMPLETED, result_data=result, time=duration,
                    finished=now, updated=now, error=None,
                )
                if done:
                    self.rows().filter(
                        parent_id=lease.task_id, status=TaskStatus.PENDING, waiting=True
                    ).update(waiting=False, updated=now)
        return bool(done) or self._late("complete", lease)

    def _completion_params(
        self, lease: Lease, result: object, duration: float, now: datetime
    ) -> list[Any]:
        """The parameters of the completion's part of the hot statements."""
        data = self._result_field.get_db_prep_value(result, connection)
        return [data, duration, now, now, lease.task_id, lease.attempt, now]

    @cached_property
    def _result_field(self) -> Any:
        return self.task_model._meta.get_field("result_data")

    def complete_and_claim(
        self, lease: Lease, result: object, duration: float, worker_id: str,
        ops: Iterable[str],
    ) -> tuple[bool, Any | None]:
        """``complete(lease)``, then claim the worker's next task of ``ops`` in the same
        statement on PostgreSQL (one round trip and one commit per task).

        Returns (completed, next task or None). Nothing is claimed when the completion
        lost its lease. Elsewhere, the two steps run one after the other.
        """
        ops = list(ops)
        if not is_postgresql() or not ops:
            done = self.complete(lease, result, duration)
            claimed = self.claim(worker_id, ops) if done else []
            return done, claimed[0] if claimed else None
        now = timezone.now()
        with hot_cursor() as cursor:
            cursor.execute(
                self.statements["complete_and_claim"],
                [*self._completion_params(lease, result, duration, now),
                 *claim_params(ops, 1), worker_id, now, now, now],
            )
            row = cursor.fetchone()
        assert row is not None  # the statement always answers one row
        done, columns = row[0], row[1:]
        if not done:
            return self._late("complete", lease), None
        if columns[0] is None:  # the primary key: nothing was claimed
            return True, None
        return True, self._from_row(columns).cast()

    def fail(
        self, lease: Lease, error: str, duration: float | None = None,
        error_class: str | None = None,
    ) -> bool:
        """Record a failed run; the task's descendants are cancelled. Fenced on ``lease``.

        The error joins the task's history (``errors``), one entry per failed attempt.
        """
        now = timezone.now()
        fields: dict[str, Any] = {
            "status": TaskStatus.FAILED, "error": error, "finished": now, "updated": now,
            "errors": _appended(lease, error_class, error, now),
        }
        if duration is not None:
            fields["time"] = duration
        with transaction.atomic():
            if not self._running(lease).update(**fields):
                return self._late("fail", lease)
            self._cancel_descendants(lease.task_id, TaskStatus.FAILED)
        return True

    def retry_later(
        self, lease: Lease, delay: float, error: str, error_class: str | None = None
    ) -> bool:
        """A failed attempt that will be tried again: back to pending, due in ``delay``
        seconds of the database's clock (out of the claim index until then), its error
        added to the history. Fenced on ``lease``; children keep waiting meanwhile."""
        now = timezone.now()
        fields: dict[str, Any] = {
            "status": TaskStatus.PENDING, "queue_id": None, "error": error, "updated": now,
            "errors": _appended(lease, error_class, error, now),
        }
        if delay > 0:
            fields["run_after"] = Now() + Value(timedelta(seconds=delay))
            fields["scheduled"] = True
        with transaction.atomic():
            if not self._running(lease).update(**fields):
                return self._late("retry", lease)
            self.heartbeats().filter(task_id=lease.task_id).delete()
        return True

    def watch(self, task_id: int) -> None:
        """Someone waits for this task: its completion will send the done notification
        (the trigger sends it only for rows marked so). Not a state change: no trigger
        runs for it and nothing else of the row changes."""
        self.rows().filter(pk=task_id).exclude(status__in=FINAL_STATUSES).update(waited=True)

    def release_due(self) -> int:
        """Make the tasks whose due time has come claimable, in one statement (which wakes
        the pollers through the trigger's notification); returns how many. One releaser at
        a time on PostgreSQL: the others return 0 at once."""
        with transaction.atomic():
            if is_postgresql():
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_try_advisory_xact_lock(%s, 0)", [_RELEASE_LOCK])
                    if not cursor.fetchone()[0]:
                        return 0
            return self.rows().filter(
                LessThanOrEqual(F("run_after"), Now()),
                status=TaskStatus.PENDING, scheduled=True,
            ).update(scheduled=False, updated=timezone.now())

    def seconds_until_due(self, ops: Iterable[str]) -> float | None:
        """Seconds (by the database's clock) until the earliest scheduled task of ``ops``
        is due; None when none is scheduled. Negative when one is overdue."""
        ops = list(ops)
        if not ops:
            return None
        if is_postgresql():
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT EXTRACT(EPOCH FROM min(run_after) - now())"
                    f" FROM {self.task_model._meta.db_table}"
                    " WHERE status = %s AND scheduled AND op = ANY(%s)",
                    [TaskStatus.PENDING.value, ops],
                )
                value = cursor.fetchone()[0]
            return None if value is None else float(value)
        earliest = self.rows().filter(
            status=TaskStatus.PENDING, scheduled=True, op__in=ops
        ).aggregate(due=Min("run_after"))["due"]
        return None if earliest is None else (earliest - timezone.now()).total_seconds()

    def requeue(self, lease: Lease, reason: str, count_attempt: bool = True) -> bool:
        """Put a running task back to pending (fenced).

        ``count_attempt=False`` gives the attempt back: a drain at shutdown is not the
        task's fault and must not use up its retries.
        """
        now = timezone.now()
        fields: dict[str, Any] = {
            "status": TaskStatus.PENDING, "queue_id": None, "error": reason, "updated": now
        }
        if not count_attempt:
            fields["attempt"] = F("attempt") - 1
        with transaction.atomic():
            if not self._running(lease).update(**fields):
                return self._late("requeue", lease)
            self.heartbeats().filter(task_id=lease.task_id).delete()
        return True

    def rescue(self, lease: Lease, reason: str) -> RescueOutcome | None:
        """A running task lost its worker: requeue it while attempts remain, else fail it.

        One fenced statement decides from the row's own ``max_attempts``. Returns what was
        done, or None when the fence held (someone else acted first).
        """
        now = timezone.now()
        retry_left = Q(attempt__lt=F("max_attempts"))
        gave_up = Concat(
            Value(f"{reason}; gave up after "), F("attempt"), Value(" attempt(s)"),
            output_field=models.TextField(),
        )
        with transaction.atomic():
            done = self._running(lease).update(
                status=Case(
                    When(retry_left, then=Value(TaskStatus.PENDING.value)),
                    default=Value(TaskStatus.FAILED.value),
                ),
                queue_id=Case(
                    When(retry_left, then=Value(None)), default=F("queue_id"),
                    output_field=models.CharField(),
                ),
                error=Case(
                    When(retry_left, then=Value(reason)), default=gave_up,
                    output_field=models.TextField(),
                ),
                finished=Case(
                    When(retry_left, then=Value(None)), default=Value(now),
                    output_field=models.DateTimeField(),
                ),
                errors=_appended(lease, "WorkerLost", reason, now),
                updated=now,
            )
            if not done:
                self._late("rescue", lease)
                return None
            status = self.rows().filter(pk=lease.task_id).values_list("status", flat=True).get()
            if status == TaskStatus.FAILED:
                self._cancel_descendants(lease.task_id, TaskStatus.FAILED)
                return RescueOutcome.FAILED
            self.heartbeats().filter(task_id=lease.task_id).delete()
        return RescueOutcome.REQUEUED

    def heartbeat(self, lease: Lease) -> bool:
        """Refresh a running task's heartbeat; False when the lease no longer holds.

        One fenced UPDATE in the usual case; the first beat of a task inserts the row.
        """
        now = timezone.now()
        if self.heartbeats().filter(
            task_id=lease.task_id, task__attempt=lease.attempt, task__status=TaskStatus.RUNNING
        ).update(timestamp=now):
            return True
        if not self._running(lease).exists():
            return False
        self.heartbeats().update_or_create(task_id=lease.task_id, defaults={"timestamp": now})
        return True

    @staticmethod
    def _late(action: str, lease: Lease) -> bool:
        log.warning(
            "late %s of %s ignored: the task is no longer running for this worker",
            action, lease,
        )
        return False

    # -- user and admin actions ----------------------------------------------

    def cancel(self, task_id: int, reason: str) -> bool:
        """Cancel a pending or running task and its descendants; False if it had finished."""
        now = timezone.now()
        with transaction.atomic():
            done = self.rows().filter(pk=task_id, status__in=ACTIVE_STATUSES).update(
                status=TaskStatus.CANCELLED, error=reason, finished=now, updated=now
            )
            if not done:
                return False
            self._cancel_descendants(task_id, TaskStatus.CANCELLED)
        return True

    def retry(self, task_id: int) -> bool:
        """Start a failed or cancelled task again, with fresh attempts; False if it was not
        failed or cancelled.

        The descendants that were cancelled because it did not complete (``_cancel_descendants``,
        or created under it once it had failed) go back to pending too, waiting for their
        parent, so the chain runs again as one. Descendants cancelled for another reason (by
        hand), and theirs, are left alone.
        """
        now = timezone.now()
        fresh: dict[str, Any] = {
            "status": TaskStatus.PENDING, "attempt": 0, "queue_id": None, "error": None,
            "result_data": None, "time": None, "claimed": None, "started": None,
            "finished": None, "updated": now,
        }
        with transaction.atomic():
            task = self.rows().select_for_update().filter(
                pk=task_id, status__in=(TaskStatus.FAILED, TaskStatus.CANCELLED)
            ).first()
            if task is None:
                return False
            waiting = task.parent_id is not None and not self.rows().filter(
                pk=task.parent_id, status=TaskStatus.COMPLETED
            ).exists()
            self.rows().filter(pk=task_id).update(waiting=waiting, **fresh)
            restored = self._restore_cancelled_descendants(task_id, fresh)
            # a fresh start: no sign of life left over from the last run
            self.heartbeats().filter(task_id__in=[task_id, *restored]).delete()
        return True

    def _restore_cancelled_descendants(self, task_id: int, fresh: dict[str, Any]) -> list[int]:
        """Put back to pending, waiting, the descendants cancelled because ``task_id`` (or a
        descendant cancelled with it) did not complete: each one's error names its own parent
        (``parent task <id> ...``). Returns their ids."""
        restored: list[int] = []
        parents = [task_id]
        while parents:
            cancelled = self.rows().filter(
                parent_id__in=parents, status=TaskStatus.CANCELLED, error__startswith="parent task "
            ).values_list("pk", "parent_id", "error")
            parents = [
                pk for pk, parent_id, error in cancelled
                if error.startswith(f"parent task {parent_id} ")
            ]
            if parents:
                self.rows().filter(pk__in=parents, status=TaskStatus.CANCELLED).update(
                    waiting=True, **fresh
                )
                restored += parents
        return restored

    def _cancel_descendants(self, task_id: int, outcome: str) -> None:
        """Cancel every pending descendant of a task that will not complete.

        Each child's error names its own parent and the task where the chain broke.
        """
        now = timezone.now()
        parents = {task_id: f"parent task {task_id} {outcome}"}
        while parents:
            children = self.rows().filter(parent_id__in=parents, status=TaskStatus.PENDING)
            reasons = {}
            for pk, parent_id in children.values_list("pk", "parent_id"):
                reasons[pk] = parents[parent_id]
            for reason in set(reasons.values()):
                self.rows().filter(
                    pk__in=[pk for pk, r in reasons.items() if r == reason]
                ).update(status=TaskStatus.CANCELLED, error=reason, finished=now, updated=now)
            parents = {
                pk: f"parent task {pk} cancelled (task {task_id} {outcome})" for pk in reasons
            }

    def purge(
        self, older_than: float, batch: int = 1000, statuses: Iterable[str] | None = None,
        max_batches: int | None = None,
    ) -> int:
        """Delete tasks that finished more than ``older_than`` seconds ago; return how many.

        ``statuses`` narrows it to some final statuses (default: all of them);
        ``max_batches`` stops after that many delete statements (default: until done).
        Leaves go first, in short batches: a parent is only deleted once no child is left,
        and a task whose parent is still active is left alone, so a chain never loses a task
        while one of its tasks is active or more recent (the parent link cascades on delete).
        """
        wanted = FINAL_STATUSES if statuses is None else [
            s for s in statuses if s in FINAL_STATUSES
        ]
        if not wanted:
            return 0
        cutoff = timezone.now() - timedelta(seconds=older_than)
        purgeable = self.rows().filter(
            status__in=list(wanted), finished__lt=cutoff, children__isnull=True
        ).exclude(parent__status__in=ACTIVE_STATUSES)
        label = self.task_model._meta.label
        deleted = rounds = 0
        while (max_batches is None or rounds < max_batches) and (
            ids := list(purgeable.values_list("pk", flat=True)[:batch])
        ):
            deleted += self.rows().filter(pk__in=ids).delete()[1].get(label, 0)
            rounds += 1
        return deleted

    # -- observing ------------------------------------------------------------

    def running_tasks(
        self, ops: Iterable[str] | None = None, queue_ids: Iterable[str] | None = None
    ) -> list[RunningTask]:
        """Running tasks (optionally of some ops or workers) with their last heartbeat."""
        queryset = self.rows().filter(status=TaskStatus.RUNNING)
        if ops is not None:
            queryset = queryset.filter(op__in=list(ops))
        if queue_ids is not None:
            queryset = queryset.filter(queue_id__in=list(queue_ids))
        return [RunningTask(*row) for row in queryset.values_list(*_RUNNING_COLUMNS)]

    def stale_running(self, max_age: float, now: datetime | None = None) -> list[RunningTask]:
        """Running tasks with no sign of life for ``max_age`` seconds."""
        cutoff = (now or timezone.now()) - timedelta(seconds=max_age)
        queryset = self.rows().filter(status=TaskStatus.RUNNING).filter(
            Q(heartbeat__timestamp__lt=cutoff)
            | Q(heartbeat__isnull=True, started__lt=cutoff)
        )
        return [RunningTask(*row) for row in queryset.values_list(*_RUNNING_COLUMNS)]

    def rescue_orphans(self, max_age: float) -> list[tuple[RunningTask, RescueOutcome]]:
        """Rescue running tasks whose heartbeat is older than ``max_age`` seconds.

        Only one sweeper works at a time (an advisory lock on PostgreSQL); the others
        return at once. Each rescue is fenced, so a task that came back to life is left
        alone.
        """
        with transaction.atomic():
            if is_postgresql():
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_try_advisory_xact_lock(%s, 0)", [_SWEEP_LOCK])
                    if not cursor.fetchone()[0]:
                        return []
            outcomes = []
            for item in self.stale_running(max_age):
                reason = f"worker {item.queue_id} stopped sending heartbeats for {max_age:g}s"
                outcome = self.rescue(item.lease, reason)
                if outcome:
                    outcomes.append((item, outcome))
            return outcomes

    def counts_by_op(self) -> dict[str, dict[str, int]]:
        """Runnable pending and running tasks per op, in one grouped query."""
        rows = (
            self.rows().filter(
                Q(status=TaskStatus.PENDING, waiting=False, scheduled=False)
                | Q(status=TaskStatus.RUNNING)
            )
            .values_list("op", "status")
            .annotate(n=Count("id"))
            .order_by()
        )
        counts: dict[str, dict[str, int]] = {}
        for op, status, n in rows:
            counts.setdefault(op, {"pending": 0, "running": 0})[status] = n
        return counts

    def counts_by_op_and_status(self) -> dict[str, dict[str, int]]:
        """Tasks of every op per status, in one grouped query over the whole table.

        Pending tasks that wait for their parent are counted apart, as ``waiting``, and so
        are those not due yet, as ``scheduled``, so ``pending`` is the runnable backlog (as
        in ``counts_by_op``). Reads no parameters.
        """
        keys = ["pending", "scheduled", "waiting",
                *(s.value for s in TaskStatus if s != TaskStatus.PENDING)]
        return _counts_by_state(self.rows(), keys)

    def oldest_pending_by_op(self) -> dict[str, datetime]:
        """The due time (``run_after`` if set, else ``created``) of the oldest runnable
        pending task per op, in one grouped query on the pending/running index."""
        rows = (
            self.rows().filter(status=TaskStatus.PENDING, waiting=False, scheduled=False)
            .values_list("op")
            .annotate(due=Min(Coalesce(
                "run_after", "created", output_field=models.DateTimeField()
            )))
            .order_by()
        )
        return {op: due for op, due in rows}

    def active_counts_by_op(self) -> dict[str, dict[str, int]]:
        """Pending and running tasks per op, pending split as in ``counts_by_op_and_status``
        (``pending`` runnable, ``scheduled`` not due yet, ``waiting`` for a parent): one
        grouped query on the pending/running index, not over the table's history."""
        active = self.rows().filter(status__in=[TaskStatus.PENDING, TaskStatus.RUNNING])
        return _counts_by_state(active, ["pending", "scheduled", "waiting", "running"])
