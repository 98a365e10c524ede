"""fullctl's settings, read once into one typed object.

Every knob has a code default, so a project only sets what it wants to change. Some may
be overridden from the environment (``env=True`` below), which is how a pod tunes a
poller without a new settings module. ``settings()`` parses them all once per process
(again after ``override_settings`` or ``reload()``); the system checks in ``checks.py``
report the same ``problems()`` with the setting's name, so a bad value is an error at
start rather than a ``ValueError`` deep inside a thread.
"""

import json
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

# the environment variable a pool's pods get their own settings from (the Helm chart
# renders one JSON object per pool): layered over the project's settings at app start
POOL_SETTINGS_ENV = "FULLCTL_POOL_SETTINGS"


def _number(value: Any, *, positive: bool, integer: bool = False) -> float | int:
    """A number from a setting (or an environment string); raises ValueError saying why."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if integer and value.is_integer():
            value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    if integer and not isinstance(value, int):
        raise ValueError(f"{value!r} is not a whole number")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not a finite number")
    if positive and value <= 0:
        raise ValueError(f"{value!r} must be greater than 0")
    if not positive and value < 0:
        raise ValueError(f"{value!r} must not be negative")
    return value


def positive(value: Any) -> float:
    return float(_number(value, positive=True))


def non_negative(value: Any) -> float:
    return float(_number(value, positive=False))


def positive_int(value: Any) -> int:
    return int(_number(value, positive=True, integer=True))


def non_negative_int(value: Any) -> int:
    return int(_number(value, positive=False, integer=True))


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"{value!r} is not True or False")


def optional_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise ValueError(f"{value!r} is not a string")


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: Any) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h`` or ``7d`` (or a number of seconds);
    raises ValueError saying why."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return non_negative(text)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip()) if isinstance(
        text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 12h, 7d")
    return float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]


SCHEDULE_KEYS = frozenset({"task", "cron", "args", "kwargs"})


def task_schedules(value: Any) -> dict[str, dict[str, Any]]:
    """``TASK_SCHEDULES``: ``{name: {"task": op, "cron": "...", "args": [...], "kwargs":
    {...}}}``. Only the shape is checked here; the cron expression, the op and whether the
    arguments are JSON are system checks (``checks.check_schedules``)."""
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not a dict of schedules")
    parsed = {}
    for name, entry in value.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"schedule name {name!r} is not a non-empty string")
        if not isinstance(entry, dict):
            raise ValueError(f"schedule {name!r} is not a dict with \"task\" and \"cron\"")
        unknown = sorted(set(entry) - SCHEDULE_KEYS, key=str)
        if unknown:
            raise ValueError(f"schedule {name!r} has unknown key(s) {unknown}"
                             f" (allowed: {sorted(SCHEDULE_KEYS)})")
        for key in ("task", "cron"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ValueError(f"schedule {name!r} needs {key!r}, a non-empty string")
        args, kwargs = entry.get("args", []), entry.get("kwargs", {})
        if not isinstance(args, list | tuple):
            raise ValueError(f"schedule {name!r}: args must be a list, not {args!r}")
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise ValueError(f"schedule {name!r}: kwargs must be a dict with string keys")
        parsed[name] = {"task": entry["task"], "cron": entry["cron"], "args": list(args),
                        "kwargs": dict(kwargs)}
    return parsed


RETENTION_STATUSES = ("completed", "failed", "cancelled")


def retention(value: Any) -> dict[str, float]:
    """``TASK_RETENTION``: ``{"completed": "7d", "failed": "30d", "cancelled": "7d"}`` as
    seconds per final status; a status that is not named is kept for ever. From the
    environment (the Helm chart sets it so), a JSON object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{value!r} is not a JSON object of status: duration") from None
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not a dict of status: duration")
    parsed = {}
    for status, age in value.items():
        if status not in RETENTION_STATUSES:
            raise ValueError(f"{status!r} is not one of {', '.join(RETENTION_STATUSES)}")
        seconds = duration(age)
        if seconds <= 0:
            raise ValueError(f"the retention of {status} tasks must be longer than 0")
        parsed[status] = seconds
    return parsed


WorkerStart = Literal["forkserver", "spawn"]  # the multiprocessing start methods allowed
WORKER_START_METHODS: tuple[WorkerStart, ...] = get_args(WorkerStart)


def worker_start(value: Any) -> WorkerStart:
    """``TASK_WORKER_START``: how the poller starts its worker processes."""
    for method in WORKER_START_METHODS:
        if value == method:
            return method
    raise ValueError(f"{value!r} is not one of {', '.join(map(repr, WORKER_START_METHODS))}")


def database_pooler(value: Any) -> str | None:
    """``TASK_DATABASE_POOLER``: what sits between the app and PostgreSQL. None (also
    ``"none"`` or ``"session"``): nothing, or a pooler in session mode, which is the same
    to us; ``"transaction"``: a transaction-mode pooler such as PgBouncer's ``pool_mode =
    transaction``, which hands each transaction to any server connection, so nothing may
    rely on the session (no LISTEN, no prepared statements unless the pooler keeps them)."""
    text = value.strip().lower() if isinstance(value, str) else value
    if text in (None, "", "none", "session"):
        return None
    if text == "transaction":
        return "transaction"
    raise ValueError(f"{value!r} is not None, \"session\" or \"transaction\"")


def conninfo(value: Any) -> str | None:
    """``TASK_LISTEN_DATABASE_URL``: a libpq connection string (``host=pg port=5432``) or
    URL (``postgresql://pg:5432/app``). It is checked without quoting it back: it may
    hold a password."""
    text = optional_text(value)
    if text is None:
        return None
    import psycopg  # the PostgreSQL driver, only needed when this is set

    try:
        psycopg.conninfo.conninfo_to_dict(text)
    except psycopg.ProgrammingError:
        raise ValueError(
            "is not a libpq connection string (\"host=... port=...\") or a"
            " postgresql:// URL (the value is not shown: it may hold a password)"
        ) from None
    return text


def _setting(name: str, default: Any, parse: Callable[[Any], Any], env: bool = False) -> Any:
    return field(metadata={"name": name, "default": default, "parse": parse, "env": env})


@dataclass(frozen=True)
class FullctlSettings:
    """The parsed settings; each field names the Django setting it comes from."""

    # who is creating or processing tasks; None means "{hostname}:{pid}"
    worker_id: str | None = _setting("TASK_ORM_WORKER_ID", None, optional_text)
    # seconds between two heartbeats of a running task
    track_interval: float = _setting("TASK_TRACK_INTERVAL_SECONDS", 5, positive, env=True)
    # seconds without a heartbeat before a running task counts as orphaned
    orphaned_heartbeat_timeout: float = _setting(
        "TASK_ORPHANED_HEARTBEAT_TIMEOUT", 30, positive, env=True
    )
    # heartbeat age that the /health view reports as stale
    health_check_interval: float = _setting("HEALTH_CHECK_TASK_INTERVAL_SECONDS", 20, positive)
    # pending tasks that make the /health backlog check fail (0 disables it)
    backlog_max_pending: int = _setting("TASK_BACKLOG_MAX_PENDING", 10000, non_negative_int)
    # age in seconds of the oldest runnable pending task that fails the backlog check (0: off)
    backlog_max_age: float = _setting("TASK_BACKLOG_MAX_AGE_SECONDS", 0, non_negative)
    # how many times a task may be started before a crash fails it for good
    default_max_attempts: int = _setting("TASK_DEFAULT_MAX_ATTEMPTS", 2, positive_int)
    # backstop poll interval of wait() and of the poller, in seconds
    wait_poll_interval: float = _setting("TASK_WAIT_POLL_INTERVAL_SECONDS", 1.0, positive)
    poll_interval: float = _setting("TASK_POLL_INTERVAL_SECONDS", 5.0, positive)
    # seconds between the soft timeout signal and the hard kill of a worker
    timeout_kill_grace: float = _setting(
        "TASK_TIMEOUT_KILL_GRACE_SECONDS", 5.0, non_negative, env=True
    )
    # the operator's tick, in seconds
    operator_interval: float = _setting("TASK_OPERATOR_INTERVAL_SECONDS", 10.0, positive)
    # log the first line of a failed task's exception message (False: its class only;
    # messages are user text and may quote task parameters)
    log_error_messages: bool = _setting("TASK_LOG_ERROR_MESSAGES", True, boolean)
    # the operator's /metrics port (0: not served)
    operator_metrics_port: int = _setting(
        "TASK_OPERATOR_METRICS_PORT", 9090, non_negative_int, env=True
    )
    # django_fullctl.urls serves the queue gauges at /metrics (for a deployment without
    # the operator, which serves them otherwise)
    metrics_view: bool = _setting("TASK_METRICS_VIEW", False, boolean)
    # executions after which the poller's own connections prepare a statement on the
    # server (psycopg's prepare_threshold); 0 turns it off, for a transaction-mode pooler
    # that cannot keep prepared statements (PgBouncer 1.21+ with max_prepared_statements can).
    # Read it through prepare_threshold(): unset, it is 0 when TASK_DATABASE_POOLER is
    # "transaction"
    prepare_threshold: int = _setting("TASK_PREPARE_THRESHOLD", 2, non_negative_int, env=True)
    # periodic tasks with arguments: {name: {"task": op, "cron": "*/5 * * * *", "args": [],
    # "kwargs": {}}} (task classes with TaskMeta.schedule need no entry)
    task_schedules: dict = _setting("TASK_SCHEDULES", {}, task_schedules)
    # how long finished tasks are kept, per status: {"completed": "7d", ...} ({}: for ever)
    task_retention: dict = _setting("TASK_RETENTION", {}, retention, env=True)
    # how the poller starts workers: "forkserver" forks them from one process that set
    # Django up once (they share its memory), "spawn" gives each a fresh interpreter
    worker_start: WorkerStart = _setting("TASK_WORKER_START", "forkserver", worker_start, env=True)
    # what sits between the app and PostgreSQL: None (nothing, or a session-mode pooler)
    # or "transaction" (PgBouncer's pool_mode = transaction and the like): then nothing
    # relies on the session, LISTEN goes only to TASK_LISTEN_DATABASE_URL (else pollers
    # and wait() poll), and TASK_PREPARE_THRESHOLD defaults to 0 (see prepare_threshold())
    database_pooler: str | None = _setting("TASK_DATABASE_POOLER", None, database_pooler,
                                           env=True)
    # a direct connection to PostgreSQL (not through a transaction-mode pooler) used only
    # to LISTEN: a libpq string or URL whose parameters replace those of the default
    # database (so "host=pg-direct port=5432" keeps its name, user and password)
    listen_database_url: str | None = _setting("TASK_LISTEN_DATABASE_URL", None, conninfo,
                                               env=True)


SETTING_NAMES = {f.metadata["name"]: f.name for f in fields(FullctlSettings)}
DEFAULTS = {f.metadata["name"]: f.metadata["default"] for f in fields(FullctlSettings)}
ENV_OVERRIDES = frozenset(f.metadata["name"] for f in fields(FullctlSettings) if f.metadata["env"])


def _raw(name: str) -> tuple[Any, str]:
    """The value in force for setting ``name`` and where it came from."""
    if name in ENV_OVERRIDES and os.environ.get(name):
        return os.environ[name], f"environment variable {name}"
    if hasattr(django_settings, name):
        return getattr(django_settings, name), f"setting {name}"
    return DEFAULTS[name], f"default of {name}"


def _parse() -> tuple[dict[str, Any], list[tuple[str, str]]]:
    values, problems = {}, []
    for each in fields(FullctlSettings):
        name = each.metadata["name"]
        raw, origin = _raw(name)
        try:
            values[each.name] = each.metadata["parse"](raw)
        except ValueError as exc:
            problems.append((name, f"{origin}: {exc}"))
    return values, problems


def problems() -> list[tuple[str, str]]:
    """Every setting whose value does not parse, as (setting name, message)."""
    return _parse()[1]


_cached: FullctlSettings | None = None


def settings() -> FullctlSettings:
    """The settings in force, parsed once; ImproperlyConfigured names every bad value."""
    global _cached
    if _cached is None:
        values, bad = _parse()
        if bad:
            raise ImproperlyConfigured("; ".join(message for _, message in bad))
        _cached = FullctlSettings(**values)
    return _cached


def prepare_threshold() -> int:
    """The prepare threshold in force for the poller's connections: ``TASK_PREPARE_
    THRESHOLD`` when it is set (setting, environment or pool settings); unset, 0 behind a
    transaction-mode pooler (``TASK_DATABASE_POOLER = "transaction"``: PgBouncer before
    1.21 loses prepared statements between transactions) and 2 otherwise."""
    current = settings()
    explicit = not _raw("TASK_PREPARE_THRESHOLD")[1].startswith("default")
    if current.database_pooler == "transaction" and not explicit:
        return 0
    return current.prepare_threshold


def reload(**_: Any) -> None:
    """Forget the parsed settings (Django's ``setting_changed`` calls this in tests)."""
    global _cached
    _cached = None


setting_changed.connect(reload, dispatch_uid="django_fullctl.conf.reload")


def worker_id(pid: int | None = None) -> str:
    """Identify a process in ``source`` and ``queue_id``; the hostname is the pod name.

    With ``pid`` (the poller's worker processes) the id always ends in ``:{pid}``, even
    when ``TASK_ORM_WORKER_ID`` is set, so sibling workers never share an identity.
    """
    configured = settings().worker_id
    if configured and pid is None:
        return configured
    return f"{configured or socket.gethostname()}:{pid or os.getpid()}"


def pool_settings() -> dict[str, Any]:
    """The pool's own settings from ``FULLCTL_POOL_SETTINGS`` (a JSON object), or {}."""
    text = os.environ.get(POOL_SETTINGS_ENV) or "{}"
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfigured(f"{POOL_SETTINGS_ENV} is not valid JSON: {exc}") from None
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise ImproperlyConfigured(f"{POOL_SETTINGS_ENV} must be a JSON object of settings")
    return values


def apply_pool_settings() -> None:
    """Layer the pool's settings over the project's (called when the app is ready), so the
    qualifiers a poller evaluates see what the pool was given, in any project."""
    for name, value in pool_settings().items():
        setattr(django_settings, name, value)
    if os.environ.get(POOL_SETTINGS_ENV):
        reload()
