"""Slowing down the restarts of workers that keep dying (a crash loop).

A pure policy with an injected clock, so it is tested without processes.
"""

import time
from collections import deque
from collections.abc import Callable

# crashes within this window slow down the restarts (up to MAX_RESTART_DELAY)
CRASH_WINDOW = 60.0
MAX_RESTART_DELAY = 30.0


class RestartBackoff:
    """After more than two crashes within ``CRASH_WINDOW``, wait 2, 4, 8 ... seconds (at
    most ``MAX_RESTART_DELAY``) before starting workers again."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.crashes: deque[float] = deque()
        self.next_start = 0.0

    def crashed(self) -> float | None:
        """Count a crash; returns the delay it imposes, or None when restarts go on at once."""
        now = self.clock()
        self.crashes.append(now)
        while self.crashes and self.crashes[0] < now - CRASH_WINDOW:
            self.crashes.popleft()
        if len(self.crashes) <= 2:
            return None
        delay = min(2.0 ** (len(self.crashes) - 2), MAX_RESTART_DELAY)
        self.next_start = now + delay
        return delay

    def may_start(self) -> bool:
        return self.clock() >= self.next_start
