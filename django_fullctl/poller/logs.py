"""The poller's log lines: one per event, text or JSON (``--log-format json``).

Every line has a stable event name (``task.completed``, ``worker.died`` ...) and the
variable parts as fields (``task``, ``op``, ``worker``, ``duration_ms``, ``error_class``),
so a log pipeline can group by event; the text format prints the readable message and
the fields, the JSON format one object with ``event``, ``message`` and the fields.

Logging belongs to the host project: when its configuration sends ``django_fullctl``
records to a handler (its own, or the root logger's), they are left alone and only the level follows
``--verbosity``. When it has configured none, one handler on stdout is added with the
chosen format. The formatters can also be named in a project's own ``LOGGING``.
Events carry ids, ops and outcomes as fields, never task parameters.
"""

import logging
import sys
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

log = logging.getLogger("django_fullctl.poller")

# --verbosity 0..3, as Django's commands count it
LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}

_STANDARD = frozenset(RESERVED_ATTRS) | {"message", "asctime", "taskName"}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The event's own fields: what ``event()`` passed beside the name and message."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k != "event"}


class TextFormatter(logging.Formatter):
    """``2026-12-02T10:00:00.12Z INFO    message key=value ...``"""

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{key}={value}" for key, value in fields_of(record).items())
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        return f"{stamp[:-4]}Z {record.levelname:<7} {record.getMessage()} {extra}".rstrip()


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: ``time``, ``level``, ``event`` and the event's fields."""

    def __init__(self, fmt: str | None = None, **kwargs: Any):
        kwargs.setdefault("rename_fields", {"levelname": "level"})
        kwargs.setdefault("timestamp", "time")
        kwargs.setdefault("reserved_attrs", sorted(_STANDARD))
        kwargs.setdefault("json_default", str)
        super().__init__(fmt or "%(levelname)s %(message)s", **kwargs)

    def process_log_record(self, log_record: dict[str, Any]) -> dict[str, Any]:
        log_record["level"] = str(log_record.get("level", "")).lower()
        return log_record


def _project_configured(logger: logging.Logger) -> bool:
    """Would a record of ``logger`` reach a handler the project set up?"""
    node: logging.Logger | None = logger
    while node is not None:
        if node.handlers:
            return True
        node = node.parent if node.propagate else None
    return False


def configure(fmt: str = "text", verbosity: int = 1) -> None:
    """Set the level of fullctl's loggers, and add a stdout handler if none is set up."""
    logger = logging.getLogger("django_fullctl")
    logger.setLevel(LEVELS.get(verbosity, logging.DEBUG))
    if _project_configured(logger):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.propagate = False


def event(name: str, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log event ``name`` (stable, dotted) with a readable ``message`` and its fields."""
    log.log(level, message, extra={"event": name, **fields})
