"""The backend's retry option as fullctl's ``Retry``; imports no model, so the backend can
read its ``OPTIONS`` (and ``check()`` can report) even where the app is not installed."""

from typing import Any

from django.utils.module_loading import import_string

from django_fullctl.retry import Retry


def retry_policy(value: Any, max_attempts: int) -> Retry | None:
    """``OPTIONS["retry"]`` (or a ``@task(retry=...)``) as our ``Retry``: a ``Retry``, or
    a dict of its fields with ``on`` as exception classes or their dotted paths."""
    if value is None or value is False:
        return None
    if isinstance(value, Retry):
        return value
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise TypeError(f"retry must be a Retry(...), a dict of its fields or None, not {value!r}")
    fields = dict(value)
    on = fields.get("on", (Exception,))
    on = on if isinstance(on, list | tuple) else [on]
    fields["on"] = tuple(import_string(c) if isinstance(c, str) else c for c in on)
    fields.setdefault("max_attempts", max(int(max_attempts), 1))
    return Retry(**fields)
