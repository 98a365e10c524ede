"""``manage.py fullctl_operator [kopf run options]``: run the TaskPool operator (kopf).

All options are kopf run's (``--namespace NS``, ``--standalone``, ``--liveness URL``,
``--verbose``...) and are handed to it untouched; only Django's own ``--settings`` and
``--pythonpath``, which manage.py has applied already, are taken out.
"""

import argparse
import os
from collections.abc import Sequence
from typing import Any

from django.core.management.base import CommandError

from django_fullctl.management.base import CommandInterface

_DJANGO_OPTIONS = ("--settings", "--pythonpath")
# what pip install "fullctl-tasks[operator]" brings
OPERATOR_EXTRA = ("kopf", "kubernetes")


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


class Command(CommandInterface):
    help = (
        "Run the fullctl-tasks operator (kopf): sizes poller Deployments from the queue and "
        "restarts pods whose tasks stopped sending heartbeats. Options are kopf run's, e.g. "
        "--standalone --namespace NS --liveness=http://0.0.0.0:8080/healthz --verbose."
    )
    queue_allowed = False  # it runs until stopped: never a task for a poller
    requires_system_checks: list[str] = []  # as python -m fullctl_operator
    stealth_options = ("prog_name",)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("kopf_args", nargs=argparse.REMAINDER, help="kopf run options")

    def run_from_argv(self, argv: list[str]) -> None:
        """Django's parser would refuse kopf's options: the words after the command name go
        to kopf as they are, through ``execute`` (so ``before_run`` runs) with Django's own
        options at their defaults."""
        defaults = vars(self.create_parser(argv[0], argv[1]).parse_args([]))
        self.execute(**{
            **defaults, "kopf_args": kopf_arguments(argv[2:]),
            "prog_name": f"{os.path.basename(argv[0])} {argv[1]}",
        })

    def run(self, *args: Any, kopf_args: Sequence[str] = (), prog_name: str = "fullctl_operator",
            **options: Any) -> None:
        """Also for ``call_command("fullctl_operator", "--", "--standalone", ...)``: argparse
        keeps that ``--`` in ``kopf_args``, and kopf would take what follows for file names."""
        words = list(kopf_args)
        from fullctl_operator.cli import run_kopf

        try:
            run_kopf(words[1:] if words[:1] == ["--"] else words, prog_name=prog_name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in OPERATOR_EXTRA:
                raise
            raise CommandError(
                f"the operator needs {exc.name}, which is not installed:"
                ' pip install "fullctl-tasks[operator]"'
            ) from None
