"""The registry of task classes, keyed by op (the class's HandleRef tag)."""

from collections import ChainMap
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.conf import settings as django_settings

from django_fullctl.exceptions import TaskNotRegistered, TaskRegistrationError

if TYPE_CHECKING:
    from django_fullctl.models import Task

_registry: dict[str, type["Task"]] = {}


def register(cls: type["Task"]) -> type["Task"]:
    """Class decorator that makes a proxy model of ``Task`` a task class.

    Refuses what would break later at run time: a non-proxy class, a class without
    its own HandleRef tag, or a tag that another class already uses.
    """
    from django_fullctl.models import Task

    if not (isinstance(cls, type) and issubclass(cls, Task)) or cls is Task:
        raise TaskRegistrationError(f"{cls!r} is not a subclass of fullctl's Task model")
    if not cls._meta.proxy:
        raise TaskRegistrationError(f"{cls.__qualname__} must declare Meta.proxy = True")
    if "HandleRef" not in cls.__dict__ or not getattr(cls.__dict__["HandleRef"], "tag", None):
        raise TaskRegistrationError(f"{cls.__qualname__} must declare its own HandleRef.tag")
    op = cls.HandleRef.tag
    existing = _registry.get(op)
    if existing is not None and _qualname(existing) != _qualname(cls):
        raise TaskRegistrationError(
            f"op {op!r} of {_qualname(cls)} is already registered by {_qualname(existing)}"
        )
    _registry[op] = cls
    return cls


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def get_task_class(op: str) -> type["Task"]:
    try:
        return _registry[op]
    except KeyError:
        raise TaskNotRegistered(f"no task class is registered for op {op!r}") from None


def qualified_ops(overrides: Mapping[str, Any] | None = None) -> list[str]:
    """Ops whose qualifiers all pass in these settings.

    ``overrides`` are settings layered over this process's Django settings (how the
    operator sees a pool's pods); without them the live settings are used.
    """
    settings = None
    if overrides is not None:
        settings = ChainMap(dict(overrides), _SettingsMapping())
    return sorted(
        op
        for op, cls in _registry.items()
        if all(q.check(settings) for q in cls.task_options().qualifiers)
    )


class _SettingsMapping(Mapping):
    """Django's settings seen as a read-only mapping (for ChainMap)."""

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(django_settings, name)
        except AttributeError:
            raise KeyError(name) from None

    def __iter__(self):
        return iter(dir(django_settings._wrapped))

    def __len__(self) -> int:
        return len(dir(django_settings._wrapped))
