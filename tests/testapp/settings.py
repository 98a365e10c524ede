"""The example project's settings plus the test app: what pytest, and every poller or
operator process the tests start, run with (``DJANGO_SETTINGS_MODULE=tests.testapp.settings``
and the repository root on ``PYTHONPATH``)."""

from example_project.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]  # noqa: F405

# Django's Tasks API on fullctl (tests/tasks_backend): Django 6 has the framework built in,
# Django 5.2 has it from the django-tasks backport, an app of its own
try:
    import django.tasks  # noqa: F401
except ImportError:
    INSTALLED_APPS = [*INSTALLED_APPS, "django_tasks"]
TASKS = {
    "default": {
        "BACKEND": "django_fullctl.tasks_backend.FullctlBackend",
        "QUEUES": ["default", "emails", "ordered"],
        "OPTIONS": {"max_attempts": 3, "timeout": 600},
    },
}
