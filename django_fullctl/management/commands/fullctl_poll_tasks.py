"""``manage.py fullctl_poll_tasks``: claim and run tasks until told to stop."""

from django.core.management.base import BaseCommand, CommandError

from django_fullctl import conf, registry
from django_fullctl.poller import liveness, logs
from django_fullctl.poller.options import Mode, PollerOptions
from django_fullctl.poller.supervisor import Supervisor


class Command(BaseCommand):
    help = "Process queued tasks that this environment qualifies for, until SIGTERM."

    def add_arguments(self, parser) -> None:
        parser.add_argument("-w", "--workers", type=int, default=None,
                            help="workers that the supervisor assigns claimed tasks to"
                            " (default 1)")
        parser.add_argument("-p", "--processes", type=int, default=None,
                            help="self-claiming worker processes (instead of --workers)")
        parser.add_argument("-t", "--max-tasks-per-process", type=int, default=0,
                            help="tasks a worker process runs before it is replaced (0: no limit)")
        parser.add_argument("-i", "--poll-interval", type=float, default=None,
                            help="seconds between polls when no notification arrives")
        parser.add_argument("--grace-period", type=float, default=30.0,
                            help="seconds running tasks may take to finish after SIGTERM")
        parser.add_argument("--health-port", type=int, default=None,
                            help="serve this poller's liveness at http://0.0.0.0:PORT/health")
        parser.add_argument("--log-format", choices=("text", "json"), default="text")

    def handle(self, *args, **options) -> None:
        mode, size = self.mode(options["processes"], options["workers"])
        for name, value in (("--max-tasks-per-process", options["max_tasks_per_process"]),
                            ("--grace-period", options["grace_period"])):
            if value < 0:
                raise CommandError(f"{name} must not be negative")
        poll_interval = options["poll_interval"]
        if poll_interval is None:
            poll_interval = conf.settings().poll_interval
        if poll_interval <= 0:
            raise CommandError("--poll-interval must be positive")
        logs.configure(options["log_format"], options["verbosity"])
        supervisor = Supervisor(
            PollerOptions(
                mode=mode, size=size, max_tasks=options["max_tasks_per_process"],
                poll_interval=poll_interval, grace_period=options["grace_period"],
                log_format=options["log_format"], verbosity=options["verbosity"],
            ),
            # worked out once: the settings of a running process do not change
            registry.qualified_ops(),
        )
        if options["health_port"] is not None:
            liveness.serve(options["health_port"], supervisor.liveness)
        supervisor.run()

    @staticmethod
    def mode(processes: int | None, workers: int | None) -> tuple[Mode, int]:
        """``--processes N`` or ``--workers N`` (default ``--workers 1``)."""
        for name, value in (("--processes", processes), ("--workers", workers)):
            if value is not None and value < 0:
                raise CommandError(f"{name} must not be negative")
        if processes:
            return Mode.PROCESSES, processes
        workers = 1 if workers is None else workers
        if not workers:
            raise CommandError("give --processes or --workers a value above 0")
        return Mode.WORKERS, workers
