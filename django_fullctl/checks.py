"""System checks: ``manage.py check`` (and every command that runs checks) reports a bad
fullctl setting by its name, reading the same parser as ``conf.settings()``.

Each setting has its own id, ``fullctl.E001`` onwards, in the order of
``conf.FullctlSettings``; ``fullctl.E100`` is the pool settings' environment variable.
The schedules (``TASK_SCHEDULES``, ``TaskMeta.schedule``) are ``fullctl.E101`` (a cron
expression cronsim does not read), ``fullctl.E102`` (no task class for the op) and
``fullctl.E103`` (arguments that cannot be stored as JSON). Behind a transaction-mode
pooler (``TASK_DATABASE_POOLER = "transaction"``) the default database's settings that
keep state in the session are warnings: ``fullctl.W001`` (server-side cursors, which
Django declares ``WITH HOLD`` outside a transaction) and ``fullctl.W002``
(``OPTIONS["assume_role"]``, a ``SET ROLE`` on whichever server connection was current).
"""

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from django_fullctl import conf, schedules
from django_fullctl.jsonvalue import json_problem

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


def check_schedules(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every schedule's cron expression, task and arguments (the shape of
    ``TASK_SCHEDULES`` is ``check_settings``'s)."""
    if conf.problems():
        return []  # reported by check_settings; nothing to read the schedules from
    classes = schedules.task_classes()
    known = {cls.HandleRef.tag for cls in classes}  # type: ignore[attr-defined]
    errors: list[checks.CheckMessage] = []
    for schedule in schedules.all_schedules(classes):
        where = (f"TaskMeta.schedule of {schedule.op}" if schedule.source == "TaskMeta"
                 else f"TASK_SCHEDULES[{schedule.name!r}]")
        problem = schedules.cron_problem(schedule.cron)
        if problem:
            errors.append(checks.Error(f"{where}: {problem}", id="fullctl.E101",
                                       hint="five fields (minute first), or six with seconds"
                                            " first, e.g. \"0 3 * * *\""))
        if schedule.op not in known:
            errors.append(checks.Error(
                f"{where}: no task class is registered for op {schedule.op!r}",
                id="fullctl.E102", hint="\"task\" is the task class's HandleRef tag"))
        problem = json_problem(schedule.args) or json_problem(schedule.kwargs)
        if problem:
            errors.append(checks.Error(
                f"{where}: args/kwargs cannot be stored as JSON ({problem})", id="fullctl.E103"))
    return errors


def check_pooler(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Session state of the default database that a transaction-mode pooler loses."""
    if conf.problems() or conf.settings().database_pooler != "transaction":
        return []
    if connection.vendor != "postgresql":
        return []
    database = connection.settings_dict
    warnings: list[checks.CheckMessage] = []
    if not database.get("DISABLE_SERVER_SIDE_CURSORS"):
        warnings.append(checks.Warning(
            "TASK_DATABASE_POOLER is \"transaction\" but the default database has"
            " server-side cursors on: QuerySet.iterator() outside a transaction declares"
            " a cursor WITH HOLD on one server connection and may fetch from another",
            hint="set DATABASES[\"default\"][\"DISABLE_SERVER_SIDE_CURSORS\"] = True",
            id="fullctl.W001"))
    if database.get("OPTIONS", {}).get("assume_role"):
        warnings.append(checks.Warning(
            "TASK_DATABASE_POOLER is \"transaction\" but the default database has"
            " OPTIONS[\"assume_role\"]: its SET ROLE holds for one server connection"
            " of the pooler, not for the transactions that follow",
            hint="connect as the role itself (USER) instead", id="fullctl.W002"))
    return warnings


def register() -> None:
    checks.register(check_settings, "fullctl")
    checks.register(check_schedules, "fullctl")
    checks.register(check_pooler, "fullctl")
