"""``qualifiers.Setting`` / ``qualifiers.Settings`` as documented."""

from django_fullctl.qualifiers import Qualifier, Setting, Settings, SettingUnset

__all__ = ["Qualifier", "Setting", "SettingUnset", "Settings"]
