"""The whole shape on one machine: kmock as the API server, the real operator as a child
process (``python -m fullctl_operator``), and real pollers as the pods of their
Deployments (``podrunner.PodRunner`` plays kubelet). This module holds the pieces; the
fixtures that start them are in conftest.py.

The emulator is the operator tests' own (``tests/operator/harness.py``: resourceVersion,
uid, creationTimestamp, generation, a 422 for a failed JSON-patch test, every request
logged), loaded from its file, plus hooks that let a scenario act at a chosen moment of the
operator's work (``ClusterEmulator.before``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "example"
# what the pods and the operator run with: the test settings plus the e2e task classes
E2E_SETTINGS = "tests.e2e.e2e_tasks.settings"
OPERATOR_TICK = 0.5  # seconds: TASK_OPERATOR_INTERVAL_SECONDS of the operator process


def _operator_harness() -> Any:
    """``tests/operator/harness.py``, as the module the operator tests import (``harness``)."""
    path = ROOT / "tests" / "operator" / "harness.py"
    loaded = sys.modules.get("harness")
    if loaded is not None and Path(getattr(loaded, "__file__", "")).resolve() == path:
        return loaded
    spec = importlib.util.spec_from_file_location("harness", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["harness"] = module
    spec.loader.exec_module(module)
    return module


operator_harness = _operator_harness()
NAMESPACE: str = operator_harness.NAMESPACE
TASKPOOLS: str = operator_harness.TASKPOOLS
DEPLOYMENTS: str = operator_harness.DEPLOYMENTS
PODS: str = operator_harness.PODS
Call = operator_harness.Call
db = operator_harness.db
pool_status = operator_harness.pool_status
replicas = operator_harness.replicas
taskpool = operator_harness.taskpool
validate_taskpool = operator_harness.validate_taskpool
write_kubeconfig = operator_harness.write_kubeconfig
use_kubeconfig = operator_harness.use_kubeconfig
serving = operator_harness.serving

OPERATOR_AGENTS = ("kopf", "fullctl-operator")  # the User-Agents of the operator's clients

Hook = Callable[[kmock.Request], Awaitable[None] | None]


class ClusterEmulator(operator_harness.Emulator):
    """The operator tests' emulator, plus ``before``: coroutines run on every request of
    the operator (kopf's or its own client's) before it is served, so a scenario can make
    something happen between two of the operator's calls."""

    def _init_extras(self) -> None:
        super()._init_extras()
        if not hasattr(self, "before"):
            self.before: list[Hook] = []

    async def _handle(self, request: kmock.Request) -> Any:
        self._init_extras()
        agent = request.headers.get("User-Agent", "")
        if self.before and agent.startswith(OPERATOR_AGENTS):
            for hook in list(self.before):
                result = hook(request)
                if asyncio.iscoroutine(result):
                    await result
        return await super()._handle(request)

    def operator_calls(self, method: str, resource: str, *, subresource: str | None = None,
                       since: float = 0.0) -> list[Any]:
        """The operator's requests (not the runner's or the test's), oldest first."""
        return [c for c in self.requests_for(method, resource, since=since,
                                             subresource=subresource)
                if c.agent.startswith(OPERATOR_AGENTS)]


def scale_patches(cluster: ClusterEmulator, deployment: str) -> list[tuple[float, int]]:
    """(time.monotonic(), replicas) of every scale patch the operator sent for it."""
    return [(c.at, c.data["spec"]["replicas"])
            for c in cluster.operator_calls("PATCH", "deployments", subresource="scale")
            if c.name == deployment]


def is_scale_in_step(cluster: ClusterEmulator, request: kmock.Request) -> bool:
    """Is this request the operator's first move of a scale-in: a pod's deletion cost, or
    a scale patch below the Deployment's current ``spec.replicas``?"""
    resource = request.resource
    if resource is None or request.method.value.upper() != "PATCH":
        return False
    data = request.data if isinstance(request.data, dict) else {}
    if resource.plural == "pods" and request.subresource is None:
        annotations = (data.get("metadata") or {}).get("annotations") or {}
        return "controller.kubernetes.io/pod-deletion-cost" in annotations
    if resource.plural == "deployments" and request.subresource == "scale":
        wanted = (data.get("spec") or {}).get("replicas")
        key = (DEPLOYMENTS, request.namespace, request.name)
        if wanted is None or key not in cluster.objects:
            return False
        return int(wanted) < int(cluster.objects[key].raw["spec"].get("replicas") or 0)
    return False


# -- objects ---------------------------------------------------------------------------

POLLER_LABELS = {"app.kubernetes.io/name": "fullctl-tasks",
                 "app.kubernetes.io/component": "poller"}


def poller_deployment(name: str, *, replicas: int, processes: int = 2,
                      grace_period: float = 5, termination_grace: float | None = None,
                      settings: dict | None = None) -> dict:
    """A poller Deployment as the chart renders one: ``fullctl_poll_tasks --processes N
    --grace-period G --health-port 8081``, the pool's settings in
    ``FULLCTL_POOL_SETTINGS`` and ``terminationGracePeriodSeconds`` above the poller's
    grace period (the chart adds 15 s; the scenarios less, to stay short)."""
    labels = {**POLLER_LABELS, "fullctl.io/pool": name}
    termination = grace_period + 3 if termination_grace is None else termination_grace
    command = ["python", "manage.py", "fullctl_poll_tasks", "--processes", str(processes),
               "--grace-period", f"{grace_period:g}", "--health-port", "8081"]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": termination,
                    "containers": [{
                        "name": "poller", "command": command, "workingDir": str(EXAMPLE_DIR),
                        "env": [{"name": "FULLCTL_POOL_SETTINGS",
                                 "value": json.dumps(settings or {})}],
                    }],
                },
            },
        },
    }


async def create(cluster: ClusterEmulator, body: dict) -> None:
    """Create an object through the API, as kubectl would (a TaskPool is checked against
    the CRD's schema first, as the API server would)."""
    if body["kind"] == "TaskPool":
        validate_taskpool(body)
    group_version = body["apiVersion"]
    plural = {"Deployment": "deployments", "TaskPool": "taskpools"}[body["kind"]]
    prefix = "/api" if group_version == "v1" else f"/apis/{group_version}"
    path = f"{prefix}/namespaces/{NAMESPACE}/{plural}"
    async with cluster.post(path, json=body) as response:
        assert response.status < 300, await response.text()


# -- the operator ----------------------------------------------------------------------


class OperatorProcess:
    """``python -m fullctl_operator --standalone --namespace NS --verbose`` as a child
    process: its own settings (``E2E_SETTINGS``), the test database, the emulator's
    kubeconfig, and a short tick (``TASK_OPERATOR_INTERVAL_SECONDS`` through the pool
    settings variable, which layers over the Django settings)."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"---- operator start {self.starts}\n".encode())
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fullctl_operator", "--standalone",
                 "--namespace", NAMESPACE, "--verbose"],
                cwd=EXAMPLE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Signal it and wait for it to exit (SIGKILL after ``timeout``); its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)
            deadline = time.monotonic() + timeout
            while self.process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        code = self.process.poll()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return code


# -- a live view (make cluster-demo) ---------------------------------------------------


def queue_counts() -> dict[str, int]:
    from django.db.models import Count

    from django_fullctl.models import Task

    return dict(Task.objects.values_list("status").annotate(n=Count("pk")).order_by())


async def live_view(runner: Any, cluster: ClusterEmulator, every: float = 1.0) -> None:
    """One line per ``every`` seconds: each Deployment's replicas (wanted/live/ready), the
    TaskPools' desired size, the queue by status and the kills so far."""
    started = time.monotonic()
    while True:
        counts = await db(queue_counts)
        deployments = sorted({d for _, d, *_ in runner.timeline})
        sizes = "  ".join(
            f"{d}: {replicas(cluster, d)}/{len(runner.live(d))}/{len(runner.ready(d))}"
            for d in deployments)
        desired = "  ".join(
            f"{name}->{(obj.raw.get('status') or {}).get('desiredReplicas')}"
            for (resource, _, name), obj in list(cluster.objects.items())
            if str(getattr(resource, "plural", "")) == "taskpools" and not obj.deleted)
        queue = " ".join(f"{k} {counts.get(k, 0)}" for k in ("pending", "running",
                                                               "completed", "failed"))
        print(f"[{time.monotonic() - started:6.1f}s] replicas wanted/live/ready {sizes or '-'}"
              f" | pools {desired or '-'} | {queue} | kills {len(runner.kills)}"
              f" (busy {len(runner.kills_while_busy())})", flush=True)
        await asyncio.sleep(every)  # a display's cadence, not a wait for a condition


# -- what the tasks wrote down ---------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One run of a task, from its ``start`` record to its ``end``/``interrupted`` one
    (``end`` is None when the run never reported one: its worker was killed)."""

    task: int
    attempt: int
    host: str
    pid: int
    start: float
    end: float | None
    outcome: str  # "end", "interrupted", or "lost"


class Runs:
    """The records of ``e2e_tasks.models.RecordedRun`` in one file."""

    def __init__(self, path: Path):
        self.path = path

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def runs(self) -> list[Run]:
        opened: dict[tuple, dict] = {}
        runs: list[Run] = []
        for record in self.records():
            key = (record["task"], record["attempt"], record["host"], record["pid"])
            if record["event"] == "start":
                opened[key] = record
            elif key in opened:
                start = opened.pop(key)
                runs.append(Run(record["task"], record["attempt"], record["host"],
                                record["pid"], start["at"], record["at"], record["event"]))
        for key, start in opened.items():
            runs.append(Run(*key, start["at"], None, "lost"))
        return sorted(runs, key=lambda r: (r.task, r.start))

    def by_task(self) -> dict[int, list[Run]]:
        tasks: dict[int, list[Run]] = {}
        for run in self.runs():
            tasks.setdefault(run.task, []).append(run)
        return tasks

    def ended(self) -> list[Run]:
        return [r for r in self.runs() if r.outcome == "end"]

    def run_twice(self) -> dict[int, list[Run]]:
        """Tasks that were started more than once (redone, wherever and whenever)."""
        return {task: runs for task, runs in self.by_task().items() if len(runs) > 1}

    def overlapping(self, ends: dict[str, float] | None = None) -> dict[int, list[Run]]:
        """Tasks with two runs at the same time. A run without an end is taken to last
        until its pod's processes were gone (``ends``: pod name -> time), else forever."""
        found = {}
        for task, runs in self.by_task().items():
            latest = float("-inf")
            for run in runs:  # sorted by start
                if run.start < latest:
                    found[task] = runs
                    break
                end = run.end if run.end is not None else (ends or {}).get(run.host,
                                                                           float("inf"))
                latest = max(latest, end)
        return found


def describe_runs(runs: Iterable[Run]) -> str:
    return "; ".join(f"task {r.task} attempt {r.attempt} on {r.host}:{r.pid} "
                     f"{r.outcome}{'' if r.end is None else f' after {r.end - r.start:.1f}s'}"
                     for r in runs)
