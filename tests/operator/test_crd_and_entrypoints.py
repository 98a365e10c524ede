"""The CRD's schema against what the operator writes, the shared queue snapshot, and the
two entry points (``python -m fullctl_operator`` and ``manage.py fullctl_operator``)."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import jsonschema
import pytest
from example_tasks.models import NoopTask
from fullctl_operator import observe
from fullctl_operator.decisions import Condition, Plan
from fullctl_operator.status import build_status
from harness import (
    DEPLOYMENTS,
    NAMESPACE,
    Emulator,
    create_taskpool,
    deployment,
    replicas,
    taskpool,
    use_kubeconfig,
    validate_taskpool,
)
from helpers import async_wait_for, settings_module, test_database_url

ROOT = Path(__file__).parents[2]


# -- the CRD ---------------------------------------------------------------------------


def test_the_status_the_operator_writes_fits_the_crd():
    from datetime import UTC, datetime

    now = datetime(2026, 11, 29, tzinfo=UTC)
    decided = Plan("scaling up 1 -> 3", (Condition("Ready", True, "Sizing"),), pending=9,
                   running=1, desired=3, scale_to=3, lower_since=now, busy=1)
    status = build_status(decided, {}, generation=2, current_replicas=1, scaled=True,
                          restarted=1, now=now)
    body = taskpool("pool", "workers")
    body["status"] = {k: v for k, v in status.items() if v is not None}
    validate_taskpool(body)


@pytest.mark.parametrize(
    "bad",
    [{"minReplicas": -1}, {"tasksPerReplica": 0}, {"staleHeartbeatSeconds": 0},
     {"deployment": "Not_A_Name"}, {"paused": "yes"}],
)
def test_the_crd_refuses_bad_specs(bad):
    body = taskpool("pool", "workers")
    body["spec"].update(bad)
    with pytest.raises(jsonschema.ValidationError):
        validate_taskpool(body)


# -- one database read for every pool of a tick ----------------------------------------


async def test_pools_ticking_together_share_one_queue_read(monkeypatch):
    reads = []

    def read_queue():
        reads.append(1)
        time.sleep(0.05)  # a query takes a moment: the other pools wait for it
        return observe.QueueSnapshot({}, (), None, time.monotonic())

    monkeypatch.setattr(observe, "read_queue", read_queue)
    cache = observe.QueueCache(max_age=60)
    snapshots = await asyncio.gather(*(cache.get() for _ in range(5)))
    assert len(reads) == 1 and all(s is snapshots[0] for s in snapshots)
    cache.invalidate()  # after a rescue the next tick reads afresh
    await cache.get()
    assert len(reads) == 2


# -- entry points ----------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """This environment without a settings module (each test names the one it wants: this
    run's, tests.testapp.settings), with the example project and the repository root on
    PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "example"), str(ROOT)])
    env.update(extra)
    return env


def test_python_m_requires_the_django_settings_module():
    done = subprocess.run([sys.executable, "-m", "fullctl_operator", "--standalone"],
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "DJANGO_SETTINGS_MODULE" in done.stderr


def test_manage_py_hands_the_options_to_kopf():
    done = subprocess.run(
        [sys.executable, "manage.py", "fullctl_operator", "--help"], cwd=ROOT / "example",
        env=child_env(DJANGO_SETTINGS_MODULE=settings_module()),
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--namespace", "--standalone", "--liveness", "--verbose"):
        assert option in done.stdout


def test_manage_py_command_runs_before_run_and_is_never_queued(monkeypatch):
    """A CommandInterface with queue_allowed = False: -Q is not its option (it goes to
    kopf like every other word), and before_run runs on both paths before kopf starts."""
    from django.core.management import call_command
    from fullctl_operator import cli

    from django_fullctl.management.base import CommandInterface
    from django_fullctl.management.commands.fullctl_operator import Command

    calls: list = []
    monkeypatch.setattr(cli, "run_kopf", lambda args, prog_name: calls.append((args, prog_name)))

    class Probe(Command):
        def before_run(self, *args, **options):
            calls.append("before_run")

    assert issubclass(Command, CommandInterface) and not Command.queue_allowed
    Probe().run_from_argv(["manage.py", "fullctl_operator", "--settings=x", "--standalone",
                           "-Q", "--namespace", "ns"])
    call_command(Probe(), "--", "--standalone", "--namespace", "ns")
    assert calls == [
        "before_run", (["--standalone", "-Q", "--namespace", "ns"], "manage.py fullctl_operator"),
        "before_run", (["--standalone", "--namespace", "ns"], "fullctl_operator"),
    ]


async def test_without_any_kubernetes_configuration_the_operator_stops_at_startup(
    monkeypatch, tmp_path: Path
):
    """Neither a service account nor a kubeconfig: nothing to retry (as for kopf's login)."""
    import kopf
    from fullctl_operator import handlers

    use_kubeconfig(monkeypatch, tmp_path / "absent")
    with pytest.raises(kopf.PermanentError, match="neither in-cluster nor from a kubeconfig"):
        await handlers.configure(settings=kopf.OperatorSettings(), memo=kopf.Memo())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db(transaction=True)
async def test_python_m_runs_the_operator_and_exits_cleanly_on_sigterm(cluster: Emulator,
                                                                       tmp_path: Path):
    """The production entry point end to end: kopf's default login and the operator's
    client both from the kubeconfig (the service account in a pod), options handed
    through, liveness, SIGTERM."""
    cluster.put(DEPLOYMENTS, deployment("cli-workers", 1))
    await create_taskpool(cluster, taskpool("cli", "cli-workers", maxReplicas=5))
    await observe.in_db_thread(lambda: [NoopTask.create_task() for _ in range(20)])

    port = free_port()
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fullctl_operator", "--standalone", "--namespace", NAMESPACE,
            f"--liveness=http://127.0.0.1:{port}/healthz",
            env=child_env(
                DJANGO_SETTINGS_MODULE=settings_module(),
                DATABASE_URL=test_database_url(), KUBECONFIG=str(cluster.kubeconfig),
                FULLCTL_POOL_SETTINGS=json.dumps({"TASK_OPERATOR_INTERVAL_SECONDS": 0.5}),
            ),
            stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            await async_wait_for(lambda: replicas(cluster, "cli-workers") == 5 or child.returncode,
                                 timeout=40)
            assert replicas(cluster, "cli-workers") == 5, log.read_text()
            async with aiohttp.ClientSession() as session, \
                    session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["queue"]["read"] is True
            child.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(child.wait(), timeout=30)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    assert code == 0, log.read_text()
