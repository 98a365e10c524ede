"""The entry point of a spawned worker process: set Django up, then serve.

Spawn (not fork) gives each worker a fresh interpreter: no inherited database
connections, threads or locks. This module imports nothing of Django at the top,
because ``django.setup()`` must run before any model module is imported.
"""

import signal
from multiprocessing.connection import Connection

from django_fullctl.poller.slot import Slot, WorkerConfig


def worker_main(conn: Connection, slot: Slot, config: WorkerConfig) -> None:
    """Entry point of a worker process."""
    # the supervisor decides when we stop: a Ctrl-C in a terminal reaches the whole
    # process group, and we must not drop a running task because of it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import django

    django.setup()
    from django_fullctl.poller import logs
    from django_fullctl.poller.database import use_prepared_statements
    from django_fullctl.poller.worker import Worker

    logs.configure(config.log_format, config.verbosity)
    use_prepared_statements()
    Worker(conn, slot, config).serve()
