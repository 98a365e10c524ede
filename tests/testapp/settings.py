"""The example project's settings plus the test app: what pytest, and every poller or
operator process the tests start, run with (``DJANGO_SETTINGS_MODULE=tests.testapp.settings``
and the repository root on ``PYTHONPATH``)."""

from example_project.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]  # noqa: F405
