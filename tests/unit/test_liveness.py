"""The poller's liveness rule (poller/liveness.py ``judge``), a pure function of the time,
the supervisor loop's last turn and the workers' last beats: no processes, no database."""

import pytest

from django_fullctl.poller.liveness import judge
from django_fullctl.poller.slot import RunningRef
from django_fullctl.states import Lease

pytestmark = pytest.mark.portable

NOW = 10_000.0
POLL = 5.0  # the loop may be up to max(30, 3 * 5) = 30 s old
TRACK = 5.0  # a busy worker may be up to 3 * 5 + 2 = 17 s since its last beat


def busy(beat_age: float, task_id: int = 1) -> RunningRef:
    """A worker's running task whose last heartbeat was ``beat_age`` seconds ago."""
    return RunningRef(Lease(task_id, 1), timeout=0, since=NOW - 60, last_beat=NOW - beat_age)


def verdict(workers, *, loop_age: float = 1.0, poll: float = POLL, track: float = TRACK,
            draining: bool = False):
    return judge(NOW, NOW - loop_age, poll, track, workers, draining)


def test_ok_when_the_loop_turned_and_every_busy_worker_beat_recently():
    ok, body = verdict([("w-1", busy(1.0)), ("w-2", None), ("w-3", busy(16.9, task_id=2))])
    assert ok
    assert body == {
        "status": "ok", "loop_age_seconds": 1.0, "workers": 3, "busy": 2,
        "stuck_workers": [], "draining": False,
    }


def test_no_workers_at_all_is_ok():
    ok, body = verdict([])
    assert ok and body["workers"] == 0 and body["busy"] == 0


def test_a_busy_worker_past_3_track_intervals_plus_2_seconds_is_stuck():
    workers = [("w-1", busy(1.0)), ("w-2", busy(17.5, task_id=2)), ("w-3", None),
               ("w-4", busy(300.0, task_id=3))]
    ok, body = verdict(workers)
    assert not ok
    assert body["status"] == "fail"
    assert body["stuck_workers"] == ["w-2", "w-4"]  # by id, the healthy ones not named


def test_the_beat_limit_follows_the_track_interval():
    worker = [("w-1", busy(10.0))]
    assert verdict(worker, track=5.0)[0]  # limit 17 s
    ok, body = verdict(worker, track=1.0)  # limit 5 s
    assert not ok and body["stuck_workers"] == ["w-1"]


def test_an_idle_worker_is_never_stuck():
    ok, body = verdict([("w-1", None), ("w-2", None)])
    assert ok and body["stuck_workers"] == [] and body["busy"] == 0


def test_a_loop_older_than_30_seconds_fails():
    assert verdict([], loop_age=29.0)[0]
    ok, body = verdict([], loop_age=31.0)
    assert not ok
    assert body["status"] == "fail" and body["loop_age_seconds"] == 31.0
    assert body["stuck_workers"] == []  # the loop alone fails it


def test_a_long_poll_interval_allows_an_older_loop():
    # max(30, 3 * 20) = 60 s
    assert verdict([], loop_age=45.0, poll=20.0)[0]
    assert not verdict([], loop_age=61.0, poll=20.0)[0]


def test_draining_is_reported_and_judged_by_the_same_rule():
    ok, body = verdict([("w-1", busy(1.0))], draining=True)
    assert ok and body["draining"] is True
    ok, body = verdict([("w-1", busy(60.0))], draining=True)
    assert not ok and body["draining"] is True
