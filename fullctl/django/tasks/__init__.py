"""``from fullctl.django.tasks import register, qualifiers`` as documented."""

from django_fullctl.exceptions import TaskLimitError, TaskTimedOut
from django_fullctl.registry import register
from django_fullctl.retry import Retry, RetryLater
from fullctl.django.tasks import qualifiers

__all__ = ["Retry", "RetryLater", "TaskLimitError", "TaskTimedOut", "qualifiers", "register"]
