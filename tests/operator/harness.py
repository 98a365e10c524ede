"""What the operator's tests share: a Kubernetes emulator (kmock) that kopf can live with,
the objects it serves, and a helper to reach the database (waiting with a deadline is
``helpers.async_wait_for``). The fixtures that start the emulator and the real operator
are in conftest.py."""

import contextlib
import itertools
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kmock
import kopf
import kubernetes.aio.config
import kubernetes.config
import pytest
import yaml
from fullctl_operator import handlers, observe

# a short tick so the tests run in seconds of real time (kopf's registry is global: the
# timer is registered once, here)
TICK = 0.2
handlers.register(TICK)

NAMESPACE = "pools"
TASKPOOLS = "tasks.fullctl.io/v1/taskpools"
DEPLOYMENTS = "apps/v1/deployments"
PODS = "v1/pods"


# -- logging in ------------------------------------------------------------------


def write_kubeconfig(path: Path, server: str, token: str | None = None) -> Path:
    """A kubeconfig whose one context is ``server`` (and a bearer token, if given)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "operator", "user": {"token": token} if token else {}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "operator"}}],
    }))
    return path


def use_kubeconfig(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Run the test as a process started outside a pod with ``KUBECONFIG=path``.

    Both kopf's default login (``login_via_client``: the ``kubernetes`` client) and the
    operator's client (``kubernetes.aio``) then find it, as in production. The variable
    alone is not enough in this process: each half of the client reads ``KUBECONFIG`` once,
    when its ``config`` package is imported, into ``kube_config.KUBE_CONFIG_DEFAULT_LOCATION``
    (what ``load_kube_config()`` opens when given no file), and ``import kopf`` imports the
    client long before a test runs. Those two constants get the value the import would
    have read. ``KUBERNETES_SERVICE_HOST`` goes: on a CI runner inside a pod, both logins
    would otherwise take the runner's service account, and its cluster.
    """
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for module in (kubernetes.config.kube_config, kubernetes.aio.config.kube_config):
        monkeypatch.setattr(module, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))


@contextlib.asynccontextmanager
async def serving(
    emulator: "Emulator", tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator["Emulator"]:
    """``emulator`` on a real port with the resources the operator uses, and
    ``KUBECONFIG`` naming it (``emulator.kubeconfig``), for the block's lifetime."""
    async with emulator, kmock.Server(emulator) as server:
        with warnings.catch_warnings():  # kmock 0.8 uses a deprecated importlib call
            warnings.simplefilter("ignore", DeprecationWarning)
            emulator.resources.load_bundled()
        emulator.resources[TASKPOOLS] = {
            "kind": "TaskPool", "singular": "taskpool", "namespaced": True,
            "shortnames": {"tp"}, "subresources": {"status"},
            "verbs": {"create", "delete", "get", "list", "patch", "update", "watch"},
        }
        emulator.kubeconfig = write_kubeconfig(
            tmp_path / "kubeconfig", str(server.url).rstrip("/")
        )
        use_kubeconfig(monkeypatch, emulator.kubeconfig)
        yield emulator


# -- the emulator ---------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request the emulator served, with when it arrived."""

    at: float  # time.monotonic()
    method: str
    path: str
    group: str | None
    resource: str | None
    name: str | None
    subresource: str | None
    data: Any
    params: dict
    agent: str
    authorization: str

    @property
    def verb(self) -> str:
        """The RBAC verb of this request."""
        if self.method == "GET":
            return "get" if self.name else "watch" if self.params.get("watch") == "true" \
                else "list"
        return {"POST": "create", "PATCH": "patch", "PUT": "update",
                "DELETE": "delete" if self.name else "deletecollection"}[self.method]


class Emulator(kmock.KubernetesEmulator):
    """kmock 0.8 plus what kopf and the operator rely on.

    kmock sets no ``resourceVersion`` (kopf's finalizer JSON-patch tests it and gets a 500
    without it), no ``uid``, ``creationTimestamp`` or ``generation``: they are filled in here
    on create and bumped on every patch. Every request is also logged with its time, for
    assertions on order and for the latency measurements. With ``token`` set, a request
    (other than the test's own) without that bearer token is answered 401.
    """

    kubeconfig: Path | None = None  # written by the fixture (conftest.py)
    token: str | None = None

    def _init_extras(self) -> None:
        if not hasattr(self, "calls"):
            self.calls: list[Call] = []
            self._versions = itertools.count(1)

    def next_version(self) -> str:
        self._init_extras()
        return str(next(self._versions))

    async def _handle(self, request: kmock.Request) -> Any:
        self._init_extras()
        if request.resource is not None:
            self._fill_metadata(request)
        resource = request.resource
        call = Call(
            time.monotonic(), request.method.value.upper(), request.url.path,
            None if resource is None else resource.group,
            None if resource is None else resource.plural, request.name, request.subresource,
            request.data, dict(request.params), request.headers.get("User-Agent", ""),
            request.headers.get("Authorization", ""),
        )
        self.calls.append(call)
        if self.token is not None and not call.agent.startswith("kmock") \
                and call.authorization != f"Bearer {self.token}":
            raise kmock.KubernetesError(status=401, reason="Unauthorized", message="Unauthorized")
        return await super()._handle(request)

    def _fill_metadata(self, request: kmock.Request) -> None:
        action, data = request.action, request.data
        if action == kmock.action.CREATE and isinstance(data, dict):
            stamp(data, self.next_version(), request.namespace)
        elif action == kmock.action.UPDATE and request.name is not None:
            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                return
            current = self.objects[key].get("metadata", {}).get("resourceVersion")
            for op in data if isinstance(data, list) else []:
                if op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion" \
                        and op.get("value") != current:
                    # as the API server answers: 422, which kopf takes as "retry next cycle"
                    raise kmock.KubernetesError(
                        status=422, reason="Invalid",
                        message=f"resourceVersion is {current}, not {op.get('value')}",
                    )
            version = self.next_version()
            if isinstance(data, list):  # JSON patch: after kopf's own "test" operations
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
            elif isinstance(data, dict):
                meta = data.setdefault("metadata", {})
                meta["resourceVersion"] = version
                if "spec" in data and request.subresource != "status":
                    old = self.objects[key].get("metadata", {}).get("generation") or 1
                    meta["generation"] = old + 1

    def put(self, resource: str, body: dict) -> dict:
        """Store an object directly (no watch event): for what the operator only reads."""
        meta = body["metadata"]
        stamp(body, self.next_version(), meta.get("namespace", NAMESPACE))
        self.objects[resource, meta["namespace"], meta["name"]] = body
        return body

    def operator_permissions(self) -> set[tuple[str, str, str]]:
        """(apiGroup, resource[/subresource], verb) of every API call the operator made
        (kopf's and its own), discovery excluded; the tests' own calls are not counted."""
        return {
            (c.group or "", c.resource + (f"/{c.subresource}" if c.subresource else ""), c.verb)
            for c in self.calls
            if c.resource and not c.agent.startswith("kmock")
        }

    def requests_for(self, method: str, resource: str, *, since: float = 0.0,
                     subresource: str | None = None, name: str | None = None) -> list[Call]:
        return [
            c for c in self.calls
            if c.method == method and c.resource == resource and c.at >= since
            and c.subresource == subresource and (name is None or c.name == name)
        ]


def stamp(body: dict, version: str, namespace: str | None) -> dict:
    """The metadata an API server adds on create."""
    meta = body.setdefault("metadata", {})
    if not meta.get("name") and meta.get("generateName"):
        meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    meta.setdefault("generation", 1)
    if namespace and not meta.get("namespace"):
        meta["namespace"] = namespace
    meta["resourceVersion"] = version
    return body


# -- objects ---------------------------------------------------------------------

POOL_LABELS = {"app.kubernetes.io/name": "fullctl-tasks", "app.kubernetes.io/component": "poller"}


def deployment(name: str, replicas: int, labels: dict | None = None) -> dict:
    labels = {**POOL_LABELS, "fullctl.io/pool": name, **(labels or {})}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": []}},
        },
    }


def pod(name: str, deployment_name: str, *, age: float = 3600.0, terminating: bool = False,
        labels: dict | None = None) -> dict:
    created = datetime.now(UTC) - timedelta(seconds=age)
    meta: dict[str, Any] = {
        "name": name, "namespace": NAMESPACE,
        "labels": labels if labels is not None else
        {**POOL_LABELS, "fullctl.io/pool": deployment_name},
        "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if terminating:
        meta["deletionTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {}}


def taskpool(name: str, deployment_name: str, **spec: Any) -> dict:
    return {
        "apiVersion": "tasks.fullctl.io/v1", "kind": "TaskPool",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"deployment": deployment_name, **spec},
    }


async def create_taskpool(cluster: Emulator, body: dict) -> None:
    """Through the API, as kubectl would: kopf sees it arrive on its watch stream."""
    path = f"/apis/tasks.fullctl.io/v1/namespaces/{NAMESPACE}/taskpools"
    async with cluster.post(path, json=body) as response:
        assert response.status < 300, await response.text()


def pool_status(cluster: Emulator, name: str) -> dict:
    obj = cluster.objects[TASKPOOLS, NAMESPACE, name]
    return dict(obj.raw.get("status") or {})


def replicas(cluster: Emulator, name: str) -> int:
    return cluster.objects[DEPLOYMENTS, NAMESPACE, name].raw["spec"]["replicas"]


CRD = Path(__file__).parents[2] / "charts/fullctl-tasks/crds/taskpools.tasks.fullctl.io.yaml"


def validate_taskpool(obj: dict) -> None:
    """Check a TaskPool against the CRD's OpenAPI schema (what the API server would do)."""
    import jsonschema
    import yaml

    if not CRD.exists():
        pytest.skip(f"{CRD} is not there yet")
    crd = yaml.safe_load(CRD.read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    jsonschema.validate(obj, version["schema"]["openAPIV3Schema"])


def condition(status: dict, kind: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


# -- the operator ---------------------------------------------------------------


@dataclass
class Operator:
    memo: kopf.Memo
    started: float = field(default_factory=time.monotonic)


async def db(fn: Callable[..., Any], *args: Any) -> Any:
    """ORM work from an async test: in a thread, like the operator's own."""
    return await observe.in_db_thread(fn, *args)
