"""One log line per event on stdout, as text or JSON (``--log-format json``).

Events carry task ids, ops and worker ids, never task parameters.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("django_fullctl.poller")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        extra = " ".join(f"{key}={value}" for key, value in fields.items())
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return f"{stamp[:-4]}Z {record.levelname:<7} {record.getMessage()} {extra}".rstrip()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        return json.dumps(body, default=str)


def configure(fmt: str = "text", level: int = logging.INFO) -> None:
    """Send poller and queue logs to stdout, one line per record."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for name in ("django_fullctl.poller", "django_fullctl.queue", "django_fullctl.notify"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def event(message: str, level: int = logging.INFO, **fields: Any) -> None:
    log.log(level, message, extra={"fields": fields})
