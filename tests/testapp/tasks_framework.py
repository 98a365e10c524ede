"""The tests' one switch between Django's Tasks framework (Django 6: ``django.tasks``) and
its backport (Django 5.2: ``django_tasks``): the public names the tests use, nothing else."""

try:
    from django.tasks import TaskResultStatus, default_task_backend, signals, task
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
except ImportError:
    from django_tasks import TaskResultStatus, default_task_backend, signals, task
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist

__all__ = [
    "InvalidTask",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "default_task_backend",
    "signals",
    "task",
]
