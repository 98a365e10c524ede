"""``python -m fullctl_operator [kopf run options]``: the operator with your Django settings.

The operator evaluates task qualifiers and reads the queue through the ORM, so it needs
the same settings module as the pollers. There is deliberately no default: guessing a
settings module would size pools against the wrong database.
"""

import os
import sys
from collections.abc import Sequence

from fullctl_operator.cli import run_kopf


def main(argv: Sequence[str] | None = None) -> None:
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        sys.stderr.write(
            "fullctl_operator: set DJANGO_SETTINGS_MODULE to your project's settings module "
            "(the one your pollers run with), e.g. DJANGO_SETTINGS_MODULE=mysite.settings\n"
        )
        raise SystemExit(2)
    import django

    django.setup()
    run_kopf(sys.argv[1:] if argv is None else list(argv), prog_name="python -m fullctl_operator")


if __name__ == "__main__":
    main()
