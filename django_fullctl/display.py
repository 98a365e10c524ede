"""How values read in the admin pages: durations, timestamps, ages, parameter previews.

Shared by the task admin, the queue overview and the schedules page, apart from all three.
"""

import json
from datetime import datetime
from typing import Any

from django.utils import timezone

# the change list shows this many characters of a task's parameters (all of them on its page)
PARAM_PREVIEW_CHARS = 60


def format_duration(seconds: float) -> str:
    """A duration as people read it: ``15 µs``, ``12 ms``, ``3.4 s``, ``2 min 5 s``."""
    if seconds < 0.0009995:
        return f"{seconds * 1_000_000:.0f} µs"
    if seconds < 0.9995:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    return _whole_seconds(round(seconds))


def _whole_seconds(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def format_timestamp(value: datetime) -> str:
    """A timestamp to the second, in the current time zone: ``2026-12-02 10:00:03``."""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


def format_age(value: datetime, now: datetime | None = None) -> str:
    """How long ago a timestamp was: ``3 s ago``, ``2 min 5 s ago``."""
    age = ((now or timezone.now()) - value).total_seconds()
    return f"{_whole_seconds(max(0, int(age)))} ago"


def format_param_preview(value: Any) -> str:
    """A task's parameters on one short line, cut with an ellipsis."""
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > PARAM_PREVIEW_CHARS:
        return text[: PARAM_PREVIEW_CHARS - 1] + "…"
    return text
