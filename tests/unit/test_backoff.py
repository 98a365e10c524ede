"""The restart policy of a worker slot whose workers keep dying (poller/backoff.py), on an
injected clock: no processes, no database, no waiting."""

import pytest

from django_fullctl.poller.backoff import SlotBackoff

pytestmark = pytest.mark.portable


class Clock:
    """A monotonic clock that the test moves by hand."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def crash(backoff: SlotBackoff) -> float | None:
    """A worker of the slot died without finishing a task."""
    return backoff.died(finished_tasks=0)


def test_a_fresh_slot_may_start(clock):
    assert SlotBackoff(clock=clock).may_start()


def test_the_first_two_crashes_restart_at_once(clock):
    backoff = SlotBackoff(clock=clock)
    assert crash(backoff) is None
    assert backoff.may_start()
    clock.advance(1)
    assert crash(backoff) is None
    assert backoff.may_start()


def test_from_the_third_crash_the_delay_doubles_up_to_30_seconds(clock):
    backoff = SlotBackoff(clock=clock)
    delays = []
    for _ in range(8):
        delays.append(crash(backoff))
        clock.advance(0.5)  # all of them well inside the 60 s window
    assert delays == [None, None, 2, 4, 8, 16, 30, 30]


def test_may_start_is_false_until_the_delay_is_over(clock):
    backoff = SlotBackoff(clock=clock)
    crash(backoff)
    crash(backoff)
    assert crash(backoff) == 2
    assert not backoff.may_start()
    clock.advance(1.9)
    assert not backoff.may_start()
    clock.advance(0.1)
    assert backoff.may_start()


def test_crashes_older_than_the_window_are_forgotten(clock):
    backoff = SlotBackoff(clock=clock)
    crash(backoff)
    crash(backoff)
    clock.advance(61)  # both are now older than 60 s
    assert crash(backoff) is None
    assert backoff.may_start()
    clock.advance(1)
    assert crash(backoff) is None  # the second of this window: still free
    clock.advance(1)
    assert crash(backoff) == 2  # the third within 60 s


def test_crashes_spread_wider_than_the_window_never_wait(clock):
    backoff = SlotBackoff(clock=clock)
    for _ in range(10):
        assert crash(backoff) is None
        clock.advance(31)  # never more than two within 60 s
    assert backoff.may_start()


def test_a_worker_that_finished_a_task_clears_the_strikes(clock):
    backoff = SlotBackoff(clock=clock)
    for _ in range(4):
        crash(backoff)
    assert not backoff.may_start()
    assert backoff.died(finished_tasks=3) is None
    assert backoff.may_start()  # restarts at once, without waiting out the old delay
    assert crash(backoff) is None
    assert crash(backoff) is None
    assert crash(backoff) == 2  # counting starts again from nothing


def test_one_crash_looping_slot_does_not_hold_back_another(clock):
    looping, healthy = SlotBackoff(clock=clock), SlotBackoff(clock=clock)
    for _ in range(5):
        crash(looping)
    assert not looping.may_start()
    assert healthy.may_start()
    assert crash(healthy) is None
