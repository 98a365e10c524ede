"""The registry of task classes, keyed by op (the class's HandleRef tag).

It imports no model: a task class is recognised by the marker ``is_fullctl_task`` that
``Task`` carries, so the models can import the registry and never the other way round.
"""

from collections.abc import Iterator, Mapping
from typing import Any

from django.conf import settings as django_settings

from django_fullctl.exceptions import TaskNotRegistered, TaskRegistrationError
from django_fullctl.taskmeta import TaskOptions, read_task_meta

_registry: dict[str, type] = {}
_options: dict[type, TaskOptions] = {}


def register(cls: type) -> type:
    """Class decorator that makes a proxy model of ``Task`` a task class.

    Refuses what would break later at run time: a non-proxy class, a class without its
    own HandleRef tag, a tag that another class already uses, a bad ``TaskMeta`` value.
    """
    if not isinstance(cls, type) or not getattr(cls, "is_fullctl_task", False):
        raise TaskRegistrationError(f"{cls!r} is not a subclass of fullctl's Task model")
    if not cls._meta.proxy:  # type: ignore[attr-defined]
        raise TaskRegistrationError(f"{cls.__qualname__} must declare Meta.proxy = True")
    if "HandleRef" not in cls.__dict__ or not getattr(cls.__dict__["HandleRef"], "tag", None):
        raise TaskRegistrationError(f"{cls.__qualname__} must declare its own HandleRef.tag")
    op = cls.HandleRef.tag  # type: ignore[attr-defined]
    existing = _registry.get(op)
    if existing is not None and _qualname(existing) != _qualname(cls):
        raise TaskRegistrationError(
            f"op {op!r} of {_qualname(cls)} is already registered by {_qualname(existing)}"
        )
    _options[cls] = read_task_meta(cls)
    _registry[op] = cls
    return cls


def register_op(op: str, cls: type) -> type:
    """Register ``cls`` under one more op besides (or instead of) its HandleRef tag: one
    task class serving several ops (the Django Tasks backend's ``django.tasks:<queue>``).
    The class must be a proxy task class, as for ``register``; an op that another class
    already uses is refused."""
    if not isinstance(cls, type) or not getattr(cls, "is_fullctl_task", False):
        raise TaskRegistrationError(f"{cls!r} is not a subclass of fullctl's Task model")
    if not cls._meta.proxy:  # type: ignore[attr-defined]
        raise TaskRegistrationError(f"{cls.__qualname__} must declare Meta.proxy = True")
    if not isinstance(op, str) or not op:
        raise TaskRegistrationError(f"the op of {cls.__qualname__} must be a non-empty string")
    existing = _registry.get(op)
    if existing is not None and _qualname(existing) != _qualname(cls):
        raise TaskRegistrationError(
            f"op {op!r} of {_qualname(cls)} is already registered by {_qualname(existing)}"
        )
    _options.setdefault(cls, read_task_meta(cls))
    _registry[op] = cls
    return cls


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def get_task_class(op: str) -> type:
    try:
        return _registry[op]
    except KeyError:
        raise TaskNotRegistered(f"no task class is registered for op {op!r}") from None


def options_of(cls: type) -> TaskOptions:
    """The checked ``TaskMeta`` of a registered class (read afresh for any other)."""
    found = _options.get(cls)
    return found if found is not None else read_task_meta(cls)


def registered() -> Iterator[tuple[str, type]]:
    """Every (op, task class), in op order."""
    return iter(sorted(_registry.items()))


def failed_qualifiers(cls: type, overrides: Mapping[str, Any] | None = None) -> list[Any]:
    """The qualifiers of ``cls`` that these settings do not meet (empty: it qualifies)."""
    settings = None if overrides is None else _LayeredSettings(overrides)
    return [q for q in options_of(cls).qualifiers if not q.check(settings)]


def qualified_ops(overrides: Mapping[str, Any] | None = None) -> list[str]:
    """Ops whose qualifiers all pass in these settings.

    ``overrides`` are settings layered over this process's Django settings (how the
    operator sees a pool's pods); without them the live settings are used.
    """
    return [op for op, cls in registered() if not failed_qualifiers(cls, overrides)]


class _LayeredSettings(Mapping[str, Any]):
    """``overrides`` over Django's settings, as one read-only mapping."""

    def __init__(self, overrides: Mapping[str, Any]):
        self.overrides = dict(overrides)

    def __getitem__(self, name: str) -> Any:
        if name in self.overrides:
            return self.overrides[name]
        try:
            return getattr(django_settings, name)
        except AttributeError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.overrides.keys() | set(dir(django_settings._wrapped)))

    def __len__(self) -> int:
        return len(self.overrides.keys() | set(dir(django_settings._wrapped)))
