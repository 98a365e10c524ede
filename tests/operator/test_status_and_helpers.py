"""Status building, label selectors and the entry points' argument handling (pure)."""

from datetime import UTC, datetime, timedelta

from fullctl_operator.decisions import Condition, Plan
from fullctl_operator.observe import selector_matches, selector_query
from fullctl_operator.status import build_status, lower_since, merge_conditions, status_patch

from django_fullctl.management.commands.fullctl_operator import kopf_arguments

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def test_status_after_a_scale():
    decided = Plan("scaling up 1 -> 3", (Condition("Ready", True, "Sizing"),), pending=10,
                   running=2, desired=3, scale_to=3)
    status = build_status(decided, {"restartedPods": 2}, generation=4, current_replicas=1,
                          scaled=True, restarted=1, now=NOW)
    assert status["pending"] == 10 and status["running"] == 2
    assert status["desiredReplicas"] == 3 and status["currentReplicas"] == 1
    assert status["lastScaleTime"] == "2026-11-29T12:00:00Z"
    assert status["restartedPods"] == 3  # cumulative
    assert status["observedGeneration"] == 4 and status["lowerSince"] is None
    assert status["conditions"][0]["type"] == "Ready"


def test_unknown_numbers_keep_their_last_value():
    decided = Plan("holding 3: the database could not be read", (), desired=3,
                   lower_since=NOW - timedelta(seconds=5))
    previous = {"pending": 7, "running": 1, "lastScaleTime": "2026-11-28T00:00:00Z"}
    status = build_status(decided, previous, generation=1, current_replicas=3, scaled=False,
                          restarted=0, now=NOW)
    assert (status["pending"], status["running"]) == (7, 1)
    assert status["lastScaleTime"] == "2026-11-28T00:00:00Z"
    assert lower_since(status) == NOW - timedelta(seconds=5)


def test_condition_transition_time_moves_only_on_a_flip():
    first = merge_conditions([], [Condition("DatabaseReachable", True, "Reachable")], NOW)
    later = NOW + timedelta(minutes=5)
    same = merge_conditions(first, [Condition("DatabaseReachable", True, "Reachable")], later)
    assert same[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]
    flipped = merge_conditions(same, [Condition("DatabaseReachable", False, "Unreachable")], later)
    assert flipped[0]["status"] == "False"
    assert flipped[0]["lastTransitionTime"] == "2026-11-29T12:05:00Z"


def test_status_patch_holds_only_what_changed():
    current = {"pending": 1, "running": 0, "lowerSince": "x", "somethingElse": 1}
    wanted = {"pending": 1, "running": 2, "lowerSince": None, "lastDecision": "steady"}
    assert status_patch(current, wanted) == {"running": 2, "lowerSince": None,
                                             "lastDecision": "steady"}
    assert status_patch(wanted, wanted) == {}
    assert status_patch({}, {"lowerSince": None}) == {}  # absent and null are the same


def test_label_selectors():
    selector = {
        "matchLabels": {"app": "poller", "pool": "a"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["x", "y"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }
    assert selector_matches({"app": "poller", "pool": "a", "tier": "x"}, selector)
    assert not selector_matches({"app": "poller", "pool": "b", "tier": "x"}, selector)
    assert not selector_matches({"app": "poller", "pool": "a", "tier": "z"}, selector)
    assert not selector_matches({"app": "poller", "pool": "a", "tier": "x", "canary": "1"},
                                selector)
    assert selector_query(selector) == "app=poller,pool=a,tier in (x,y),!canary"


def test_manage_py_hands_kopf_its_options():
    argv = ["--settings", "mysite.settings", "--standalone", "--namespace", "ns",
            "--pythonpath=/app", "--liveness=http://0.0.0.0:8080/healthz", "--verbose"]
    assert kopf_arguments(argv) == [
        "--standalone", "--namespace", "ns", "--liveness=http://0.0.0.0:8080/healthz",
        "--verbose",
    ]
