"""Every write to task rows, and the reads that scheduling decisions need.

This is the job manager of the queue: the poller, the admin, the operator and the task
API call these functions and never write task rows themselves. The rules (DESIGN.md):

* the claim is one statement (PostgreSQL: ``FOR UPDATE SKIP LOCKED`` in a CTE);
* every later write is fenced on ``(id, attempt, status='running')``, so a late writer
  (a worker that was given up on, a second sweeper) changes nothing;
* each transition commits on its own, in a short transaction;
* limits are checked and the row inserted under one lock per (op, limit_id);
* wake-up notifications are not sent from here: a trigger on the table sends them on
  PostgreSQL (see ``notify``).
"""

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from django_fullctl.exceptions import TaskLimitError
from django_fullctl.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Task,
    TaskHeartbeat,
    TaskStatus,
)

log = logging.getLogger("django_fullctl.queue")

# advisory lock namespaces (first key of PostgreSQL's two-key advisory locks)
_LIMIT_LOCK = 0x46C1
_SWEEP_LOCK = 0x46C2


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


# -- creating -------------------------------------------------------------


def enqueue(task: Task, limit: int | None) -> Task:
    """Insert a new pending task, enforcing its limit atomically.

    Runs inside the caller's transaction when there is one, so a rollback leaves no task
    (and PostgreSQL only delivers the wake-up notification on commit).
    """
    with transaction.atomic():
        if limit is not None:
            _lock_limit(task.op, task.limit_id)
            active = Task.objects.filter(
                op=task.op, limit_id=task.limit_id, status__in=ACTIVE_STATUSES
            ).count()
            if active >= limit:
                raise TaskLimitError(task.op, task.limit_id, limit)
        if task.parent_id is not None:
            # lock the parent row so its completion cannot slip between this read and our
            # insert: it then either sees our child (and releases it) or we see it completed
            parent_status = (
                Task.objects.select_for_update()
                .filter(pk=task.parent_id)
                .values_list("status", flat=True)
                .get()
            )
            if parent_status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                task.status = TaskStatus.CANCELLED
                task.error = f"parent task {task.parent_id} is {parent_status}"
                task.finished = timezone.now()
            task.waiting = parent_status != TaskStatus.COMPLETED
        task.save(force_insert=True)
    return task


def _lock_limit(op: str, limit_id: str) -> None:
    """Serialise creations of one (op, limit_id) until the end of the transaction."""
    if is_postgresql():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_LIMIT_LOCK, f"{op}\n{limit_id}"]
            )
    else:
        # SQLite: take the database write lock now, before counting, so concurrent
        # creators queue up behind each other instead of all counting zero
        Task.objects.filter(pk=-1).update(op=op)


# -- claiming ---------------------------------------------------------------

_CLAIM_SQL = """
WITH picked AS (
    SELECT id FROM {table}
    WHERE status = 'pending' AND NOT waiting AND op = ANY(%s)
    ORDER BY priority DESC, id
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
UPDATE {table} AS t
SET status = 'running', queue_id = %s, attempt = t.attempt + 1,
    claimed = %s, started = %s, updated = %s, error = NULL
FROM picked WHERE t.id = picked.id
RETURNING {columns}
"""


def claim(worker_id: str, ops: Iterable[str], limit: int = 1) -> list[Task]:
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
        with connection.cursor() as cursor:
            cursor.execute(_claim_statement(), [ops, limit, worker_id, now, now, now])
            tasks = [_task_from_row(row) for row in cursor.fetchall()]
    else:
        tasks = _claim_portable(worker_id, ops, limit, now)
    tasks.sort(key=lambda t: (-t.priority, t.pk))
    return [t.cast() for t in tasks]


@functools.cache
def _claim_statement() -> str:
    columns = ", ".join(f"t.{f.column}" for f in Task._meta.concrete_fields)
    return _CLAIM_SQL.format(table=Task._meta.db_table, columns=columns)


def _task_from_row(row: tuple) -> Task:
    """A model instance from a claimed row, as a queryset would load it (cheaper than
    ``raw()``, which works out its column mapping and converters on every call)."""
    fields = Task._meta.concrete_fields
    values = [
        field.from_db_value(value, None, connection) if hasattr(field, "from_db_value") else value
        for field, value in zip(fields, row, strict=True)
    ]
    return Task.from_db(connection.alias, [f.attname for f in fields], values)


def _claim_portable(worker_id: str, ops: list[str], limit: int, now: datetime) -> list[Task]:
    """Optimistic claim for databases without SKIP LOCKED: a conditional UPDATE per row."""
    candidates = Task.objects.filter(
        status=TaskStatus.PENDING, waiting=False, op__in=ops
    ).order_by("-priority", "id")
    claimed = []
    for task in candidates[: limit * 4]:
        won = Task.objects.filter(pk=task.pk, status=TaskStatus.PENDING, attempt=task.attempt)
        if won.update(
            status=TaskStatus.RUNNING, queue_id=worker_id, attempt=task.attempt + 1,
            claimed=now, started=now, updated=now, error=None,
        ):
            task.refresh_from_db()
            claimed.append(task)
            if len(claimed) == limit:
                break
    return claimed


# -- fenced transitions of a running task -----------------------------------


def _running(task_id: int, attempt: int):
    return Task.objects.filter(pk=task_id, attempt=attempt, status=TaskStatus.RUNNING)


_COMPLETE_SQL = """
WITH done AS (
    UPDATE {table}
    SET status = 'completed', result_data = %s, time = %s, finished = %s, updated = %s,
        error = NULL
    WHERE id = %s AND attempt = %s AND status = 'running'
    RETURNING id
), released AS (
    UPDATE {table} SET waiting = false, updated = %s
    WHERE parent_id IN (SELECT id FROM done) AND status = 'pending' AND waiting
)
SELECT count(*) FROM done
"""


def complete(task: Task, result: object, duration: float) -> bool:
    """Record a successful run and release the task's waiting children, atomically.

    ``result`` must already be JSON-safe (see ``runner.run``). Returns False, and changes
    nothing, when this worker no longer owns the task.
    """
    now = timezone.now()
    if is_postgresql():
        # the hot path: one statement, one round trip
        data = Task._meta.get_field("result_data").get_db_prep_value(result, connection)
        with connection.cursor() as cursor:
            cursor.execute(
                _COMPLETE_SQL.format(table=Task._meta.db_table),
                [data, duration, now, now, task.pk, task.attempt, now],
            )
            done = cursor.fetchone()[0]
    else:
        with transaction.atomic():
            done = _running(task.pk, task.attempt).update(
                status=TaskStatus.COMPLETED, result_data=result, time=duration,
                finished=now, updated=now, error=None,
            )
            if done:
                Task.objects.filter(
                    parent_id=task.pk, status=TaskStatus.PENDING, waiting=True
                ).update(waiting=False, updated=now)
    return bool(done) or _late("complete", task)


def fail(task: Task, error: str, duration: float | None = None) -> bool:
    """Record a failed run; the task's descendants are cancelled. Fenced like ``complete``."""
    return _finish_fenced(task.pk, task.attempt, TaskStatus.FAILED, error, duration)


def _finish_fenced(
    task_id: int, attempt: int, status: str, error: str, duration: float | None
) -> bool:
    now = timezone.now()
    with transaction.atomic():
        fields = {"status": status, "error": error, "finished": now, "updated": now}
        if duration is not None:
            fields["time"] = duration
        if not _running(task_id, attempt).update(**fields):
            return _late(status, Task(pk=task_id, attempt=attempt))
        _cancel_descendants(task_id, status)
    return True


def requeue(task: Task, reason: str, count_attempt: bool = True) -> bool:
    """Put a running task back to pending (fenced).

    ``count_attempt=False`` gives the attempt back: a drain at shutdown is not the task's
    fault and must not use up its retries.
    """
    now = timezone.now()
    fields = {"status": TaskStatus.PENDING, "queue_id": None, "error": reason, "updated": now}
    if not count_attempt:
        fields["attempt"] = task.attempt - 1
    with transaction.atomic():
        if not _running(task.pk, task.attempt).update(**fields):
            return _late("requeue", task)
        TaskHeartbeat.objects.filter(task_id=task.pk).delete()
    return True


def rescue(task: Task, reason: str) -> str | None:
    """A running task lost its worker: requeue it while attempts remain, else fail it.

    Returns ``"requeued"``, ``"failed"`` or None when the fence held (someone else acted).
    """
    if task.attempt < task.max_attempts:
        return "requeued" if requeue(task, reason) else None
    error = f"{reason}; gave up after {task.attempt} attempt(s)"
    return "failed" if fail(task, error) else None


def heartbeat(task_id: int, attempt: int) -> bool:
    """Refresh a running task's heartbeat; False when the task is no longer ours to run.

    One fenced UPDATE in the usual case; the first beat of a task inserts the row.
    """
    now = timezone.now()
    if TaskHeartbeat.objects.filter(
        task_id=task_id, task__attempt=attempt, task__status=TaskStatus.RUNNING
    ).update(timestamp=now):
        return True
    if not _running(task_id, attempt).exists():
        return False
    TaskHeartbeat.objects.update_or_create(task_id=task_id, defaults={"timestamp": now})
    return True


def _late(action: str, task: Task) -> bool:
    log.warning(
        "late %s of task %s attempt %s ignored: the task is no longer running for this worker",
        action, task.pk, task.attempt,
    )
    return False


# -- user and admin actions ------------------------------------------------


def cancel(task_id: int, reason: str) -> bool:
    """Cancel a pending or running task and its descendants; False if it had finished."""
    now = timezone.now()
    with transaction.atomic():
        done = Task.objects.filter(pk=task_id, status__in=ACTIVE_STATUSES).update(
            status=TaskStatus.CANCELLED, error=reason, finished=now, updated=now
        )
        if not done:
            return False
        _cancel_descendants(task_id, TaskStatus.CANCELLED)
    return True


def retry(task_id: int) -> bool:
    """Start a failed or cancelled task again, with fresh attempts."""
    now = timezone.now()
    with transaction.atomic():
        task = Task.objects.select_for_update().filter(
            pk=task_id, status__in=(TaskStatus.FAILED, TaskStatus.CANCELLED)
        ).first()
        if task is None:
            return False
        waiting = task.parent_id is not None and not Task.objects.filter(
            pk=task.parent_id, status=TaskStatus.COMPLETED
        ).exists()
        Task.objects.filter(pk=task_id).update(
            status=TaskStatus.PENDING, attempt=0, waiting=waiting, queue_id=None, error=None,
            result_data=None, time=None, claimed=None, started=None, finished=None, updated=now,
        )
    return True


def _cancel_descendants(task_id: int, outcome: str) -> None:
    """Cancel every pending descendant of a task that will not complete.

    Each child's error names its own parent and the task where the chain broke.
    """
    now = timezone.now()
    parents = {task_id: f"parent task {task_id} {outcome}"}
    while parents:
        children = Task.objects.filter(parent_id__in=parents, status=TaskStatus.PENDING)
        reasons = {}
        for pk, parent_id in children.values_list("pk", "parent_id"):
            reasons[pk] = parents[parent_id]
        for reason in set(reasons.values()):
            Task.objects.filter(pk__in=[pk for pk, r in reasons.items() if r == reason]).update(
                status=TaskStatus.CANCELLED, error=reason, finished=now, updated=now
            )
        parents = {pk: f"parent task {pk} cancelled (task {task_id} {outcome})" for pk in reasons}


def purge(older_than: float, batch: int = 1000) -> int:
    """Delete tasks that finished more than ``older_than`` seconds ago; return how many.

    Leaves go first, in short batches: a parent is only deleted once no child is left,
    so a chain never loses a task that is still active or more recent (the parent link
    cascades on delete).
    """
    cutoff = timezone.now() - timedelta(seconds=older_than)
    purgeable = Task.objects.filter(
        status__in=FINAL_STATUSES, finished__lt=cutoff, children__isnull=True
    )
    deleted = 0
    while ids := list(purgeable.values_list("pk", flat=True)[:batch]):
        deleted += Task.objects.filter(pk__in=ids).delete()[1].get(Task._meta.label, 0)
    return deleted


# -- observing -------------------------------------------------------------


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
    def host(self) -> str:
        """The host (pod name) of the worker that runs it: ``queue_id`` is ``host:pid``."""
        return (self.queue_id or "").rsplit(":", 1)[0]

    def last_sign_of_life(self) -> datetime | None:
        return self.heartbeat or self.started

    def as_task(self) -> Task:
        return Task(
            pk=self.id, op=self.op, attempt=self.attempt, max_attempts=self.max_attempts,
            status=TaskStatus.RUNNING,
        )


def running_tasks(
    ops: Iterable[str] | None = None, queue_ids: Iterable[str] | None = None
) -> list[RunningTask]:
    """Running tasks (optionally of some ops or workers) with their last heartbeat, one query."""
    queryset = Task.objects.filter(status=TaskStatus.RUNNING)
    if ops is not None:
        queryset = queryset.filter(op__in=list(ops))
    if queue_ids is not None:
        queryset = queryset.filter(queue_id__in=list(queue_ids))
    rows = queryset.values_list(
        "pk", "op", "attempt", "max_attempts", "queue_id", "started", "heartbeat__timestamp"
    )
    return [RunningTask(*row) for row in rows]


def stale_running(max_age: float, now: datetime | None = None) -> list[RunningTask]:
    """Running tasks with no sign of life for ``max_age`` seconds."""
    cutoff = (now or timezone.now()) - timedelta(seconds=max_age)
    queryset = Task.objects.filter(status=TaskStatus.RUNNING).filter(
        Q(heartbeat__timestamp__lt=cutoff)
        | Q(heartbeat__isnull=True, started__lt=cutoff)
    )
    rows = queryset.values_list(
        "pk", "op", "attempt", "max_attempts", "queue_id", "started", "heartbeat__timestamp"
    )
    return [RunningTask(*row) for row in rows]


def rescue_orphans(max_age: float) -> list[tuple[RunningTask, str]]:
    """Rescue running tasks whose heartbeat is older than ``max_age`` seconds.

    Only one sweeper works at a time (an advisory lock on PostgreSQL); the others return
    at once. Each rescue is fenced, so a task that came back to life is left alone.
    """
    if is_postgresql():
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s, 0)", [_SWEEP_LOCK])
                if not cursor.fetchone()[0]:
                    return []
            return _rescue(stale_running(max_age), max_age)
    return _rescue(stale_running(max_age), max_age)


def _rescue(stale: list[RunningTask], max_age: float) -> list[tuple[RunningTask, str]]:
    outcomes = []
    for item in stale:
        reason = f"worker {item.queue_id} stopped sending heartbeats for {max_age:g}s"
        outcome = rescue(item.as_task(), reason)
        if outcome:
            outcomes.append((item, outcome))
    return outcomes


def counts_by_op() -> dict[str, dict[str, int]]:
    """Runnable pending and running tasks per op, in one grouped query."""
    rows = (
        Task.objects.filter(
            Q(status=TaskStatus.PENDING, waiting=False) | Q(status=TaskStatus.RUNNING)
        )
        .values_list("op", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: dict[str, dict[str, int]] = {}
    for op, status, n in rows:
        counts.setdefault(op, {"pending": 0, "running": 0})[status] = n
    return counts


def counts_by_op_and_status() -> dict[str, dict[str, int]]:
    """Tasks of every op per status, in one grouped query over the whole table.

    Pending tasks that wait for their parent are counted apart, as ``waiting``, so
    ``pending`` is the runnable backlog (as in ``counts_by_op``). Reads no parameters.
    """
    rows = (
        Task.objects.values_list("op", "status", "waiting")
        .annotate(n=Count("id"))
        .order_by()
    )
    keys = ["pending", "waiting", *(s.value for s in TaskStatus if s != TaskStatus.PENDING)]
    counts: dict[str, dict[str, int]] = {}
    for op, status, waiting, n in rows:
        key = "waiting" if status == TaskStatus.PENDING and waiting else status
        entry = counts.setdefault(op, dict.fromkeys(keys, 0))
        entry[key] = entry.get(key, 0) + n
    return counts
