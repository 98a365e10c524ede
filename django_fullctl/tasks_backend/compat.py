"""The one place that imports Django's Tasks framework: ``django.tasks`` on Django >= 6,
the ``django-tasks`` backport (import name ``django_tasks``) on Django 5.2.

On Django 6 the backport is never imported, even when it is installed. On 5.2 this bridges
what the backport names differently: ``InvalidTaskError`` (Django 6: ``InvalidTask``), the
home of ``normalize_json`` (``django_tasks.utils``; Django 6: ``django.utils.json``), the
logger name (``django_tasks``; Django 6: ``django.tasks``) and the signal objects (the
backport's own, which are not Django 6's).
"""

import django
from django.core.exceptions import ImproperlyConfigured

if django.VERSION >= (6, 0):
    from django.tasks import (
        DEFAULT_TASK_QUEUE_NAME,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        task_backends,
    )
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, Task, TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    FRAMEWORK_APP = None  # part of Django: nothing to add to INSTALLED_APPS
    LOGGER_NAME = "django.tasks"
else:
    try:
        from django_tasks import (
            DEFAULT_TASK_QUEUE_NAME,
            TaskContext,
            TaskResult,
            TaskResultStatus,
            task_backends,
        )

        # the backport registers its system check (every backend's check()) from its app's
        # ready(): importing it here also reports a missing 'django_tasks' app (fullctl.E202)
        from django_tasks import checks as _checks  # noqa: F401
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, Task, TaskError
        from django_tasks.exceptions import InvalidTaskError as InvalidTask
        from django_tasks.exceptions import TaskResultDoesNotExist
        from django_tasks.signals import task_enqueued, task_finished, task_started
        from django_tasks.utils import normalize_json
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImproperlyConfigured(
            f"Django {django.get_version()} has no Tasks framework of its own: the fullctl"
            " Tasks backend needs the django-tasks backport there"
            " (pip install 'fullctl-tasks[django-tasks]') and 'django_tasks' in"
            f" INSTALLED_APPS ({exc})"
        ) from exc

    FRAMEWORK_APP = "django_tasks"
    LOGGER_NAME = "django_tasks"

__all__ = [
    "DEFAULT_TASK_QUEUE_NAME",
    "FRAMEWORK_APP",
    "LOGGER_NAME",
    "TASK_MAX_PRIORITY",
    "TASK_MIN_PRIORITY",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
