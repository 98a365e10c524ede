"""What a spawned worker process unpickles: kept free of Django imports, because the new
interpreter must run ``django.setup()`` before any model module is imported."""

import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection


@dataclass(frozen=True)
class WorkerConfig:
    self_claiming: bool
    ops: tuple[str, ...]
    max_tasks: int  # 0: unlimited
    poll_interval: float
    log_format: str


def worker_main(conn: Connection, config: WorkerConfig) -> None:
    """Entry point of a worker process."""
    # the supervisor decides when we stop: a Ctrl-C in a terminal reaches the whole
    # process group, and we must not drop a running task because of it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import django

    django.setup()
    from django_fullctl.poller import logs
    from django_fullctl.poller.worker import Worker

    logs.configure(config.log_format)
    Worker(conn, config).serve()
