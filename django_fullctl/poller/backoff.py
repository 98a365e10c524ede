"""Slowing down the restarts of a worker slot whose workers keep dying (a crash loop).

The policy is per slot: one slot that keeps dying never holds back the others, so a pod
is never left without workers because of it. A death counts as a strike only when the
worker died by itself (an exit code, a crash signal) before it finished any task: a
SIGKILL from outside (the OOM killer, a chaos test, an operator) says nothing about the
code, and a worker that finished a task clears its slot's strikes. Two
strikes within ``CRASH_WINDOW`` restart at once; from the third on, the slot waits 2, 4,
8 ... seconds (at most ``MAX_RESTART_DELAY``). A pure policy with an injected clock.
"""

import time
from collections import deque
from collections.abc import Callable

CRASH_WINDOW = 60.0
MAX_RESTART_DELAY = 30.0
FREE_STRIKES = 2


class SlotBackoff:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.strikes: deque[float] = deque()
        self.next_start = 0.0

    def died(self, finished_tasks: int, killed_from_outside: bool = False) -> float | None:
        """A worker of this slot died after finishing ``finished_tasks`` tasks; returns the
        delay before the slot starts another, or None when it restarts at once."""
        now = self.clock()
        if finished_tasks > 0:
            self.strikes.clear()
            self.next_start = now
            return None
        if killed_from_outside:
            return None
        self.strikes.append(now)
        while self.strikes and self.strikes[0] < now - CRASH_WINDOW:
            self.strikes.popleft()
        if len(self.strikes) <= FREE_STRIKES:
            return None
        delay = min(2.0 ** (len(self.strikes) - FREE_STRIKES), MAX_RESTART_DELAY)
        self.next_start = now + delay
        return delay

    def may_start(self) -> bool:
        return self.clock() >= self.next_start
