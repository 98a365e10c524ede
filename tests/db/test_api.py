"""The documented task API: defining, creating, limiting, running, reading results."""

import pytest
from django.db import models, transaction
from django.test.utils import isolate_apps, override_settings
from example_tasks.models import EchoTask, LimitedTask, PairTask, SumTask
from helpers import ROOT, run_threads

from django_fullctl import conf, registry, runner
from django_fullctl.exceptions import TaskNotRegistered, TaskRegistrationError
from fullctl.django.models import Task, TaskHeartbeat, TaskLimitError
from fullctl.django.tasks import TaskLimitError as TaskLimitErrorFromTasks
from fullctl.django.tasks import qualifiers, register
from tests.testapp.models import UnstorableResultTask

pytestmark = [pytest.mark.portable, pytest.mark.django_db(transaction=True)]


def run_all() -> None:
    while runner.run_next():
        pass


def test_docs_sum_example():
    task = SumTask.create_task(2, 3)
    assert task.status == "pending"
    assert task.param["args"] == [2, 3]
    run_all()
    task.wait(timeout=10)
    assert task.result == 5
    assert task.status == "completed"
    assert task.time is not None and task.time >= 0


def test_result_type_applies_to_the_stored_json():
    with override_settings(IMPORTANT_SETTING=True):
        task = PairTask.create_task(2, 3)
        run_all()
    assert task.wait(timeout=10).result == str([2, 3])


@pytest.mark.parametrize("value", [False, 0, None, "", {"a": [1, {"b": None}]}, [1, 2, 3], 2.5])
def test_results_come_back_as_returned(value):
    task = EchoTask.create_task(value)
    run_all()
    task.wait(timeout=10)
    assert task.status == "completed"
    assert task.result == value
    assert type(task.result) is type(value)


def test_arguments_reach_run_except_parent_and_timeout():
    parent = EchoTask.create_task("p")
    run_all()
    task = EchoTask.create_task(value={"k": 1}, parent=parent, timeout=30, extra=True)
    assert task.param == {"args": [], "kwargs": {"value": {"k": 1}, "extra": True}}
    assert task.timeout == 30 and task.parent_id == parent.pk
    run_all()
    assert task.wait(timeout=10).result == {"k": 1}


def test_non_json_argument_is_refused_and_nothing_is_stored():
    before = Task.objects.count()
    with pytest.raises(TypeError, match="argument 1 of task 'task_sum'"):
        SumTask.create_task(1, object())
    with pytest.raises(TypeError, match="keyword argument 'when'"):
        SumTask.create_task(1, 2, when={1, 2})
    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        SumTask.create_task(float("nan"), 2)
    assert Task.objects.count() == before


def test_unstorable_result_fails_the_task_with_a_clear_error():
    task = UnstorableResultTask.create_task()
    run_all()
    task.wait(timeout=10)
    assert task.status == "failed"
    assert "cannot be stored as JSON" in task.error and "object" in task.error


def test_exception_in_run_fails_the_task_with_its_traceback():
    from example_tasks.models import FailTask

    task = FailTask.create_task("kaput")
    run_all()
    task.wait(timeout=10)
    assert task.status == "failed"
    assert "RuntimeError: kaput" in task.error


def test_creating_inside_a_rolled_back_transaction_leaves_no_task():
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        SumTask.create_task(1, 1)
        raise Rollback
    assert not SumTask.objects.exists()


def test_source_is_the_worker_id():
    assert SumTask.create_task(1, 1).source == conf.worker_id()
    with override_settings(TASK_ORM_WORKER_ID="web-7"):
        assert SumTask.create_task(1, 1).source == "web-7"
    assert ":" in conf.worker_id()


def test_proxy_manager_returns_only_its_own_op_and_cast_converts():
    SumTask.create_task(1, 2)
    EchoTask.create_task(3)
    assert SumTask.objects.count() == 1
    assert Task.objects.count() == 2
    generic = Task.objects.get(op="task_echo")
    assert type(generic) is Task
    assert isinstance(generic.cast(), EchoTask)


def test_unregistered_op_in_the_table_is_skipped_and_reported():
    stray = Task.objects.create(op="task_from_elsewhere", param={"args": [], "kwargs": {}})
    known = SumTask.create_task(1, 1)
    run_all()
    assert known.wait(timeout=10).status == "completed"
    stray.refresh_from_db()
    assert stray.status == "pending"
    with pytest.raises(TaskNotRegistered, match="task_from_elsewhere"):
        stray.cast()


def test_limit_counts_pending_and_running_per_limit_id():
    LimitedTask.create_task("first")
    LimitedTask.create_task("second")
    with pytest.raises(TaskLimitError) as caught:
        LimitedTask.create_task("first")
    assert "task_limited" in str(caught.value) and "'first'" in str(caught.value)
    assert TaskLimitError is TaskLimitErrorFromTasks
    [running] = Task.queue.claim("w", ["task_limited"], limit=1)
    with pytest.raises(TaskLimitError):
        LimitedTask.create_task(running.param["args"][0])
    runner.execute(running)
    LimitedTask.create_task(running.param["args"][0])  # finished tasks do not count


def test_docs_limit_example_without_limit_id():
    with override_settings(IMPORTANT_SETTING=True):
        PairTask.create_task(1, 2)
        with pytest.raises(TaskLimitError):
            PairTask.create_task(3, 4)


def test_limit_id_may_be_a_method():
    @register
    class MethodLimitTask(Task):
        class Meta:
            proxy = True
            app_label = "example_tasks"

        class HandleRef:
            tag = "task_method_limit"

        class TaskMeta:
            limit = 1

        def generate_limit_id(self):
            return self.param["kwargs"]["key"]

    MethodLimitTask.create_task(key="a")
    MethodLimitTask.create_task(key="b")
    with pytest.raises(TaskLimitError):
        MethodLimitTask.create_task(key="a")


def test_limit_race_leaves_exactly_one_task():
    results = run_threads(20, lambda i: LimitedTask.create_task("race"))
    errors = [r for r in results if isinstance(r, TaskLimitError)]
    assert len(errors) == 19, results
    assert LimitedTask.objects.filter(limit_id="race").count() == 1


def test_register_refuses_bad_classes():
    with pytest.raises(TaskRegistrationError, match="already registered"):

        @register
        class OtherSum(Task):
            class Meta:
                proxy = True
                app_label = "example_tasks"

            class HandleRef:
                tag = "task_sum"

    with pytest.raises(TaskRegistrationError, match="HandleRef"):

        @register
        class NoTag(Task):
            class Meta:
                proxy = True
                app_label = "example_tasks"

    with pytest.raises(TaskRegistrationError, match="not a subclass"):
        register(object)


@isolate_apps("example_tasks")
def test_register_refuses_a_concrete_model():
    class Concrete(Task):
        extra = models.IntegerField(default=0)

        class Meta:
            app_label = "example_tasks"

        class HandleRef:
            tag = "task_concrete"

    with pytest.raises(TaskRegistrationError, match="proxy"):
        register(Concrete)


def test_qualifiers_against_a_mapping_and_live_settings():
    assert qualifiers.Settings is qualifiers.Setting
    flag = qualifiers.Setting("IMPORTANT_SETTING", True)
    contains = qualifiers.Settings("IMPORTANT_LIST", lambda v: "xyz" in v)
    unset = qualifiers.Setting("NOT_DEFINED_ANYWHERE", qualifiers.SettingUnset)
    assert flag.check({"IMPORTANT_SETTING": True})
    assert not flag.check({"IMPORTANT_SETTING": False})
    assert not flag.check({})
    assert contains.check({"IMPORTANT_LIST": ["xyz"]})
    assert not contains.check({})  # the predicate cannot judge a missing setting
    assert unset.check({}) and not unset.check({"NOT_DEFINED_ANYWHERE": 1})
    assert unset.check()  # live settings
    with override_settings(IMPORTANT_SETTING=True):
        assert flag.check()
    assert not flag.check()


def test_qualified_ops_with_pool_settings():
    default_ops = registry.qualified_ops()
    assert "task_sum" in default_ops and "task_important" not in default_ops
    pool = {"IMPORTANT_SETTING": True, "IMPORTANT_LIST": ["xyz"]}
    assert "task_important" in registry.qualified_ops(pool)
    assert "task_important" not in registry.qualified_ops({"IMPORTANT_SETTING": True})


def test_unqualified_task_is_not_claimed():
    from example_tasks.models import ImportantTask

    task = ImportantTask.create_task()
    assert runner.run_next() is None
    with override_settings(IMPORTANT_SETTING=True, IMPORTANT_LIST=["xyz"]):
        assert runner.run_next().pk == task.pk


def test_settings_have_safe_defaults_and_env_override(monkeypatch):
    settings = conf.settings()  # the example project sets none of them
    assert settings.worker_id is None
    assert settings.track_interval == 5
    assert settings.orphaned_heartbeat_timeout == 30
    assert settings.health_check_interval == 20
    assert settings.backlog_max_pending == 10000 and settings.backlog_max_age == 0
    assert settings.default_max_attempts == 2
    assert settings.wait_poll_interval == 1.0 and settings.poll_interval == 5.0
    assert settings.timeout_kill_grace == 5.0 and settings.operator_interval == 10.0
    monkeypatch.setenv("TASK_TRACK_INTERVAL_SECONDS", "0.5")
    conf.reload()
    try:
        assert conf.settings().track_interval == 0.5
    finally:
        monkeypatch.undo()
        conf.reload()


def test_heartbeat_model_has_a_timestamp():
    task = SumTask.create_task(1, 1)
    [claimed] = Task.queue.claim("w", ["task_sum"])
    assert Task.queue.heartbeat(claimed.lease)
    assert TaskHeartbeat.objects.get(task=task).timestamp is not None


def test_every_setting_is_documented():
    guide = (ROOT / "docs" / "usage.md").read_text()
    assert [name for name in conf.DEFAULTS if f"`{name}`" not in guide] == []
