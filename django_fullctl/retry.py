"""Retrying a failed task: the ``TaskMeta.retry`` policy and ``RetryLater``.

A retry is "back to pending with a due time": the task leaves the claim index until the
due-time release puts it back, on the same claim and fencing rules as every attempt.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass

# how far jitter spreads a delay: a thousand failures do not come back in one instant
JITTER = 0.1


class RetryLater(Exception):  # noqa: N818 - the name says what the task asks for
    """Raised by a task's ``run()`` to ask for another attempt after ``delay`` seconds,
    whatever the policy's ``on``; still bounded by the task's ``max_attempts``."""

    def __init__(self, delay: float = 0.0, reason: str = ""):
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise ValueError(f"RetryLater(delay=...) takes seconds >= 0, not {delay!r}")
        self.delay = float(delay)
        self.reason = reason
        super().__init__(reason or f"retry in {self.delay:g}s")


@dataclass(frozen=True)
class Retry:
    """Retry on the exceptions in ``on`` while attempts remain, after ``delay * factor **
    (attempt - 1)`` seconds (at most ``max_delay``), spread by +-10 % with ``jitter``.

    ``max_attempts`` counts every attempt, the first included; a dead worker and a
    rescue use an attempt too.
    """

    max_attempts: int = 3
    on: tuple[type[BaseException], ...] = (Exception,)
    delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 600.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if type(self.max_attempts) is not int or self.max_attempts < 1:
            raise ValueError(f"Retry(max_attempts=...) must be a positive whole number, "
                             f"not {self.max_attempts!r}")
        on = self.on if isinstance(self.on, tuple) else (self.on,)
        if not on or not all(isinstance(c, type) and issubclass(c, BaseException) for c in on):
            raise ValueError(f"Retry(on=...) takes exception classes, not {self.on!r}")
        object.__setattr__(self, "on", on)
        for name in ("delay", "factor", "max_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"Retry({name}=...) must be a number >= 0, not {value!r}")
        if self.factor < 1:
            raise ValueError(f"Retry(factor=...) must be at least 1, not {self.factor!r}")

    def retries(self, exc_class: type[BaseException]) -> bool:
        """Does the policy retry this kind of failure?"""
        return issubclass(exc_class, self.on)

    def delay_for(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for the first)."""
        delay = min(self.delay * self.factor ** max(attempt - 1, 0), self.max_delay)
        if self.jitter:
            delay *= 1 + JITTER * (2 * rand() - 1)
        return delay
