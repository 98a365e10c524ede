"""A backend for Django's own Tasks API (``django.tasks`` on Django 6, the ``django-tasks``
backport on 5.2) on fullctl's task table and queue::

    TASKS = {"default": {"BACKEND": "django_fullctl.tasks_backend.FullctlBackend",
                         "QUEUES": ["default", "emails"],
                         "OPTIONS": {"max_attempts": 3, "timeout": 600}}}

Each configured queue is one op, ``django.tasks:<queue>``, served by one proxy task class
(``calls.DjangoTaskCall``), which the models package imports so that every process that
loads the app (pollers included) knows those ops. The backend itself (``backend``) and the
framework (``compat``) are imported only when ``FullctlBackend`` is asked for, so loading
the app never imports the Tasks framework.
"""

from typing import Any

__all__ = ["FullctlBackend", "FullctlTask", "FullctlTaskResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from django_fullctl.tasks_backend import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
