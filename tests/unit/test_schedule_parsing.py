"""Periodic tasks and retention without a poller: cron ticks in the project's time zone,
where schedules come from, and the settings and system checks that refuse bad ones."""

import argparse
from datetime import UTC, datetime

import pytest
from django.apps import apps
from django.test import override_settings

from django_fullctl import checks, conf, schedules
from django_fullctl.management.commands.fullctl_tasks import duration
from django_fullctl.schedules import Schedule
from fullctl.django.models import Task, TaskRegistrationError
from fullctl.django.tasks import register

pytestmark = pytest.mark.portable


@pytest.fixture
def task_class():
    """Proxy task classes for one test, taken out of Django's app registry afterwards (so
    a bad schedule does not leak into the system checks of other tests)."""
    made = []

    def make(name: str, **meta):
        attrs = {
            "__module__": __name__,
            "Meta": type("Meta", (), {"proxy": True, "app_label": "example_tasks"}),
            "HandleRef": type("HandleRef", (), {"tag": f"task_sched_{name.lower()}"}),
            "TaskMeta": type("TaskMeta", (), meta),
            "run": lambda self, *args, **kwargs: None,
        }
        cls = type(name, (Task,), attrs)
        made.append(cls)
        return cls

    yield make
    for cls in made:
        apps.all_models["example_tasks"].pop(cls._meta.model_name, None)
    apps.clear_cache()


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# -- ticks --------------------------------------------------------------------------


@override_settings(TIME_ZONE="Europe/Berlin")
def test_ticks_are_in_the_projects_time_zone():
    nightly = Schedule("nightly", "task_sum", "0 3 * * *")
    # 01:30 UTC is 02:30 in Berlin (winter): the next 03:00 Berlin is 02:00 UTC today
    assert schedules.next_tick(nightly, at(2026, 1, 10, 1, 30)) == at(2026, 1, 10, 2, 0)
    assert schedules.previous_tick(nightly, at(2026, 1, 10, 1, 30)) == at(2026, 1, 9, 2, 0)


def test_a_tick_at_exactly_now_is_the_previous_tick_and_seconds_count():
    every_two = Schedule("fast", "task_sum", "*/2 * * * * *")
    assert schedules.previous_tick(every_two, at(2026, 1, 1, 0, 0, 4)) == at(2026, 1, 1, 0, 0, 4)
    assert schedules.previous_tick(every_two, at(2026, 1, 1, 0, 0, 5, 900000)) == at(
        2026, 1, 1, 0, 0, 4)
    assert schedules.next_tick(every_two, at(2026, 1, 1, 0, 0, 4)) == at(2026, 1, 1, 0, 0, 6)


def test_cron_problems_are_named():
    assert schedules.cron_problem("*/5 * * * *") is None
    assert schedules.cron_problem("*/2 * * * * *") is None
    for bad in ("", "every day", "61 * * * *", "* * * *", None):
        assert schedules.cron_problem(bad)


# -- where schedules come from ------------------------------------------------------


def test_schedules_come_from_task_meta_and_task_schedules(task_class):
    nightly = register(task_class("Nightly", schedule="0 3 * * *"))
    plain = register(task_class("Plain"))
    extra = {"sync-eu": {"task": "task_sum", "cron": "*/5 * * * *", "args": [1, 2]}}
    with override_settings(TASK_SCHEDULES=extra):
        found = schedules.all_schedules([nightly, plain])
    assert found == [
        Schedule("sync-eu", "task_sum", "*/5 * * * *", [1, 2], {}),
        Schedule("task_sched_nightly", "task_sched_nightly", "0 3 * * *", source="TaskMeta"),
    ]


def test_a_bad_task_meta_schedule_is_refused_at_registration(task_class):
    cls = task_class("BadCron", schedule="every night")
    with pytest.raises(TaskRegistrationError, match="TaskMeta.schedule"):
        register(cls)


# -- settings and system checks ------------------------------------------------------


@pytest.mark.parametrize("value", [
    [], {"x": "0 3 * * *"}, {"x": {"cron": "0 3 * * *"}}, {"x": {"task": "task_sum"}},
    {"x": {"task": "task_sum", "cron": "* * * * *", "args": "1"}},
    {"x": {"task": "task_sum", "cron": "* * * * *", "kwargs": [1]}},
    {"x": {"task": "task_sum", "cron": "* * * * *", "when": "now"}},
])
def test_a_badly_shaped_task_schedules_is_a_settings_error(value):
    with override_settings(TASK_SCHEDULES=value):
        assert [name for name, _ in conf.problems()] == ["TASK_SCHEDULES"]
        errors = checks.check_settings()
    assert [e.id for e in errors] == [checks.SETTING_IDS["TASK_SCHEDULES"]]


@pytest.mark.parametrize(("entry", "check_id"), [
    ({"task": "task_sum", "cron": "*/5 * * *"}, "fullctl.E101"),
    ({"task": "task_sum", "cron": "99 * * * *"}, "fullctl.E101"),
    ({"task": "task_no_such_op", "cron": "*/5 * * * *"}, "fullctl.E102"),
    ({"task": "task_sum", "cron": "*/5 * * * *", "args": [object()]}, "fullctl.E103"),
    ({"task": "task_sum", "cron": "*/5 * * * *", "kwargs": {"x": float("nan")}}, "fullctl.E103"),
])
def test_bad_schedules_are_system_check_errors(entry, check_id):
    with override_settings(TASK_SCHEDULES={"broken": entry}):
        errors = checks.check_schedules()
    assert [e.id for e in errors] == [check_id]
    assert "TASK_SCHEDULES['broken']" in errors[0].msg


def test_good_schedules_pass_the_checks():
    entry = {"task": "task_sum", "cron": "*/5 * * * *", "args": [1], "kwargs": {"b": 2}}
    with override_settings(TASK_SCHEDULES={"ok": entry}):
        assert checks.check_schedules() == []
        assert conf.settings().task_schedules == {"ok": entry}


def test_retention_is_read_as_seconds_per_status():
    with override_settings(TASK_RETENTION={"completed": "7d", "failed": "12h", "cancelled": 90}):
        assert conf.settings().task_retention == {
            "completed": 7 * 86400, "failed": 12 * 3600, "cancelled": 90}
    assert conf.settings().task_retention == {}


@pytest.mark.parametrize("value", [
    {"completed": "a week"}, {"running": "7d"}, {"failed": "0s"}, ["7d"], {"completed": -1},
])
def test_a_bad_retention_is_a_settings_error(value):
    with override_settings(TASK_RETENTION=value):
        assert [e.id for e in checks.check_settings()] == [checks.SETTING_IDS["TASK_RETENTION"]]


def test_durations_are_shared_by_the_purge_command_and_the_settings():
    assert conf.duration("90") == conf.duration("90s") == 90
    assert (conf.duration("15m"), conf.duration("12h"), conf.duration("7d")) == (
        900, 43200, 604800)
    with pytest.raises(ValueError, match="is not a duration"):
        conf.duration("7 days")
    with pytest.raises(argparse.ArgumentTypeError, match="is not a duration"):
        duration("7 days")
