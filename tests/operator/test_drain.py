"""Scale-in that never interrupts work: the pods to remove are asked to stop claiming and
removed only once drained (or past the pool's drain timeout), case by case."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fullctl_operator.drain import choose, plan_drain

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Pod:
    name: str
    created: datetime | None = NOW - timedelta(hours=1)
    terminating: bool = False


@dataclass(frozen=True)
class Row:
    busy_slots: int = 0
    claiming_paused: bool = False
    claiming_stopped: bool = False

    @property
    def drained(self) -> bool:  # as django_fullctl.pollers.PollerRow says it
        return self.claiming_paused and self.claiming_stopped and self.busy_slots == 0


PODS = (
    Pod("old", NOW - timedelta(hours=3)),
    Pod("mid", NOW - timedelta(hours=2)),
    Pod("new", NOW - timedelta(hours=1)),
)


def test_nothing_to_remove_asks_nothing():
    drain = plan_drain(PODS, {p.name: (Row(),) for p in PODS}, 0, None, NOW, 600)
    assert not (drain.stop or drain.resume or drain.remove or drain.waiting_for)
    assert drain.since is None


def test_the_pods_to_remove_are_asked_first_and_not_removed_yet():
    rows = {p.name: (Row(),) for p in PODS}
    drain = plan_drain(PODS, rows, 1, None, NOW, 600)
    assert drain.stop == {"new"}  # idle everywhere: the youngest goes
    assert drain.remove == set() and drain.waiting_for == {"new"}
    assert drain.since == NOW


def test_the_least_busy_pods_are_chosen():
    rows = {"old": (Row(busy_slots=0),), "mid": (Row(busy_slots=2),), "new": (Row(busy_slots=1),)}
    assert choose(PODS, rows, 2) == ["old", "new"]


def test_a_drained_pod_is_removed():
    rows = {
        "old": (Row(),), "mid": (Row(),),
        "new": (Row(claiming_paused=True, claiming_stopped=True),),
    }
    drain = plan_drain(PODS, rows, 1, NOW - timedelta(seconds=5), NOW, 600)
    assert drain.remove == {"new"} and not drain.stop and not drain.waiting_for
    assert drain.since is None


def test_a_pod_still_finishing_a_task_is_waited_for():
    rows = {
        "old": (Row(),), "mid": (Row(),),
        "new": (Row(busy_slots=1, claiming_paused=True, claiming_stopped=True),),
    }
    since = NOW - timedelta(seconds=30)
    drain = plan_drain(PODS, rows, 1, since, NOW, 600)
    assert drain.remove == set() and drain.waiting_for == {"new"} and drain.since == since
    assert not drain.stop  # asked already: not asked again


def test_a_request_not_yet_acknowledged_is_waited_for():
    rows = {"old": (Row(),), "mid": (Row(),), "new": (Row(claiming_paused=True),)}
    drain = plan_drain(PODS, rows, 1, NOW, NOW, 600)
    assert drain.remove == set() and drain.waiting_for == {"new"}


def test_the_drain_timeout_removes_it_anyway():
    rows = {
        "old": (Row(),), "mid": (Row(),),
        "new": (Row(busy_slots=1, claiming_paused=True, claiming_stopped=True),),
    }
    drain = plan_drain(PODS, rows, 1, NOW - timedelta(seconds=601), NOW, 600)
    assert drain.remove == {"new"} and drain.timed_out


def test_a_drain_in_progress_is_finished_not_moved_to_another_pod():
    # "old" was asked before (it was the least busy then); now "new" is idler
    rows = {
        "old": (Row(busy_slots=1, claiming_paused=True, claiming_stopped=True),),
        "mid": (Row(busy_slots=1),), "new": (Row(),),
    }
    drain = plan_drain(PODS, rows, 1, NOW - timedelta(seconds=10), NOW, 600)
    assert drain.waiting_for == {"old"} and not drain.stop and not drain.resume


def test_a_burst_takes_the_requests_back():
    rows = {
        "old": (Row(),), "mid": (Row(),),
        "new": (Row(claiming_paused=True, claiming_stopped=True),),
    }
    drain = plan_drain(PODS, rows, 0, NOW - timedelta(seconds=10), NOW, 600)
    assert drain.resume == {"new"} and not drain.remove and not drain.stop


def test_a_smaller_drain_lets_the_extra_pods_claim_again():
    rows = {
        "old": (Row(),),
        "mid": (Row(claiming_paused=True, claiming_stopped=True, busy_slots=1),),
        "new": (Row(claiming_paused=True, claiming_stopped=True),),
    }
    drain = plan_drain(PODS, rows, 1, NOW, NOW, 600)
    assert drain.remove == {"new"} and drain.resume == {"mid"}


def test_a_pod_without_a_poller_has_nothing_to_drain():
    rows = {"old": (Row(),), "mid": (Row(),)}
    drain = plan_drain(PODS, rows, 1, None, NOW, 600)
    assert drain.remove == {"new"} and not drain.stop


def test_terminating_pods_are_never_chosen():
    pods = (*PODS[:2], Pod("new", terminating=True))
    rows = {p.name: (Row(),) for p in pods}
    assert choose(pods, rows, 1) == ["mid"]
