"""``manage.py fullctl_poll_tasks``: claim and run tasks until told to stop."""

import argparse
import logging

from django.core.management.base import CommandError

from django_fullctl import conf, registry
from django_fullctl.management.base import CommandInterface
from django_fullctl.poller import liveness, logs
from django_fullctl.poller.options import Mode, PollerOptions
from django_fullctl.poller.supervisor import Supervisor

# argparse's own exit status for a bad command line
USAGE_ERROR = 2


def port(value: str) -> int:
    """The type of ``--health-port``: a TCP port number."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a port number (1-65535)")
    return number


class Command(CommandInterface):
    help = "Process queued tasks that this environment qualifies for, until SIGTERM."
    queue_allowed = False  # it is the poller: it runs until stopped, never as a task

    def add_arguments(self, parser) -> None:
        parser.add_argument("-w", "--workers", type=int, default=None,
                            help="workers that the supervisor assigns claimed tasks to"
                            " (the default mode, with 1 worker)")
        parser.add_argument("-p", "--processes", type=int, default=None,
                            help="self-claiming worker processes (instead of --workers)")
        parser.add_argument("-t", "--max-tasks-per-process", type=int, default=0,
                            help="tasks a worker process runs before it is replaced (0: no limit)")
        parser.add_argument("--max-memory-per-process", type=int, default=0, metavar="MIB",
                            help="replace a worker process after a task once its resident"
                            " memory passes this many MiB (0: no limit)")
        parser.add_argument("-i", "--poll-interval", type=float, default=None,
                            help="seconds between polls when no notification arrives")
        parser.add_argument("--grace-period", type=float, default=30.0,
                            help="seconds running tasks may take to finish after SIGTERM")
        parser.add_argument("--health-port", type=port, default=None,
                            help="serve this poller's liveness at http://0.0.0.0:PORT/health")
        parser.add_argument("--log-format", choices=("text", "json"), default="text")
        parser.add_argument("-Q", "--queue", action="store_true", help=argparse.SUPPRESS)

    def run(self, *args, **options) -> None:
        if options["queue"]:
            raise CommandError(
                "fullctl_poll_tasks cannot be queued: it is the poller that runs queued"
                " tasks, and it runs until it is stopped", returncode=USAGE_ERROR,
            )
        for name in ("processes", "workers", "max_tasks_per_process", "max_memory_per_process",
                     "grace_period"):
            if (options[name] or 0) < 0:
                flag = "--" + name.replace("_", "-")
                raise CommandError(f"{flag} must not be negative", returncode=USAGE_ERROR)
        mode, size = self.mode(options["processes"], options["workers"])
        poll_interval = options["poll_interval"]
        if poll_interval is None:
            poll_interval = conf.settings().poll_interval
        if poll_interval <= 0:
            raise CommandError("--poll-interval must be positive", returncode=USAGE_ERROR)
        logs.configure(options["log_format"], options["verbosity"])
        supervisor = Supervisor(
            PollerOptions(
                mode=mode, size=size, max_tasks=options["max_tasks_per_process"],
                poll_interval=poll_interval, grace_period=options["grace_period"],
                log_format=options["log_format"], verbosity=options["verbosity"],
                max_memory_mib=options["max_memory_per_process"],
            ),
            # worked out once: the settings of a running process do not change
            registry.qualified_ops(),
        )
        if options["health_port"] is not None:
            try:
                liveness.serve(options["health_port"], supervisor.liveness)
            except OSError as exc:
                raise CommandError(
                    f"--health-port {options['health_port']}: {exc.strerror or exc}",
                    returncode=USAGE_ERROR,
                ) from None
        log_unqualified_ops()
        supervisor.run()

    @staticmethod
    def mode(processes: int | None, workers: int | None) -> tuple[Mode, int]:
        """``--processes N`` or ``--workers N`` (default ``--workers 1``), never both."""
        if processes is not None and workers:
            raise CommandError(
                "give either --processes or --workers, not both (--processes workers claim"
                " for themselves, --workers are assigned tasks by the supervisor)",
                returncode=USAGE_ERROR,
            )
        if processes is not None:
            if processes == 0:
                raise CommandError("--processes must be at least 1", returncode=USAGE_ERROR)
            return Mode.PROCESSES, processes
        workers = 1 if workers is None else workers
        if not workers:
            raise CommandError("give --processes or --workers a value above 0",
                               returncode=USAGE_ERROR)
        return Mode.WORKERS, workers


def log_unqualified_ops() -> None:
    """Say, at start, which registered ops this poller will not claim, and why: a task
    that waits because no poller qualifies is then explained by the log."""
    for op, cls in registry.registered():
        failed = registry.failed_qualifiers(cls)
        if failed:
            logs.event("poller.op_skipped", "op not claimed here: a qualifier is not met",
                       logging.INFO, op=op, qualifier=repr(failed[0]))
