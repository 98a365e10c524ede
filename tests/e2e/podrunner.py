"""A kubelet (and ReplicaSet controller) for the poller Deployments in the emulator.

kmock serves objects but runs no controllers: scaling a Deployment makes no pod appear.
``PodRunner`` plays both halves, the way Kubernetes does them:

* **ReplicaSet controller.** For each Deployment it compares ``spec.replicas`` with its
  live pods (not terminating). Too few: it creates Pod objects (through the API, labelled
  from the pod template plus ``pod-template-hash``). Too many: it deletes the surplus
  (through the API), chosen as the ReplicaSet controller chooses (``rank``): not running
  before running, not ready before ready, lowest ``controller.kubernetes.io/pod-deletion-cost``
  first, then the most recently ready, the most restarted, the newest.
* **kubelet.** For each pod it starts the pod template's container command as a real
  process (a real ``manage.py fullctl_poll_tasks``), in its own UTS namespace whose host
  name is the pod's name (as in a pod: ``socket.gethostname()`` is the pod name, which is
  what the tasks' ``queue_id`` carries), with ``HOSTNAME`` set to the pod's name and
  ``TASK_ORM_WORKER_ID`` unset. The phase is Running once the process is started; the
  ``Ready`` condition follows the chart's startup probe (``GET /health`` on the poller's
  health port answers 200). A container that exits by itself is restarted (restartPolicy
  Always). When the pod is deleted, by the operator or by the controller above, it sends
  SIGTERM to the container's main process, waits the pod's grace period
  (``terminationGracePeriodSeconds`` of the template, else 30 s), then SIGKILLs whatever
  is left of the container (its process group), and only then lets the Pod object go.

Graceful deletion: a real API server keeps a deleted pod, with ``deletionTimestamp``,
until the kubelet reports its containers stopped. kmock does that for objects with a
finalizer, so the runner's pods carry one (``GRACEFUL_DELETION``) that the kubelet half
removes when the processes are gone: meanwhile the operator sees the pod as terminating,
as it would in a cluster.

Every kill is recorded (``Kill``), with the tasks the pod was running when SIGTERM was
sent (running tasks whose ``queue_id`` starts with ``<pod name>:``, read just before and
just after the signal), so a test can assert that no pod was killed while busy.

Not emulated: liveness probes (the chart's allow a minute of failures, longer than any
scenario), scheduling, image pulls, rolling updates (the template never changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import kmock

DEPLOYMENTS = kmock.resource("apps/v1/deployments")
PODS = kmock.resource("v1/pods")
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
GRACEFUL_DELETION = "e2e.fullctl.io/graceful-deletion"
DEFAULT_GRACE = 30.0
LOOP = 0.05  # seconds between two passes of the controller loop
PROBE_EVERY = 0.1  # seconds between two startup probes of a pod


def uts_command() -> list[str] | None:
    """The prefix that runs a command in a new UTS namespace with the pod's host name
    (``PREFIX + [pod_name, *argv]``), or None where this machine cannot do that.

    As root ``unshare --uts`` is enough; otherwise an unprivileged user namespace may allow
    it (``--user --map-root-user``)."""
    for flags in (["--uts"], ["--user", "--map-root-user", "--uts"]):
        prefix = ["unshare", *flags, "--", "sh", "-c", 'hostname "$0" && exec "$@"']
        try:
            done = subprocess.run([*prefix, "e2e-probe", "hostname"], capture_output=True,
                                  text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode == 0 and done.stdout.strip() == "e2e-probe":
            return prefix
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def template_hash(template: Mapping[str, Any]) -> str:
    """A stand-in for the ReplicaSet's ``pod-template-hash``: stable per template."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return digest[:10]


@dataclass
class Kill:
    """One pod stopped by the kubelet: what it was running when SIGTERM went out."""

    pod: str
    deployment: str
    reason: str  # "scale-in" (the ReplicaSet controller's choice) or "deleted" (by a client)
    sigterm_at: float  # time.time()
    running_at_sigterm: tuple[int, ...]  # task ids
    exited_at: float = 0.0  # time.time(), the container's main process gone
    exit_code: int | None = None
    sigkilled: bool = False  # the grace period ran out

    @property
    def while_busy(self) -> bool:
        return bool(self.running_at_sigterm)


@dataclass
class RunningPod:
    """One pod the runner created, and its container process."""

    name: str
    deployment: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    grace: float
    log_path: Path
    health_port: int | None
    created_at: float = field(default_factory=time.time)
    process: subprocess.Popen | None = None
    log_file: Any = None
    started_at: float | None = None
    ready_at: float | None = None
    restarts: int = 0
    deleting: bool = False  # the controller (or a client) deleted it: it is terminating
    stopped: bool = False  # its processes are gone
    kill: Kill | None = None
    life: asyncio.Task | None = None
    terminate: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def ready(self) -> bool:
        return self.ready_at is not None and not self.deleting

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


RunningTasksOf = Callable[[str], Any]  # pod name -> awaitable of task ids


class PodRunner:
    """Plays the ReplicaSet controller and the kubelet for the Deployments of ``namespace``
    (see the module's docstring). ``running_tasks_of(pod)`` answers (awaitably) the ids of
    the running tasks whose ``queue_id`` starts with ``pod:``."""

    def __init__(self, cluster: Any, namespace: str, *, base_env: Mapping[str, str],
                 log_dir: Path, uts: list[str], running_tasks_of: RunningTasksOf):
        self.cluster = cluster
        self.namespace = namespace
        self.base_env = dict(base_env)
        self.log_dir = log_dir
        self.uts = uts
        self.running_tasks_of = running_tasks_of
        self.pods: dict[str, RunningPod] = {}
        self.kills: list[Kill] = []
        # (time.time(), deployment, spec.replicas, live pods, ready pods) on every change
        self.timeline: list[tuple[float, str, int, int, int]] = []
        self.errors: list[str] = []
        self._status: dict[str, dict] = {}
        self._loop_task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- life ------------------------------------------------------------------------

    async def __aenter__(self) -> PodRunner:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0))
        self._loop_task = asyncio.create_task(self._loop(), name="pod-runner")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self.shutdown()
        if self._session is not None:
            await self._session.close()

    async def shutdown(self) -> None:
        """End every pod at once (the test is over): SIGTERM twice (the poller then stops
        without waiting out its grace period, requeueing what runs), SIGKILL after 10 s."""
        for pod in self.pods.values():
            if pod.life is not None:
                pod.life.cancel()
        for pod in self.pods.values():
            if pod.life is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pod.life
        for pod in self.pods.values():
            self._signal(pod, signal.SIGTERM)
        await asyncio.sleep(0)
        for pod in self.pods.values():
            self._signal(pod, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for pod in self.pods.values():
            while pod.process and pod.process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(LOOP)
            self._kill_container(pod)
            if pod.log_file:
                pod.log_file.close()
                pod.log_file = None

    # -- what tests read -------------------------------------------------------------

    def live(self, deployment: str) -> list[RunningPod]:
        """The Deployment's pods that are not terminating."""
        return [p for p in self.pods.values() if p.deployment == deployment and not p.deleting]

    def ready(self, deployment: str) -> list[RunningPod]:
        return [p for p in self.live(deployment) if p.ready]

    def running(self, deployment: str) -> list[RunningPod]:
        """The Deployment's pods whose processes are still there (terminating ones too)."""
        return [p for p in self.pods.values() if p.deployment == deployment and not p.stopped]

    def kills_while_busy(self) -> list[Kill]:
        return [k for k in self.kills if k.while_busy]

    def max_live(self, deployment: str) -> int:
        return max((live for _, d, _, live, _ in self.timeline if d == deployment), default=0)

    def describe(self) -> str:
        """Pods and kills, for assertion messages."""
        lines = [f"{p.name}: pid={p.pid} ready={p.ready} deleting={p.deleting} "
                 f"stopped={p.stopped} restarts={p.restarts}" for p in self.pods.values()]
        lines += [f"kill {k}" for k in self.kills]
        lines += [f"error {e}" for e in self.errors]
        return "\n".join(lines)

    # -- the controller loop ---------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep going; the test sees it in describe()
                self.errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(LOOP)

    def _deployments(self) -> list[dict]:
        return [
            obj.raw for (resource, namespace, _), obj in list(self.cluster.objects.items())
            if resource == DEPLOYMENTS and namespace == self.namespace and not obj.deleted
        ]

    def _pod_object(self, name: str) -> dict | None:
        key = (PODS, self.namespace, name)
        if key not in self.cluster.objects:
            return None
        obj = self.cluster.objects[key]
        return None if obj.deleted else obj.raw

    async def _pass(self) -> None:
        for deployment in self._deployments():
            name = deployment["metadata"]["name"]
            spec = deployment.get("spec") or {}
            desired = spec.get("replicas")
            desired = 1 if desired is None else int(desired)
            mine = [p for p in self.pods.values() if p.deployment == name]
            # the kubelet: pods that a client deleted (the operator restarting a stale one)
            for pod in mine:
                obj = self._pod_object(pod.name)
                if not pod.deleting and (obj is None or obj["metadata"].get("deletionTimestamp")):
                    pod.deleting = True
                    self._begin_termination(pod, "deleted")
            live = [p for p in mine if not p.deleting]
            # the ReplicaSet controller
            if len(live) < desired:
                for _ in range(desired - len(live)):
                    await self._create_pod(deployment)
            elif len(live) > desired:
                for pod in sorted(live, key=self._rank)[: len(live) - desired]:
                    pod.deleting = True
                    await self._api("DELETE", self._pod_path(pod.name))
                    self._begin_termination(pod, "scale-in")
            await self._report(deployment, desired)

    def _rank(self, pod: RunningPod) -> tuple:
        """The ReplicaSet controller's order of deletion (first = deleted first): not yet
        running, not ready, lower deletion cost, more recently ready, more restarts, newer."""
        obj = self._pod_object(pod.name) or {}
        annotations = obj.get("metadata", {}).get("annotations") or {}
        try:
            cost = int(annotations.get(DELETION_COST, 0))
        except ValueError:
            cost = 0
        running = pod.started_at is not None
        return (running, pod.ready, cost, -(pod.ready_at or 0.0), -pod.restarts,
                -pod.created_at)

    async def _report(self, deployment: dict, desired: int) -> None:
        """The Deployment's status, as its controller keeps it (only when it changed)."""
        name = deployment["metadata"]["name"]
        live, ready = len(self.live(name)), len(self.ready(name))
        last = next((t for t in reversed(self.timeline) if t[1] == name), None)
        if last is None or last[2:] != (desired, live, ready):
            self.timeline.append((time.time(), name, desired, live, ready))
        status = {"replicas": live, "readyReplicas": ready, "availableReplicas": ready,
                  "updatedReplicas": live,
                  "observedGeneration": deployment["metadata"].get("generation", 1)}
        if self._status.get(name) != status:
            await self._api("PATCH", f"/apis/apps/v1/namespaces/{self.namespace}/deployments/"
                                     f"{name}/status", {"status": status})
            self._status[name] = status

    # -- pods ------------------------------------------------------------------------

    def _pod_path(self, name: str) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{name}"

    async def _api(self, method: str, path: str, body: dict | None = None) -> None:
        async with self.cluster.request(method, path, json=body) as response:
            if response.status >= 300 and not (method == "DELETE" and response.status == 404):
                raise RuntimeError(f"{method} {path}: {response.status} {await response.text()}")

    async def _create_pod(self, deployment: dict) -> RunningPod:
        dep_name = deployment["metadata"]["name"]
        template = deployment["spec"]["template"]
        pod_hash = template_hash(template)
        name = f"{dep_name}-{pod_hash}-{secrets.token_hex(3)[:5]}"
        pod_spec = template.get("spec") or {}
        [container] = pod_spec["containers"][:1]
        labels = {**(template.get("metadata", {}).get("labels") or {}),
                  "pod-template-hash": pod_hash}
        body = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "namespace": self.namespace, "labels": labels,
                "annotations": dict(template.get("metadata", {}).get("annotations") or {}),
                "finalizers": [GRACEFUL_DELETION],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                     "name": f"{dep_name}-{pod_hash}", "controller": True}],
            },
            "spec": {**pod_spec, "nodeName": "e2e-node"},
            "status": {"phase": "Pending"},
        }
        await self._api("POST", f"/api/v1/namespaces/{self.namespace}/pods", body)

        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        argv = [sys.executable if i == 0 and a == "python" else a for i, a in enumerate(argv)]
        health_port = None
        if "--health-port" in argv:  # one network namespace for all pods: a port each
            i = argv.index("--health-port") + 1
            health_port = free_port()
            argv[i] = str(health_port)
        env = {**self.base_env,
               **{e["name"]: str(e.get("value", "")) for e in container.get("env") or []},
               "HOSTNAME": name}
        env.pop("TASK_ORM_WORKER_ID", None)
        grace = pod_spec.get("terminationGracePeriodSeconds")
        pod = RunningPod(
            name=name, deployment=dep_name, argv=argv, env=env,
            cwd=container.get("workingDir") or os.getcwd(),
            grace=DEFAULT_GRACE if grace is None else float(grace),
            log_path=self.log_dir / f"{name}.log", health_port=health_port,
        )
        self.pods[name] = pod
        pod.life = asyncio.create_task(self._life(pod), name=f"pod {name}")
        return pod

    def _start_container(self, pod: RunningPod) -> None:
        if pod.log_file is None:
            pod.log_file = open(pod.log_path, "ab")  # noqa: SIM115 - closed at the end
        pod.process = subprocess.Popen(
            [*self.uts, pod.name, *pod.argv], cwd=pod.cwd, env=pod.env,
            stdout=pod.log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # the container: one process group, killed as one
        )
        pod.started_at = time.time()

    async def _life(self, pod: RunningPod) -> None:
        """The kubelet's work for one pod: run, probe, restart, and terminate on delete."""
        self._start_container(pod)
        await self._api("PATCH", self._pod_path(pod.name) + "/status",
                        {"status": {"phase": "Running", "podIP": "127.0.0.1"}})
        while not pod.terminate.is_set():
            if pod.process.poll() is not None:  # exited by itself: restartPolicy Always
                self.errors.append(f"{pod.name} exited with {pod.process.returncode}: "
                                   f"restarting it")
                self._kill_container(pod)
                pod.restarts += 1
                if pod.ready_at is not None:
                    pod.ready_at = None
                    await self._set_ready(pod, False)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pod.terminate.wait(), 1.0)  # back-off
                if pod.terminate.is_set():
                    break
                self._start_container(pod)
                continue
            if pod.ready_at is None and await self._probe(pod):
                pod.ready_at = time.time()
                await self._set_ready(pod, True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pod.terminate.wait(), PROBE_EVERY)
        await self._terminate(pod)

    async def _probe(self, pod: RunningPod) -> bool:
        """The chart's startupProbe: ``GET /health`` on the health port answers 200
        (without a health port: the process is running)."""
        if pod.health_port is None:
            return True
        try:
            assert self._session is not None
            async with self._session.get(f"http://127.0.0.1:{pod.health_port}/health") as r:
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def _set_ready(self, pod: RunningPod, ready: bool) -> None:
        if pod.deleting:
            return
        value = "True" if ready else "False"
        conditions = [{"type": t, "status": value} for t in ("Ready", "ContainersReady")]
        with contextlib.suppress(RuntimeError):  # deleted meanwhile
            await self._api("PATCH", self._pod_path(pod.name) + "/status",
                            {"status": {"conditions": conditions,
                                        "containerStatuses": [{"name": "poller",
                                                               "ready": ready,
                                                               "restartCount": pod.restarts}]}})

    def _begin_termination(self, pod: RunningPod, reason: str) -> None:
        pod.kill = Kill(pod.name, pod.deployment, reason, 0.0, ())
        pod.terminate.set()

    async def _terminate(self, pod: RunningPod) -> None:
        """SIGTERM, the grace period, SIGKILL; then the Pod object may go."""
        kill = pod.kill or Kill(pod.name, pod.deployment, "deleted", 0.0, ())
        before = await self._running_tasks(pod.name)
        kill.sigterm_at = time.time()
        self._signal(pod, signal.SIGTERM)
        after = await self._running_tasks(pod.name)
        kill.running_at_sigterm = tuple(sorted(set(before) | set(after)))
        deadline = time.monotonic() + pod.grace
        while pod.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(LOOP)
        if pod.process.poll() is None:
            kill.sigkilled = True
        self._kill_container(pod)
        kill.exited_at = time.time()
        kill.exit_code = pod.process.returncode
        pod.stopped = True
        self.kills.append(kill)
        if pod.log_file:
            pod.log_file.close()
            pod.log_file = None
        await self._api("PATCH", self._pod_path(pod.name),
                        {"metadata": {"finalizers": []}})

    async def _running_tasks(self, pod_name: str) -> tuple[int, ...]:
        try:
            return tuple(await self.running_tasks_of(pod_name))
        except Exception as exc:  # the record says so rather than the runner stopping
            self.errors.append(f"reading the running tasks of {pod_name}: {exc}")
            return ()

    @staticmethod
    def _signal(pod: RunningPod, signum: int) -> None:
        if pod.process is not None and pod.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                pod.process.send_signal(signum)

    @staticmethod
    def _kill_container(pod: RunningPod) -> None:
        """SIGKILL everything left in the container (its process group), and reap."""
        if pod.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pod.process.pid, signal.SIGKILL)
        pod.process.wait()
