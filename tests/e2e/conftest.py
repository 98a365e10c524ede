"""Fixtures of the end-to-end tests: the emulator on a real port, the pod runner (real
pollers as pods) and the real operator as a child process. See cluster_harness.py and
podrunner.py for what they are made of."""

import asyncio
import contextlib
import json
import os

import pytest
from cluster_harness import (
    E2E_SETTINGS,
    NAMESPACE,
    OPERATOR_AGENTS,
    OPERATOR_TICK,
    ClusterEmulator,
    OperatorProcess,
    Runs,
    db,
    live_view,
    serving,
)
from django.db import connection
from helpers import process_env, test_database_url
from podrunner import PodRunner, uts_command

from django_fullctl.models import Task

# the e2e task classes, in this process too (the pods and the operator install their app
# through E2E_SETTINGS); imported by the dotted name those processes use
import tests.e2e.e2e_tasks.models  # noqa: F401  isort: skip


@pytest.fixture(scope="session")
def uts():
    prefix = uts_command()
    if prefix is None:
        pytest.skip("pods need their own host name (a UTS namespace): `unshare --uts` "
                    "works as root, or with unprivileged user namespaces; neither here")
    return prefix


@pytest.fixture
def e2e_database():
    if connection.vendor != "postgresql":
        pytest.skip("the end-to-end run needs PostgreSQL (many processes, LISTEN/NOTIFY)")


@pytest.fixture
async def cluster(tmp_path, monkeypatch, e2e_database):
    """The Kubernetes API emulator on a real port, with a kubeconfig naming it; after the
    test, every call the operator made must be within its Role."""
    from fullctl_operator.rbac import RULES

    async with serving(ClusterEmulator(), tmp_path, monkeypatch) as emulator:
        yield emulator
        used = {
            (c.group or "", c.resource + (f"/{c.subresource}" if c.subresource else ""), c.verb)
            for c in emulator.calls if c.resource and c.agent.startswith(OPERATOR_AGENTS)
        }
        outside = {p for p in used if p[2] not in RULES.get(p[:2], set())}
        assert not outside, f"calls outside the operator's Role: {outside}"


def child_env(**extra: str) -> dict[str, str]:
    """The environment of the pods and the operator: the e2e settings, the test database,
    the example project and the repository root importable, short heartbeats."""
    env = process_env(**{
        "DJANGO_SETTINGS_MODULE": E2E_SETTINGS,
        "DATABASE_URL": test_database_url(),
        "PYTHONUNBUFFERED": "1",
        "TASK_TRACK_INTERVAL_SECONDS": "0.5",
        **extra,
    })
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.pop("TASK_ORM_WORKER_ID", None)
    return env


def running_task_ids(pod_name: str) -> list[int]:
    return list(Task.objects.filter(status="running", queue_id__startswith=f"{pod_name}:")
                .values_list("pk", flat=True))


@pytest.fixture
async def kubelet(cluster, uts, tmp_path):
    """The pod runner: real pollers for the Deployments of the namespace. After the test,
    it must have met no trouble (a failed API call, a container that exited by itself).
    With ``FULLCTL_E2E_LIVE=1`` (``make cluster-demo``) a line per second shows the
    replicas and the queue."""
    async with PodRunner(
        cluster, NAMESPACE, base_env=child_env(), log_dir=tmp_path / "pods", uts=uts,
        running_tasks_of=lambda pod: db(running_task_ids, pod),
    ) as runner:
        view = None
        if os.environ.get("FULLCTL_E2E_LIVE"):
            view = asyncio.create_task(live_view(runner, cluster))
        try:
            yield runner
        finally:
            if view is not None:
                view.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await view
    assert not runner.errors, "the pod runner met trouble:\n" + runner.describe()


@pytest.fixture
async def operator(cluster, tmp_path):
    """The real operator, a child process (started by the test: ``operator.start()``)."""
    process = OperatorProcess(
        child_env(KUBECONFIG=str(cluster.kubeconfig),
                  FULLCTL_POOL_SETTINGS=json.dumps(
                      {"TASK_OPERATOR_INTERVAL_SECONDS": OPERATOR_TICK})),
        tmp_path / "operator.log",
    )
    yield process
    await process.stop()


@pytest.fixture
def runs(tmp_path):
    """Where the e2e tasks write down their runs (pass ``str(runs.path)`` as ``record``)."""
    return Runs(tmp_path / "runs.jsonl")
