"""The TaskPool's status: built from a tick's plan, written only where it changed.

Pure like ``decisions``: the status is also the operator's memory between ticks (when a
lower size was first wanted, how many pods were restarted), so it must survive an
operator restart and be computed the same way every time.
"""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from fullctl_operator.decisions import Condition, Plan, format_time, parse_time

# the keys the operator owns; anything else in .status is left alone
OWNED = (
    "pending", "running", "desiredReplicas", "currentReplicas", "busyPods", "lastScaleTime",
    "lastDecision", "restartedPods", "observedGeneration", "lowerSince", "drainingSince",
    "conditions",
    "connections",
)


def lower_since(status: Mapping[str, Any]) -> datetime | None:
    """When a lower size was first wanted, as recorded by an earlier tick."""
    return parse_time(status.get("lowerSince"))


def draining_since(status: Mapping[str, Any]) -> datetime | None:
    """When the drain before a scale-in began, as recorded by an earlier tick."""
    return parse_time(status.get("drainingSince"))


def build_status(
    plan: Plan,
    previous: Mapping[str, Any],
    *,
    generation: int | None,
    current_replicas: int | None,
    scaled: bool,
    restarted: int,
    now: datetime,
) -> dict[str, Any]:
    """The full status after a tick. Unknown numbers (a database error) keep their last value."""
    return {
        "pending": plan.pending if plan.pending is not None else previous.get("pending"),
        "running": plan.running if plan.running is not None else previous.get("running"),
        "desiredReplicas": plan.desired,
        "currentReplicas": current_replicas,
        "busyPods": plan.busy,
        "lastScaleTime": format_time(now) if scaled else previous.get("lastScaleTime"),
        "lastDecision": plan.decision,
        "restartedPods": int(previous.get("restartedPods") or 0) + restarted,
        "observedGeneration": generation,
        "lowerSince": format_time(plan.lower_since) if plan.lower_since else None,
        "drainingSince": format_time(plan.drain_since) if plan.drain_since else None,
        "conditions": merge_conditions(previous.get("conditions") or [], plan.conditions, now),
        # the database connections the pool's pods may hold (what other pools' budgets count)
        "connections": plan.connections,
    }


def merge_conditions(
    old: Iterable[Mapping[str, Any]], new: Iterable[Condition], now: datetime
) -> list[dict[str, Any]]:
    """Kubernetes-style conditions; ``lastTransitionTime`` moves only when the status flips."""
    before = {c.get("type"): c for c in old if isinstance(c, Mapping)}
    merged = []
    for condition in new:
        status = "True" if condition.status else "False"
        prior = before.get(condition.type)
        since = prior.get("lastTransitionTime") if prior and prior.get("status") == status else None
        merged.append({
            "type": condition.type,
            "status": status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": since or format_time(now),
        })
    return merged


def status_patch(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch from ``current`` to ``wanted`` (None deletes); empty when equal."""
    return {
        key: wanted.get(key)
        for key in OWNED
        if key in wanted and current.get(key) != wanted.get(key)
    }
