"""How worker processes start (``TASK_WORKER_START``): forked from a fork server that set
Django up once, or spawned, each with what spawn guarantees: no database connection, no
thread and no lock inherited. Real pollers; the worker describes itself through
``tests.testapp.start_probe.probe``, a task of Django's Tasks API."""

import os
import signal

import pytest
from django.core import checks as django_checks
from helpers import wait_for

from django_fullctl import checks, conf
from django_fullctl.poller import spawn
from django_fullctl.poller.preload import PreloadReport
from tests.testapp.start_probe import probe

pytestmark = pytest.mark.django_db(transaction=True)


def run_probe(timeout: float = 30.0) -> dict:
    result = probe.enqueue()

    def done():
        result.refresh()
        return result.is_finished

    wait_for(done, timeout)
    assert result.errors == [], result.errors[0].traceback
    return result.return_value


def assert_clean_start(seen: dict) -> None:
    """What spawn guarantees, whichever way the worker started."""
    # its only threads are its own: the main one and the heartbeat it starts itself
    assert seen["threads"] == ["MainThread", "heartbeat"]
    # the connection it claimed the task with was opened after the process was created:
    # nothing was inherited (ages, each by its own clock, so the database may be remote)
    assert seen["connection_age"] < seen["process_age"]


def test_workers_fork_from_a_fork_server_that_set_django_up_once(start_poller,
                                                                 postgresql_only):
    poller = start_poller("-p", "2")
    seen = run_probe()
    assert_clean_start(seen)
    assert seen["start_method"] == "forkserver" and seen["preloaded"]
    fork_server = seen["fork_server"]
    # the worker's parent is the fork server, a child of the supervisor (an exec, not a
    # fork of it), single-threaded, that opened no connection and hit no error
    assert seen["parent"] == fork_server != poller.process.pid
    assert parent_of(fork_server) == poller.process.pid
    assert seen["parent_os_threads"] == 1
    assert seen["fork_server_threads"] == [] and seen["fork_server_connections"] == []
    assert seen["fork_server_error"] is None
    assert seen["gc_frozen"] > 10_000  # the preloaded objects, frozen before forking
    # and it shares it with every worker of the pod
    wait_for(lambda: len(poller.worker_pids()) == 2)
    assert {parent_of(pid) for pid in poller.worker_pids()} == {fork_server}
    assert "fork server" not in poller.output  # no warning about the fork server


def test_spawn_is_still_there_to_go_back_to(start_poller, postgresql_only):
    poller = start_poller("-p", "1", env={"TASK_WORKER_START": "spawn"})
    seen = run_probe()
    assert_clean_start(seen)
    assert seen["start_method"] == "spawn" and not seen["preloaded"]
    assert seen["parent"] == poller.process.pid
    assert seen["gc_frozen"] == 0


def test_a_sigkilled_worker_is_replaced_from_the_same_fork_server(start_poller,
                                                                  postgresql_only):
    poller = start_poller("-p", "1")
    first = run_probe()
    os.kill(first["pid"], signal.SIGKILL)
    poller.wait_for_log("worker died (killed by SIGKILL)")
    wait_for(lambda: len(poller.worker_pids()) == 2)
    second = run_probe()
    assert second["pid"] != first["pid"]
    assert second["parent"] == first["parent"] == first["fork_server"]  # it survived
    assert_clean_start(second)


def test_recycled_workers_come_from_the_fork_server_too(start_poller, postgresql_only):
    poller = start_poller("-p", "1", "-t", "1")
    seen = [run_probe() for _ in range(3)]
    assert len({s["pid"] for s in seen}) == 3  # one task per worker
    assert len({s["parent"] for s in seen}) == 1
    assert "recycled after 1 tasks" in poller.output
    for each in seen:
        assert_clean_start(each)


def test_a_killed_fork_server_is_started_again(start_poller, postgresql_only):
    """Its workers look dead to the supervisor (multiprocessing reads their exit codes from
    the fork server); they see the supervisor hang up and stop, and a fresh fork server
    forks their replacements."""
    poller = start_poller("-p", "1")
    first = run_probe()
    os.kill(first["fork_server"], signal.SIGKILL)
    poller.wait_for_log("worker died (exit code 255)")
    wait_for(lambda: not alive(first["pid"]))  # it drained: the supervisor hung up
    second = run_probe()
    assert second["fork_server"] != first["fork_server"] and second["preloaded"]
    assert second["parent"] == second["fork_server"]
    assert_clean_start(second)
    assert poller.process.poll() is None


def test_a_failed_preload_fails_the_worker_as_a_spawned_one_would(capsys, monkeypatch):
    """The fork server keeps a failed set-up to hand it on: the worker prints it, stops
    that fork server (the next one tries again) and exits 1."""
    killed = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: killed.append((pid, sig)))
    monkeypatch.setattr(os, "getppid", lambda: 4242)
    report = PreloadReport(pid=4242, error="Traceback: boom\n")
    with pytest.raises(SystemExit) as exit_info:
        spawn.fail_like_a_spawned_worker(report)
    assert exit_info.value.code == 1
    assert "could not set Django up:\nTraceback: boom" in capsys.readouterr().err
    assert killed == [(4242, signal.SIGKILL)]
    # once the fork server is gone, our parent is someone else, left alone
    killed.clear()
    monkeypatch.setattr(os, "getppid", lambda: 1)
    with pytest.raises(SystemExit):
        spawn.fail_like_a_spawned_worker(report)
    assert killed == []


def test_the_fork_server_preloads_the_main_script_then_django():
    import multiprocessing.forkserver as forkserver

    from django_fullctl.poller import preload

    assert forkserver._forkserver._preload_modules == ["__main__", spawn.PRELOAD]
    assert preload.REPORT is None  # imported outside a fork server, it did nothing


@pytest.mark.parametrize("value", ["fork", "", None, 1])
def test_a_bad_worker_start_is_a_system_check_error(settings, value):
    settings.TASK_WORKER_START = value
    errors = [e for e in checks.check_settings() if isinstance(e, django_checks.Error)]
    assert [e.id for e in errors] == [checks.SETTING_IDS["TASK_WORKER_START"]]
    assert "'forkserver', 'spawn'" in errors[0].msg


def test_worker_start_defaults_to_the_fork_server(settings):
    assert conf.settings().worker_start == "forkserver"
    settings.TASK_WORKER_START = "spawn"
    assert conf.settings().worker_start == "spawn"


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as file:
        return int(file.read().rpartition(")")[2].split()[1])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
