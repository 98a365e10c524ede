"""Mistakes get a clear error at the moment they are made: a bad ``TaskMeta`` value when
the class is registered, a bad setting in ``manage.py check``, a result that
``result_type`` rejects when the task runs (not at every later read)."""

import json
import subprocess
import sys

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import ProgrammingError
from django.test import override_settings
from helpers import EXAMPLE_DIR, process_env, test_database_url

from django_fullctl import conf, runner
from django_fullctl.db import describe_error
from fullctl.django.models import Task, TaskRegistrationError
from fullctl.django.tasks import qualifiers, register

pytestmark = [pytest.mark.portable, pytest.mark.django_db(transaction=True)]


def task_class(name: str, **meta):
    """A proxy task class with these ``TaskMeta`` values (not registered yet)."""
    attrs = {
        "__module__": __name__,
        "Meta": type("Meta", (), {"proxy": True, "app_label": "example_tasks"}),
        "HandleRef": type("HandleRef", (), {"tag": f"task_test_{name.lower()}"}),
        "TaskMeta": type("TaskMeta", (), meta),
        "run": lambda self, *args, **kwargs: "not a number",
    }
    return type(name, (Task,), attrs)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("limit", "x"),
        ("limit", -1),
        ("limit", 0),
        ("timeout", -5),
        ("timeout", 1.5),
        ("max_attempts", 0),
        ("priority", "high"),
        ("result_type", 5),
        ("qualifiers", qualifiers.Setting("X", True)),
        ("qualifiers", ["IMPORTANT_SETTING"]),
    ],
)
def test_a_bad_task_meta_value_is_refused_at_registration(field, value):
    cls = task_class(f"Bad{field.title().replace('_', '')}{abs(hash(repr(value)))}",
                     **{field: value})
    with pytest.raises(TaskRegistrationError) as caught:
        register(cls)
    message = str(caught.value)
    assert cls.__qualname__ in message and f"TaskMeta.{field}" in message
    assert repr(value) in message


def test_good_task_meta_values_register():
    cls = task_class("GoodMeta", limit=1, timeout=60, max_attempts=3, priority=-2,
                     result_type=int, qualifiers=[qualifiers.Setting("X", True)])
    assert register(cls) is cls
    options = cls.task_options()
    assert (options.limit, options.timeout, options.max_attempts, options.priority) == (
        1, 60, 3, -2)


def test_a_result_that_result_type_rejects_fails_the_task():
    cls = register(task_class("RejectedResult", result_type=int))
    task = cls.create_task()
    runner.run_next([cls.HandleRef.tag])
    task.refresh_from_db()
    assert task.status == "failed"
    assert "result_type int" in task.error and "(str)" in task.error
    assert task.result is None  # reading it never raises


@pytest.mark.parametrize(
    ("name", "value", "check_id"),
    [
        ("TASK_TRACK_INTERVAL_SECONDS", "abc", "fullctl.E002"),
        ("TASK_ORPHANED_HEARTBEAT_TIMEOUT", 0, "fullctl.E003"),
        ("TASK_BACKLOG_MAX_PENDING", -1, "fullctl.E005"),
        ("TASK_DEFAULT_MAX_ATTEMPTS", 1.5, "fullctl.E007"),
        ("TASK_POLL_INTERVAL_SECONDS", True, "fullctl.E009"),
        ("TASK_ORM_WORKER_ID", 7, "fullctl.E001"),
        ("TASK_LOG_ERROR_MESSAGES", "yes", "fullctl.E012"),
    ],
)
def test_every_bad_setting_is_a_system_check_error_with_its_name(name, value, check_id):
    with override_settings(**{name: value}):
        errors = [e for e in checks.run_checks(tags=["fullctl"]) if e.id.startswith("fullctl")]
        assert [e.id for e in errors] == [check_id]
        assert name in errors[0].msg and repr(value) in errors[0].msg
        with pytest.raises(ImproperlyConfigured, match=name):
            conf.settings()
    assert conf.settings()  # the good settings are back


def test_manage_py_check_reports_a_bad_pool_setting():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=EXAMPLE_DIR, capture_output=True, text=True,
        env=process_env(DATABASE_URL=test_database_url(),
                        FULLCTL_POOL_SETTINGS=json.dumps({"TASK_POLL_INTERVAL_SECONDS": -1})),
        timeout=60,
    )
    assert result.returncode != 0
    assert "fullctl.E009" in result.stderr and "TASK_POLL_INTERVAL_SECONDS" in result.stderr


def test_database_errors_are_described_for_people():
    missing = ProgrammingError('relation "django_fullctl_task" does not exist\nLINE 1: ...')
    assert describe_error(missing) == (
        "table django_fullctl_task does not exist: run manage.py migrate")
    refused = ProgrammingError("permission denied for table django_fullctl_task")
    assert describe_error(refused) == "permission denied for table django_fullctl_task"
