"""``from fullctl.django.tasks import register, qualifiers`` as documented."""

from django_fullctl.exceptions import TaskLimitError
from django_fullctl.registry import register
from fullctl.django.tasks import qualifiers

__all__ = ["TaskLimitError", "qualifiers", "register"]
