"""Qualifiers: conditions a poller's settings must meet before it may claim a task.

A qualifier is evaluated against a mapping of settings. Pollers use their live Django
settings; the operator uses a pool's declared settings layered over its own, so it counts
only the tasks the pool's pods would claim.
"""

from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings as django_settings


class SettingUnset:
    """Stands for a setting that is not defined.

    A callable qualifier receives this class when the setting is missing, and
    ``Setting("NAME", SettingUnset)`` requires the setting to be absent.
    """


class Qualifier:
    """Base class: ``check`` answers whether the given settings may run the task."""

    def check(self, settings: Mapping[str, Any] | None = None) -> bool:
        raise NotImplementedError


def read_setting(name: str, settings: Mapping[str, Any] | None) -> Any:
    """Read ``name`` from a mapping, or from Django's settings when no mapping is given."""
    if settings is None:
        return getattr(django_settings, name, SettingUnset)
    return settings.get(name, SettingUnset)


class Setting(Qualifier):
    """Require a setting to equal ``value``, or to satisfy ``value`` when it is callable."""

    def __init__(self, name: str, value: Any | Callable[[Any], bool]):
        self.name = name
        self.value = value

    def check(self, settings: Mapping[str, Any] | None = None) -> bool:
        actual = read_setting(self.name, settings)
        if self.value is SettingUnset:
            return actual is SettingUnset
        if callable(self.value):
            try:
                return bool(self.value(actual))
            except Exception:
                # a predicate that cannot judge the value (e.g. 'in' on a missing
                # setting) does not qualify the poller
                return False
        return actual is not SettingUnset and actual == self.value

    def __repr__(self) -> str:
        return f"Setting({self.name!r}, {self.value!r})"


# the documentation spells it both ways
Settings = Setting
