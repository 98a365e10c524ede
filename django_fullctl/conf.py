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
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

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
