"""``manage.py fullctl_operator [kopf run options]``: run the TaskPool operator (kopf).

All options are kopf run's (``--namespace NS``, ``--standalone``, ``--liveness URL``,
``--verbose``...) and are handed to it untouched; only Django's own ``--settings`` and
``--pythonpath``, which manage.py has applied already, are taken out.
"""

import argparse
import os
from collections.abc import Sequence
from typing import Any

from django.core.management.base import BaseCommand

_DJANGO_OPTIONS = ("--settings", "--pythonpath")


def kopf_arguments(argv: Sequence[str]) -> list[str]:
    """The command line minus Django's ``--settings``/``--pythonpath`` (either spelling)."""
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _DJANGO_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in _DJANGO_OPTIONS)):
            args.append(arg)
    return args


class Command(BaseCommand):
    help = (
        "Run the fullctl-tasks operator (kopf): sizes poller Deployments from the queue and "
        "restarts pods whose tasks stopped sending heartbeats. Options are kopf run's, e.g. "
        "--standalone --namespace NS --liveness=http://0.0.0.0:8080/healthz --verbose."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("kopf_args", nargs=argparse.REMAINDER, help="kopf run options")

    def run_from_argv(self, argv: list[str]) -> None:
        """Skip Django's option parser: it would refuse kopf's options."""
        from fullctl_operator.cli import run_kopf

        run_kopf(kopf_arguments(argv[2:]), prog_name=f"{os.path.basename(argv[0])} {argv[1]}")

    def handle(self, *args: Any, kopf_args: Sequence[str] = (), **options: Any) -> None:
        """For ``call_command("fullctl_operator", "--", "--standalone", ...)``."""
        from fullctl_operator.cli import run_kopf

        run_kopf(list(kopf_args), prog_name="fullctl_operator")
