"""Start kopf with the operator's handlers: shared by ``python -m fullctl_operator`` and
``manage.py fullctl_operator``.

Every argument is kopf run's own (``--namespace``, ``--standalone``, ``--liveness``,
``--verbose``, ``--peering``...), handed through untouched, so kopf's documentation is
the reference and nothing here lags behind it. kopf handles SIGTERM/SIGINT: it stops the
timers, finishes the tick in flight and exits.
"""

import logging
from collections.abc import Sequence

HANDLERS = "fullctl_operator.handlers"


def run_kopf(args: Sequence[str], prog_name: str = "fullctl_operator") -> None:
    """``kopf run --module fullctl_operator.handlers ARGS``; Django must be set up already.

    kopf's ``--verbose``/``--quiet``/``--log-format`` own the process's log output: the
    handlers that the project's ``LOGGING`` put on the root logger are removed first, or
    every line would be printed twice (named loggers' handlers stay).
    """
    from kopf.cli import main

    from django_fullctl import conf
    from fullctl_operator import handlers

    handlers.register(conf.settings().operator_interval)
    logging.getLogger().handlers.clear()
    main.main(args=["run", "--module", HANDLERS, *args], prog_name=prog_name)
