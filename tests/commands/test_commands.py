"""Queued management commands: ``-Q``/``--timeout`` of ``CommandInterface``, the replayed
argv, ``CommandTask``, ``fullctl_promote_user`` and ``fullctl_tasks status``."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import override_settings
from django.utils import timezone
from example_tasks.models import EchoTask, FailTask, SumTask
from helpers import EXAMPLE_DIR, test_database_url

from django_fullctl import runner
from django_fullctl.management.base import CommandInterface, strip_queue_tokens
from django_fullctl.models import CommandTask
from fullctl.django.models import Task, TaskHeartbeat

pytestmark = [pytest.mark.portable, pytest.mark.django_db(transaction=True)]


# -- helpers and fixtures ------------------------------------------------------


def run_queued() -> Task:
    """Run the one queued command task in this process and return it, finished."""
    task = runner.run_next([CommandTask.HandleRef.tag])
    assert task is not None, "no queued command to run"
    return task


def queued(task_id: str | int) -> Task:
    return Task.objects.get(pk=int(task_id))


def argv_of(task: Task) -> list[str]:
    command, argv = task.param["args"]
    return argv


@pytest.fixture
def vegu():
    return get_user_model().objects.create_user("vegu", password="x")


def is_superuser(username: str) -> bool:
    user = get_user_model().objects.get(username=username)
    return user.is_staff and user.is_superuser


@pytest.fixture
def database_url() -> str:
    """A DATABASE_URL that points another process at the test database of this run."""
    if connection.vendor == "sqlite" and not Path(connection.settings_dict["NAME"]).is_file():
        pytest.skip("an in-memory SQLite database cannot be shared with a subprocess")
    return test_database_url()


def manage_py(database_url: str, *argv: str) -> subprocess.CompletedProcess:
    """``manage.py`` as documented: with its own default settings (the example project's),
    which is all the shipped commands need."""
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=EXAMPLE_DIR, env=env, capture_output=True, text=True, timeout=60,
    )


def from_argv(name: str, *argv: str) -> None:
    """What ``manage.py <name> <argv>`` does, in this process."""
    command = load_command_class(get_commands()[name], name)
    command.run_from_argv(["manage.py", name, *argv])


# A command with a richer parser than the shipped ones: counted, const, appended and
# multi-valued options, a subcommand and a nested subcommand. Its output is the options
# it ran with, so a queued run can be compared with a direct one.
REPLAY_KEYS = (
    "count", "mode", "action", "target", "tag", "dry_run", "only", "db_action", "fake", "to",
)


class ReplayCommand(CommandInterface):
    help = "test command"
    calls: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("-c", "--count", action="count", default=0)
        parser.add_argument("--mode", action="store_const", const="fast")
        actions = parser.add_subparsers(dest="action", required=True)
        deploy = actions.add_parser("deploy")
        deploy.add_argument("target")
        deploy.add_argument("--tag", action="append")
        deploy.add_argument("-d", "--dry-run", action="store_true")
        deploy.add_argument("--only", nargs="*")
        db = actions.add_parser("db")
        db_actions = db.add_subparsers(dest="db_action", required=True)
        migrate = db_actions.add_parser("migrate")
        migrate.add_argument("--fake", action="store_true")
        migrate.add_argument("--to")

    def before_run(self, *args, **options):
        self.calls.append("before_run")

    def run(self, *args, **options):
        self.calls.append("run")
        self.stdout.write(json.dumps({key: options.get(key) for key in REPLAY_KEYS}))


@pytest.fixture
def replay_command(monkeypatch):
    """Make ``replay_test`` a command of this project (get_commands() may hold instances)."""
    command = ReplayCommand()
    monkeypatch.setitem(get_commands(), "replay_test", command)
    monkeypatch.setattr(ReplayCommand, "calls", [])
    return command


def direct_output(*argv: str) -> dict:
    out = StringIO()
    call_command("replay_test", *argv, stdout=out)
    return json.loads(out.getvalue())


# -- fullctl_promote_user -----------------------------------------------------------


def test_promote_user_runs_directly(vegu):
    out = StringIO()
    call_command("fullctl_promote_user", "vegu", stdout=out)
    assert is_superuser("vegu")
    assert "vegu is now a superuser" in out.getvalue()
    assert not Task.objects.exists()


def test_promote_unknown_user_is_a_clear_error():
    with pytest.raises(CommandError, match="no user with the username 'nobody'"):
        call_command("fullctl_promote_user", "nobody")


def test_queued_promotion_happens_only_when_the_task_runs(vegu):
    out = StringIO()
    task_id = call_command("fullctl_promote_user", "vegu", "-Q", stdout=out)
    task = queued(task_id)
    assert out.getvalue().strip() == f"queued fullctl_promote_user as task {task.pk}"
    assert task.op == "fullctl_command" and task.status == "pending"
    assert task.param == {"args": ["fullctl_promote_user", ["vegu"]], "kwargs": {}}
    assert not is_superuser("vegu")

    task = run_queued()
    assert task.status == "completed", task.error
    assert task.result == "vegu is now a superuser\n"
    assert is_superuser("vegu")


def test_queue_keyword_of_call_command_works_too(vegu):
    task = queued(call_command("fullctl_promote_user", "vegu", queue=True, stdout=StringIO()))
    assert argv_of(task) == ["vegu"]
    assert run_queued().status == "completed" and is_superuser("vegu")


def test_queued_unknown_user_fails_the_task_with_the_message():
    task = queued(call_command("fullctl_promote_user", "nobody", queue=True, stdout=StringIO()))
    task = run_queued()
    assert task.status == "failed"
    assert "fullctl_promote_user: there is no user with the username 'nobody'" in task.error


def test_manage_py_dash_q_round_trip(vegu, database_url):
    """The documented ``manage.py fullctl_promote_user vegu -Q``, as a real process."""
    done = manage_py(database_url, "fullctl_promote_user", "vegu", "-Q")
    assert done.returncode == 0, done.stderr
    [task] = Task.objects.all()
    assert done.stdout.strip() == f"queued fullctl_promote_user as task {task.pk}"
    assert argv_of(task) == ["vegu"] and task.status == "pending"
    assert not is_superuser("vegu")
    assert run_queued().status == "completed"
    assert is_superuser("vegu")


def test_dash_q_round_trip_through_a_real_poller(vegu, database_url, start_poller):
    done = manage_py(database_url, "fullctl_promote_user", "vegu", "-Q")
    assert done.returncode == 0, done.stderr
    [task] = Task.objects.all()
    poller = start_poller("--processes", "1")
    task.wait(timeout=30)
    assert task.status == "completed", task.error
    assert task.result == "vegu is now a superuser\n"
    assert is_superuser("vegu")
    poller.wait_for_log("task completed in")
    assert "vegu" not in poller.output  # neither the argv nor the command's output


# -- the replayed argv --------------------------------------------------------------


def test_typed_options_are_replayed_exactly_and_nothing_is_added(vegu, capsys):
    from_argv(
        "fullctl_promote_user", "-v", "2", "vegu", "--timeout=45", "-Q", "--traceback",
        "--no-color",
    )
    [task] = Task.objects.all()
    assert argv_of(task) == ["-v", "2", "vegu", "--traceback", "--no-color"]
    assert task.timeout == 45
    assert f"as task {task.pk}" in capsys.readouterr().out
    assert run_queued().status == "completed" and is_superuser("vegu")


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "-Q"],
        ["-Q", "status"],
        ["status", "--json", "-Q"],
        ["--queue", "status", "--timeout", "60", "--json"],
    ],
)
def test_subcommand_is_replayed(argv, capsys):
    from_argv("fullctl_tasks", *argv)
    [task] = Task.objects.all()
    expected = [word for word in argv if word not in ("-Q", "--queue", "--timeout", "60")]
    assert argv_of(task) == expected
    assert task.timeout == (60 if "--timeout" in argv else None)
    task = run_queued()
    assert task.status == "completed", task.error
    if "--json" in argv:
        report = json.loads(task.result)
        assert report["ops"]["fullctl_command"]["running"] == 1  # itself
    else:
        assert task.result.startswith("op ")


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "-c", "deploy", "web", "--tag", "a", "--tag=b", "-d"],
        ["deploy", "--only", "x", "y", "--dry-run", "--", "-web-"],
        ["--mode", "db", "migrate", "--to=0001", "--fake"],
        ["db", "migrate"],
    ],
)
@pytest.mark.parametrize("where", ["first", "last", "after_subcommand"])
def test_replay_gives_the_command_the_same_options(replay_command, argv, where):
    expected = direct_output(*argv)
    position = {"first": 0, "last": argv.index("--") if "--" in argv else len(argv)}
    position["after_subcommand"] = argv.index("deploy" if "deploy" in argv else "db") + 1
    typed = [*argv[: position[where]], "-Q", "--timeout", "7", *argv[position[where]:]]

    task = queued(call_command("replay_test", *typed, stdout=StringIO()))
    assert argv_of(task) == argv
    assert task.timeout == 7
    task = run_queued()
    assert task.status == "completed", task.error
    assert json.loads(task.result) == expected


def test_a_keyword_option_is_not_replayed_so_the_call_is_refused(vegu, replay_command):
    """call_command() keywords are not tokens: -Q refuses rather than drop them."""
    with pytest.raises(CommandError, match=r"gives verbosity=1 where this call has 2.*"
                                           r"call_command\('fullctl_promote_user', '--opt"):
        call_command("fullctl_promote_user", "vegu", verbosity=2, queue=True)
    with pytest.raises(CommandError, match="gives count=0 where this call has 2"):
        call_command("replay_test", "deploy", "web", count=2, queue=True)
    with pytest.raises(CommandError, match="gives dry_run=False where this call has True"):
        call_command("replay_test", "deploy", "web", "-Q", dry_run=True)
    assert not Task.objects.exists() and not is_superuser("vegu")


def test_the_same_option_as_a_string_is_queued_and_replayed_exactly(vegu, replay_command):
    task = queued(call_command("fullctl_promote_user", "--verbosity=2", "vegu", queue=True,
                               stdout=StringIO()))
    assert argv_of(task) == ["--verbosity=2", "vegu"]
    assert run_queued().status == "completed" and is_superuser("vegu")

    argv = ["--count", "--count", "deploy", "web", "--tag=a", "--tag=b", "--dry-run"]
    task = queued(call_command("replay_test", *argv, queue=True, timeout=5, stdout=StringIO()))
    assert argv_of(task) == argv and task.timeout == 5
    expected = direct_output("-cc", "deploy", "web", "--tag", "a", "--tag", "b", "-d")
    assert json.loads(run_queued().result) == expected


def test_a_keyword_option_that_the_tokens_already_give_is_accepted(vegu):
    task = queued(call_command("fullctl_promote_user", "vegu", verbosity=1, queue=True,
                               stdout=StringIO()))
    assert argv_of(task) == ["vegu"]


def test_a_required_keyword_option_is_replayed_as_django_converts_it(monkeypatch):
    """call_command() itself turns a required keyword option into tokens."""

    class Required(CommandInterface):
        def add_arguments(self, parser):
            parser.add_argument("--name", required=True)

        def run(self, *args, name, **options):
            self.stdout.write(f"hello {name}")

    monkeypatch.setitem(get_commands(), "required_test", Required())
    task = queued(call_command("required_test", name="vegu", queue=True, stdout=StringIO()))
    assert argv_of(task) == ["--name", "vegu"]
    assert run_queued().result == "hello vegu\n"


def test_a_call_that_cannot_be_replayed_is_refused_and_nothing_is_stored(
    replay_command, monkeypatch
):
    with pytest.raises(CommandError, match="cannot replay"):
        call_command("replay_test", "deploy", "web", count="many", queue=True)
    monkeypatch.setattr(ReplayCommand, "stealth_options", ("interactive",))
    with pytest.raises(CommandError, match="cannot queue interactive"):
        call_command("replay_test", "db", "migrate", interactive=False, queue=True)
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    "argv",
    [["deploy", "web", "-dQ"], ["deploy", "web", "--que"], ["deploy", "web", "-Q", "--time", "5"]],
)
def test_queue_options_that_cannot_be_cut_out_are_refused(replay_command, argv):
    """-Q in a cluster, or an abbreviation, would stay in the replayed argv."""
    with pytest.raises(CommandError, match="cannot be cut out.*write -Q/--queue and --timeout"
                                           " apart"):
        call_command("replay_test", *argv, stdout=StringIO())
    assert not Task.objects.exists() and ReplayCommand.calls == []


def test_strip_queue_tokens():
    assert strip_queue_tokens(["a", "-Q", "--timeout", "5", "--queue", "--timeout=9", "b"]) == [
        "a", "b"
    ]
    assert strip_queue_tokens(["a", "--", "-Q", "--timeout", "5"]) == [
        "a", "--", "-Q", "--timeout", "5"
    ]


def test_before_run_runs_before_the_command_and_not_when_queueing(replay_command):
    call_command("replay_test", "db", "migrate", "-Q", stdout=StringIO())
    assert ReplayCommand.calls == []
    run_queued()
    assert ReplayCommand.calls == ["before_run", "run"]


# -- --timeout, unknown commands, queue_allowed ---------------------------------------


def test_timeout_without_dash_q_is_an_error(vegu):
    with pytest.raises(CommandError, match="use it with -Q"):
        call_command("fullctl_promote_user", "vegu", "--timeout", "5")
    with pytest.raises(CommandError, match="positive"):
        call_command("fullctl_promote_user", "vegu", "-Q", "--timeout", "0")
    with pytest.raises(CommandError, match="positive"):
        call_command("fullctl_promote_user", "vegu", queue=True, timeout=-1)
    assert not Task.objects.exists() and not is_superuser("vegu")


def test_unknown_command_is_refused_and_nothing_is_stored(monkeypatch):
    with pytest.raises(CommandError, match="unknown command 'no_such_command'"):
        CommandTask.create_task("no_such_command", [])
    with pytest.raises(TypeError, match="list of strings"):
        CommandTask.create_task("fullctl_tasks", "status")
    # a CommandInterface that is not a command of the project (no replay_command fixture)
    with pytest.raises(CommandError, match="unknown command 'test_commands'"):
        call_command(ReplayCommand(), "db", "migrate", queue=True)
    assert not Task.objects.exists()


def test_a_command_that_exits_non_zero_fails_its_task(monkeypatch):
    def exits(name, *argv, stdout, stderr):
        stderr.write("something went wrong\n")
        raise SystemExit(3)

    monkeypatch.setattr("django_fullctl.models.command_task.call_command", exits)
    CommandTask.create_task("fullctl_tasks", ["status"])
    task = run_queued()
    assert task.status == "failed"
    assert "fullctl_tasks: exited with status 3" in task.error
    assert "something went wrong" in task.error


def test_queue_allowed_false_has_no_queue_options():
    class Unqueued(CommandInterface):
        queue_allowed = False

        def run(self, *args, **options):
            return "ran"

    parser = Unqueued().create_parser("manage.py", "unqueued")
    options = {s for action in parser._actions for s in action.option_strings}
    assert not options & {"-Q", "--queue", "--timeout"}
    assert call_command(Unqueued(), stdout=StringIO()) == "ran"
    with pytest.raises(TypeError, match="Unknown option"):
        call_command(Unqueued(), queue=True)


def test_an_option_that_clashes_with_the_queue_options_is_named():
    class Clash(CommandInterface):
        def add_arguments(self, parser):
            parser.add_argument("--timeout")

    with pytest.raises(TypeError, match="reserves for queueing"):
        Clash().create_parser("manage.py", "clash")


# -- fullctl_tasks status ---------------------------------------------------------------


@pytest.fixture
def busy_queue(monkeypatch):
    """Tasks in every state; pod-a is alive, pod-b stopped sending heartbeats an hour ago."""
    monkeypatch.delenv("TASK_ORPHANED_HEARTBEAT_TIMEOUT", raising=False)
    EchoTask.create_task("secret-completed")
    runner.run_next(["task_echo"])
    FailTask.create_task("secret-failed")
    runner.run_next(["task_fail"])
    parent = SumTask.create_task(1, 2)
    SumTask.create_task(3, 4, parent=parent)
    ids = {}
    for name, worker in (("fresh", "pod-a:1"), ("stale", "pod-b:2"), ("started", "pod-a:1")):
        EchoTask.create_task(f"secret-{name}")
        [claimed] = Task.queue.claim(worker, ["task_echo"])
        ids[name] = claimed.pk
        if name != "started":
            assert Task.queue.heartbeat(claimed.lease)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    TaskHeartbeat.objects.filter(task_id=ids["stale"]).update(timestamp=an_hour_ago)
    return ids


def status_output(*argv: str) -> str:
    out = StringIO()
    call_command("fullctl_tasks", "status", *argv, stdout=out)
    return out.getvalue()


@override_settings(TASK_ORPHANED_HEARTBEAT_TIMEOUT=30)
def test_status_json_counts_workers_and_stale_heartbeats(busy_queue):
    report = json.loads(status_output("--json"))
    zero = dict.fromkeys(
        ("pending", "scheduled", "waiting", "running", "completed", "failed", "cancelled"), 0
    )
    assert report["ops"] == {
        "task_echo": {**zero, "running": 3, "completed": 1},
        "task_fail": {**zero, "failed": 1},
        "task_sum": {**zero, "pending": 1, "waiting": 1},
    }
    assert report["totals"] == {**zero, "pending": 1, "waiting": 1, "running": 3,
                                "completed": 1, "failed": 1}
    assert report["workers"] == [{"queue_id": "pod-a:1", "running": 2}]
    assert report["stale_after_seconds"] == 30
    [stale] = report["stale"]
    assert stale["id"] == busy_queue["stale"] and stale["queue_id"] == "pod-b:2"
    assert stale["op"] == "task_echo" and stale["age_seconds"] >= 3600


@override_settings(TASK_ORPHANED_HEARTBEAT_TIMEOUT=30)
def test_status_text_never_prints_parameters(busy_queue):
    text = status_output()
    lines = text.splitlines()
    assert lines[0].split() == ["op", "pending", "scheduled", "waiting", "running",
                                "completed", "failed", "cancelled"]
    assert lines[1].split() == ["task_echo", "0", "0", "0", "3", "1", "0", "0"]
    assert "task_sum" in text and "total" in text
    assert "live workers (running a task, heartbeat within 30s): 1" in text
    assert "  pod-a:1  2 running" in lines
    assert "stale heartbeats (older than 30s): 1" in text
    assert f"task {busy_queue['stale']}  task_echo  on pod-b:2" in text
    assert "secret" not in text
    assert "secret" not in status_output("--json")


@override_settings(TASK_ORPHANED_HEARTBEAT_TIMEOUT=30)
def test_status_of_an_empty_queue(monkeypatch):
    monkeypatch.delenv("TASK_ORPHANED_HEARTBEAT_TIMEOUT", raising=False)
    text = status_output()
    assert text.startswith("no tasks")
    assert "stale heartbeats (older than 30s): 0" in text
    assert json.loads(status_output("--json"))["ops"] == {}
