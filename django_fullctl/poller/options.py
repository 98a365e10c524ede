"""How a poller was asked to run: its mode, size and timings (from the command line)."""

import enum
from dataclasses import dataclass


class Mode(enum.Enum):
    """``--processes``: workers claim for themselves; ``--workers``: the supervisor's
    dispatcher claims and assigns."""

    PROCESSES = "processes"
    WORKERS = "workers"


@dataclass(frozen=True)
class PollerOptions:
    mode: Mode
    size: int  # worker processes (the most of them, in WORKERS mode)
    max_tasks: int  # 0: unlimited
    poll_interval: float
    grace_period: float
    log_format: str = "text"
    verbosity: int = 1
    max_memory_mib: int = 0  # recycle a worker after a task above this RSS; 0: never

    @property
    def self_claiming(self) -> bool:
        return self.mode is Mode.PROCESSES
