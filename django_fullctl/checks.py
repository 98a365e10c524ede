"""System checks: ``manage.py check`` (and every command that runs checks) reports a bad
fullctl setting by its name, reading the same parser as ``conf.settings()``.

Each setting has its own id, ``fullctl.E001`` onwards, in the order of
``conf.FullctlSettings``; ``fullctl.E100`` is the pool settings' environment variable.
"""

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from django_fullctl import conf

SETTING_IDS = {name: f"fullctl.E{i:03d}" for i, name in enumerate(conf.SETTING_NAMES, start=1)}


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = [
        checks.Error(message, hint=f"fix {name} in your settings or environment",
                     id=SETTING_IDS[name])
        for name, message in conf.problems()
    ]
    try:
        conf.pool_settings()
    except ImproperlyConfigured as exc:
        errors.append(checks.Error(str(exc), id="fullctl.E100"))
    return errors


def register() -> None:
    checks.register(check_settings, "fullctl")
