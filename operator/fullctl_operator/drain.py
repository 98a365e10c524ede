"""Scale-in without interrupting work, as a pure function.

Lowering ``replicas`` lets the ReplicaSet controller pick pods to delete; a pod that
claims a task between the operator's look and the deletion would have that task
requeued on SIGTERM and redone elsewhere. So the operator first picks the pods to remove
and asks them, through their poller rows, to stop claiming; only a pod that says it
stopped and runs nothing (or that outlived the pool's drain timeout) gets the lowest
deletion cost and is taken off ``replicas``. A pod asked to stop that is needed again
(a new burst) is asked to resume.

The rows carry the requests (a restarted operator sees them), the status carries when
the drain began; nothing here reads the clock or the database.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class PollerRowLike(Protocol):
    """What the drain needs of a poller row (``django_fullctl.pollers.PollerRow``)."""

    @property
    def busy_slots(self) -> int: ...

    @property
    def claiming_paused(self) -> bool: ...

    @property
    def claiming_stopped(self) -> bool: ...

    @property
    def drained(self) -> bool: ...  # asked, stopped, and running nothing


class PodLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def created(self) -> datetime | None: ...

    @property
    def terminating(self) -> bool: ...


@dataclass(frozen=True)
class Drain:
    """One tick's drain: which pods to ask to stop claiming (``stop``) or to claim again
    (``resume``), which drained pods to remove now (``remove``: lowest deletion cost,
    then ``replicas`` lowered by their number), and when this drain began."""

    stop: frozenset[str] = frozenset()
    resume: frozenset[str] = frozenset()
    remove: frozenset[str] = frozenset()
    waiting_for: frozenset[str] = frozenset()  # asked, not drained yet
    since: datetime | None = None
    timed_out: bool = False


def asked(pollers: Sequence[PollerRowLike]) -> bool:
    return any(row.claiming_paused for row in pollers)


def drained(pollers: Sequence[PollerRowLike]) -> bool:
    """Every poller of the pod stopped claiming and runs nothing. A pod with no live row
    runs no poller that could claim (it has not started one, or it is gone)."""
    return all(row.drained for row in pollers)


def busy_slots(pollers: Sequence[PollerRowLike]) -> int:
    return sum(row.busy_slots for row in pollers)


def choose(
    pods: Iterable[PodLike],
    pollers: Mapping[str, Sequence[PollerRowLike]],
    count: int,
    busy: frozenset[str] = frozenset(),
) -> list[str]:
    """The ``count`` pods to remove: those already asked to stop first (a drain in
    progress is finished, not restarted elsewhere), then idle ones (``busy``: pods known
    to run a task), the least busy, then the youngest (the oldest have proven themselves)."""
    live = [pod for pod in pods if not pod.terminating]

    def order(pod: PodLike) -> tuple:
        rows = pollers.get(pod.name, ())
        created = pod.created.timestamp() if pod.created else float("inf")
        return (not asked(rows), pod.name in busy, busy_slots(rows), -created, pod.name)

    return [pod.name for pod in sorted(live, key=order)[: max(0, count)]]


def plan_drain(
    pods: Sequence[PodLike],
    pollers: Mapping[str, Sequence[PollerRowLike]],
    remove_count: int,
    since: datetime | None,
    now: datetime,
    timeout: float,
    busy: frozenset[str] = frozenset(),
) -> Drain:
    """Drive the removal of ``remove_count`` pods (0: none wanted, take back every
    request). ``since`` is when the current drain began (from the status); ``busy`` are
    the pods known to run a task (by their rows or by the tasks' ``queue_id``)."""
    live = {pod.name for pod in pods if not pod.terminating}
    requested = {name for name in live if asked(pollers.get(name, ()))}
    victims = set(choose(pods, pollers, remove_count, busy))
    resume = frozenset(requested - victims)
    if not victims:
        return Drain(resume=resume)
    since = since or now
    clean = {
        name for name in victims
        if (not pollers.get(name) and name not in busy)
        or (name in requested and drained(pollers[name]))
    }
    forced = set()
    if (now - since).total_seconds() >= timeout:
        forced = victims - clean  # the pool's drain timeout: remove them anyway
    ready = clean | forced
    waiting = frozenset(victims - ready)
    return Drain(
        stop=frozenset(name for name in victims - requested if pollers.get(name)),
        resume=resume,
        remove=frozenset(ready),
        waiting_for=waiting,
        since=since if waiting else None,
        timed_out=bool(forced),
    )
