"""Checks of the Helm chart, the plain manifests in k8s/ and the Dockerfile, without a cluster.

Needs the tools from `tools/install-tools.sh` (.tools/bin/helm3, helm4, kubectl): the tests fail,
not skip, when they are missing. What needs a real API server (helm install, helm test, kubectl
apply) is out of reach here; everything up to that is checked: lint, schema, rendering with Helm 3
and Helm 4, kubernetes-validate (strict) for the built-in kinds, the CRD's own schema for
TaskPools, and the properties the rest of the project relies on.
"""

from __future__ import annotations

import copy
import filecmp
import functools
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fullctl_operator.pool import DEFAULTS as POOL_DEFAULTS
from fullctl_operator.rbac import RULES
from kubernetes_validate.utils import SchemaNotFoundError

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "fullctl-tasks"
CRD_FILE = CHART / "crds" / "taskpools.tasks.fullctl.io.yaml"
TOOLS = ROOT / ".tools" / "bin"
HERE = Path(__file__).resolve().parent
VALUES_ALL = HERE / "values-all.yaml"
K8S = ROOT / "k8s"
DOCS = ROOT / "docs" / "kubernetes.md"

KUBERNETES_VERSION = "1.35.0"
HELMS = ("helm3", "helm4")

# (release, namespace, values files) of each rendered scenario
SCENARIOS = {
    "defaults": ("fullctl-tasks", "default", ()),
    "all": ("acme", "prod", (VALUES_ALL,)),
}


STANDARD_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}

# volume sources the restricted Pod Security profile allows
RESTRICTED_VOLUME_SOURCES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "Pod"}


# ---------------------------------------------------------------- tools


def tool(name: str) -> Path:
    path = TOOLS / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{path.relative_to(ROOT)} is missing: run tools/install-tools.sh first",
            pytrace=False,
        )
    return path


def run(argv, *, env=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{shlex.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(params=HELMS)
def helm(request) -> Path:
    return tool(request.param)


@functools.cache
def render_text(helm_name: str, scenario: str, extra: tuple[str, ...] = ()) -> str:
    release, namespace, files = SCENARIOS[scenario]
    argv = [tool(helm_name), "template", release, CHART, "--namespace", namespace, "--include-crds"]
    for f in files:
        argv += ["--values", f]
    return run([*argv, *extra]).stdout


@functools.cache
def _render_objects(helm_name: str, scenario: str, extra: tuple[str, ...] = ()) -> tuple:
    return tuple(d for d in yaml.safe_load_all(render_text(helm_name, scenario, extra)) if d)


def render(helm_name: str, scenario: str, extra: tuple[str, ...] = ()) -> list[dict]:
    """The rendered objects (a deep copy: tests may modify them)."""
    return copy.deepcopy(list(_render_objects(helm_name, scenario, extra)))


def values(scenario: str) -> dict:
    """The scenario's values, each pool merged over pollerDefaults as the chart does."""
    data = yaml.safe_load((CHART / "values.yaml").read_text())
    for f in SCENARIOS[scenario][2]:
        data = merge(data, yaml.safe_load(Path(f).read_text()))
    data["pollers"] = [merge(data["pollerDefaults"], pool) for pool in data["pollers"]]
    return data


def merge(base, override):
    """Helm's values merge: maps merge recursively, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base.get(key), value) if key in base else value
        return out
    return override


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def one(objs, kind, name):
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(obj) -> dict:
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def env_map(container) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def argv_of(container) -> list[str]:
    return container.get("command", []) + container.get("args", [])


def flag(argv, name):
    assert argv.count(name) == 1, f"{name} expected once in {argv}"
    return argv[argv.index(name) + 1]


def pollers_by_pool(objs) -> dict[str, dict]:
    return {
        d["metadata"]["labels"]["tasks.fullctl.io/pool"]: d
        for d in by_kind(objs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "poller"
    }


# ---------------------------------------------------------------- CRD schema for TaskPools


def crd() -> dict:
    return yaml.safe_load(CRD_FILE.read_text())


def crd_jsonschema() -> dict:
    """The CRD's openAPIV3Schema as JSON schema: x-kubernetes-* keys dropped, and objects that do
    not preserve unknown fields refuse them (what pruning plus strict field validation do)."""

    def convert(node):
        if isinstance(node, list):
            return [convert(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: convert(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        if "properties" in node:  # property names are data, not keywords: convert values only
            out["properties"] = {k: convert(v) for k, v in node["properties"].items()}
        return out

    (version,) = crd()["spec"]["versions"]
    return convert(version["schema"]["openAPIV3Schema"])


def validate_taskpool(obj):
    jsonschema.Draft7Validator(
        crd_jsonschema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    ).validate(obj)


# ================================================================ tests: tools


def test_tools_are_the_pinned_major_versions():
    assert run([tool("helm3"), "version", "--short"]).stdout.startswith("v3.")
    assert run([tool("helm4"), "version", "--short"]).stdout.startswith("v4.")
    out = run([tool("kubectl"), "version", "--client", "-o", "json"]).stdout
    assert json.loads(out)["clientVersion"]["minor"].startswith("35")


# ================================================================ tests: lint, schema


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict(helm, scenario):
    argv = [helm, "lint", "--strict", CHART]
    for f in SCENARIOS[scenario][2]:
        argv += ["--values", f]
    out = run(argv).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm3_and_helm4_render_the_same(scenario):
    assert render_text("helm3", scenario) == render_text("helm4", scenario)


BAD_VALUES = {
    "typo top-level key": ("operater:\n  enabled: false\n", "operater"),
    "typo nested key": ("web:\n  replica: 3\n", "replica"),
    "typo in a pool": ("pollers:\n  - name: default\n    gracePeriod: 30\n", "gracePeriod"),
    "typo in pool defaults": ("pollerDefaults:\n  autoscale:\n    maxReplica: 3\n", "maxReplica"),
    "negative count": ("web:\n  replicas: -1\n", "replicas"),
    "negative processes": ("pollers:\n  - name: default\n    processes: -2\n", "processes"),
    "pool without a name": ("pollers:\n  - processes: 2\n", "name"),
    "bad pool name": ("pollers:\n  - name: Not_A_Label\n", "name"),
    "wrong type": ("web:\n  workers: two\n", "workers"),
    "wrong type bool": ("operator:\n  enabled: 'yes'\n", "enabled"),
    "root user": ("securityContext:\n  runAsUser: 0\n", "runAsUser"),
    "bad quantity": ("web:\n  resources:\n    limits:\n      memory: lots\n", "memory"),
    # refused by the templates (the schema cannot express these)
    "two databases": ("database:\n  existingSecret: mydb\n", "not both"),
    "no database": ("database:\n  postgresql:\n    enabled: false\n", "existingSecret"),
    "duplicate pools": ("pollers:\n  - name: twin\n  - name: twin\n", "used twice"),
    "min above max": (
        "pollers:\n  - name: default\n    autoscale: {minReplicas: 5, maxReplicas: 2}\n",
        "above maxReplicas",
    ),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_values_are_refused(helm, case, tmp_path):
    text, needle = BAD_VALUES[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = run([helm, "template", "x", CHART, "--values", bad], check=False)
    assert proc.returncode != 0, f"{case}: accepted\n{proc.stdout[:500]}"
    assert needle in proc.stderr, proc.stderr


# ================================================================ tests: validation


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_objects_validate_strictly(scenario):
    """kubernetes-validate --strict for built-in kinds (helm3 renders the same bytes, see above);
    TaskPools against the CRD's schema."""
    objs = render("helm4", scenario)
    kinds = set()
    for obj in objs:
        kinds.add(obj["kind"])
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"] == "tasks.fullctl.io/v1":
            validate_taskpool(obj)
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except SchemaNotFoundError as exc:
            pytest.fail(f"{where}: {exc.message}")
    expected = {
        "CustomResourceDefinition",
        "Deployment",
        "Job",
        "Pod",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "TaskPool",
    }
    assert expected <= kinds


def test_taskpool_schema_refuses_what_it_should():
    good = one(render("helm4", "all"), "TaskPool", "acme-tasks-poller-important")
    validate_taskpool(good)
    minimal = {
        "apiVersion": "tasks.fullctl.io/v1",
        "kind": "TaskPool",
        "metadata": {"name": "x"},
        "spec": {"deployment": "pollers"},
    }
    validate_taskpool(minimal)
    # min above max is the operator's to report, not the schema's to refuse
    validate_taskpool({**minimal, "spec": {"deployment": "p", "minReplicas": 5, "maxReplicas": 1}})
    # settings and status keep unknown fields
    validate_taskpool(
        {
            **minimal,
            "spec": {"deployment": "p", "settings": {"ANY": {"x": [1]}}},
            "status": {"kopf": {"progress": {}}, "pending": 3},
        }
    )
    bad_specs = [
        {},  # no deployment
        {"deployment": ""},
        {"deployment": "Not_A_Name"},
        {"deployment": "p", "minReplicas": -1},
        {"deployment": "p", "tasksPerReplica": 0},
        {"deployment": "p", "staleHeartbeatSeconds": 0},
        {"deployment": "p", "maxReplicas": "10"},
        {"deployment": "p", "restartStalePods": "yes"},
        {"deployment": "p", "ops": ["ok", 3]},
        {"deployment": "p", "unknownField": 1},
    ]
    for spec in bad_specs:
        with pytest.raises(jsonschema.ValidationError):
            validate_taskpool({**minimal, "spec": spec})
    with pytest.raises(jsonschema.ValidationError):
        validate_taskpool({k: v for k, v in minimal.items() if k != "spec"})


def test_crd_contract():
    doc = crd()
    spec = doc["spec"]
    assert doc["metadata"]["name"] == "taskpools.tasks.fullctl.io"
    assert spec["group"] == "tasks.fullctl.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "TaskPool",
        "listKind": "TaskPoolList",
        "plural": "taskpools",
        "singular": "taskpool",
        "shortNames": ["tp"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = [(c["name"], c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Deployment", "string", ".spec.deployment"),
        ("Pending", "integer", ".status.pending"),
        ("Running", "integer", ".status.running"),
        ("Desired", "integer", ".status.desiredReplicas"),
        ("Ready", "integer", ".status.currentReplicas"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["required"] == ["spec"]
    s = schema["properties"]["spec"]
    assert "x-kubernetes-preserve-unknown-fields" not in s
    assert s["required"] == ["deployment"]
    p = s["properties"]
    defaults = {k: v.get("default") for k, v in p.items()}
    # the operator applies the same defaults in code (kmock, like old clusters, may not)
    assert defaults == {"deployment": None, **POOL_DEFAULTS}
    assert p["deployment"]["minLength"] == 1
    assert (p["minReplicas"]["minimum"], p["maxReplicas"]["minimum"]) == (0, 0)
    assert p["tasksPerReplica"]["minimum"] == 1
    assert p["staleHeartbeatSeconds"]["minimum"] == 1
    assert p["scaleDownDelaySeconds"]["minimum"] == 0
    assert p["settings"]["type"] == "object"
    assert p["settings"]["x-kubernetes-preserve-unknown-fields"] is True
    assert p["ops"]["type"] == "array" and p["ops"]["items"]["type"] == "string"
    status = schema["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    types = {k: v["type"] for k, v in status["properties"].items()}
    assert types == {
        "pending": "integer",
        "running": "integer",
        "desiredReplicas": "integer",
        "currentReplicas": "integer",
        "busyPods": "integer",
        "lastScaleTime": "string",
        "lastDecision": "string",
        "restartedPods": "integer",
        "observedGeneration": "integer",
        "conditions": "array",
    }
    assert status["properties"]["lastScaleTime"]["format"] == "date-time"
    condition = status["properties"]["conditions"]["items"]["properties"]
    assert set(condition) == {"type", "status", "reason", "message", "lastTransitionTime"}


def test_rendered_crd_is_the_file(helm):
    objs = render(helm.name, "defaults")
    assert by_kind(objs, "CustomResourceDefinition") == [crd()]


# ================================================================ tests: workloads


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_probes(scenario):
    objs = render("helm4", scenario)
    for name, deployment in pollers_by_pool(objs).items():
        (c,) = pod_spec(deployment)["containers"]
        for probe in ("livenessProbe", "startupProbe"):
            assert c[probe]["httpGet"] == {"path": "/health", "port": 8081}, (name, probe)
        assert "readinessProbe" not in c
    (operator,) = [
        d
        for d in by_kind(objs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    (c,) = pod_spec(operator)["containers"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    web = [
        d
        for d in by_kind(objs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "web"
    ]
    (c,) = pod_spec(web[0])["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health?exclude=heartbeats,backlog"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health?exclude=database,heartbeats,backlog"
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] == 8000
    assert [p["containerPort"] for p in c["ports"]] == [8000]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_poller_commands_and_grace(scenario):
    objs = render("helm4", scenario)
    pools = {p["name"]: p for p in values(scenario)["pollers"]}
    deployments = pollers_by_pool(objs)
    assert set(deployments) == set(pools)
    for name, pool in pools.items():
        spec = pod_spec(deployments[name])
        (c,) = spec["containers"]
        argv = argv_of(c)
        assert argv[:3] == ["python", "manage.py", "fullctl_poll_tasks"]
        assert flag(argv, "--processes") == str(pool["processes"])
        assert flag(argv, "--grace-period") == str(pool["gracePeriodSeconds"])
        assert flag(argv, "--health-port") == "8081"
        if pool["maxTasksPerProcess"]:
            assert flag(argv, "--max-tasks-per-process") == str(pool["maxTasksPerProcess"])
        else:
            assert "--max-tasks-per-process" not in argv
        assert spec["terminationGracePeriodSeconds"] > pool["gracePeriodSeconds"]
        assert spec["terminationGracePeriodSeconds"] == pool["gracePeriodSeconds"] + 15


def test_pods_wait_for_migrations():
    """Defaults: web, poller and operator pods wait in an init container until the schema is
    migrated; values-all turns it off (migrate.waitInPods: false)."""
    for obj in by_kind(render("helm4", "defaults"), "Deployment"):
        (init,) = pod_spec(obj)["initContainers"]
        assert init["name"] == "wait-for-migrations"
        assert init["command"][:2] == ["/bin/sh", "-c"]
        assert "python manage.py migrate --check" in init["command"][2]
        assert set(env_map(init)) >= {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}
    for obj in by_kind(render("helm4", "all"), "Deployment"):
        assert "initContainers" not in pod_spec(obj)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_operator_deployment(scenario):
    objs = render("helm4", scenario)
    (operator,) = [
        d
        for d in by_kind(objs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    spec = pod_spec(operator)
    (c,) = spec["containers"]
    assert argv_of(c) == [
        "python",
        "-m",
        "fullctl_operator",
        "--standalone",
        "--namespace",
        "$(POD_NAMESPACE)",
        "--liveness=http://0.0.0.0:8080/healthz",
    ]
    assert env_map(c)["POD_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    (sa,) = by_kind(objs, "ServiceAccount")
    assert spec["serviceAccountName"] == sa["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is True


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_operator_role_grants_exactly_what_it_needs(scenario):
    objs = render("helm4", scenario)
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterRoleBinding")
    (role,) = by_kind(objs, "Role")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames, no URLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    for (group, resource), verbs in granted.items():
        assert "*" not in verbs and "*" not in (group, resource)
        assert (group, resource) in RULES, f"unexpected grant on {group}/{resource}"
        extra = verbs - RULES[(group, resource)]
        assert not extra, f"{group}/{resource}: extra verbs {extra}"
    assert granted == RULES
    (binding,) = by_kind(objs, "RoleBinding")
    (sa,) = by_kind(objs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": sa["metadata"]["name"],
            "namespace": SCENARIOS[scenario][1],
        }
    ]


def test_operator_disabled_renders_no_operator():
    objs = render("helm4", "defaults", ("--set", "operator.enabled=false"))
    kinds = {o["kind"] for o in objs}
    assert not kinds & {"Role", "RoleBinding", "ServiceAccount"}
    assert "fullctl-tasks-operator" not in {o["metadata"]["name"] for o in objs}
    assert by_kind(objs, "TaskPool"), "TaskPools stay: an operator may run elsewhere"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_restricted_pod_security(scenario):
    objs = render("helm4", scenario)
    workloads = [o for o in objs if o["kind"] in WORKLOAD_KINDS]
    assert len(workloads) >= 5
    for obj in workloads:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        spec = pod_spec(obj)
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0, where
        assert psc.get("runAsGroup", 1) > 0, where
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(forbidden), where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            assert set(v) - {"name"} <= RESTRICTED_VOLUME_SOURCES, (where, v)
        assert "emptyDir" in volumes["tmp"], where
        expected_automount = obj["metadata"]["name"].endswith("-operator")
        assert spec["automountServiceAccountToken"] is expected_automount, where
        for c in containers(spec):
            cwhere = f"{where} container {c['name']}"
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, cwhere
            assert sc["readOnlyRootFilesystem"] is True, cwhere
            assert sc["capabilities"] == {"drop": ["ALL"]}, cwhere
            assert not sc.get("privileged"), cwhere
            assert sc.get("runAsNonRoot", True) is True, cwhere
            assert sc.get("runAsUser", 1) > 0, cwhere
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (cwhere, kind)
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert mounts.get("/tmp") == "tmp", cwhere


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_autoscaled_deployments_leave_replicas_to_the_operator(scenario):
    objs = render("helm4", scenario)
    deployments = pollers_by_pool(objs)
    for pool in values(scenario)["pollers"]:
        spec = deployments[pool["name"]]["spec"]
        if pool["autoscale"]["enabled"]:
            assert "replicas" not in spec, pool["name"]
        else:
            assert spec["replicas"] == pool["replicas"], pool["name"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_taskpools_mirror_the_pools(scenario):
    objs = render("helm4", scenario)
    deployments = {d["metadata"]["name"]: d for d in by_kind(objs, "Deployment")}
    pools = values(scenario)["pollers"]
    taskpools = by_kind(objs, "TaskPool")
    assert len(taskpools) == sum(1 for p in pools if p["autoscale"]["enabled"])
    for tp in taskpools:
        deployment = deployments[tp["spec"]["deployment"]]
        pool_name = deployment["metadata"]["labels"]["tasks.fullctl.io/pool"]
        (pool,) = [p for p in pools if p["name"] == pool_name]
        (c,) = pod_spec(deployment)["containers"]
        env_settings = json.loads(env_map(c)["FULLCTL_POOL_SETTINGS"]["value"])
        assert tp["spec"]["settings"] == env_settings == pool["settings"]
        autoscale = pool["autoscale"]
        for key in (
            "minReplicas",
            "maxReplicas",
            "tasksPerReplica",
            "scaleDownDelaySeconds",
            "staleHeartbeatSeconds",
            "restartStalePods",
        ):
            assert tp["spec"][key] == autoscale[key], key
        assert tp["spec"].get("ops", []) == autoscale["ops"]
        assert tp["metadata"]["namespace"] == deployment["metadata"]["namespace"]


def test_pools_merge_over_poller_defaults():
    """values-all: pool settings merge key by key over pollerDefaults; false and 0 override."""
    objs = render("helm4", "all")
    pollers = pollers_by_pool(objs)
    (c,) = pod_spec(pollers["fixed"])["containers"]
    assert json.loads(env_map(c)["FULLCTL_POOL_SETTINGS"]["value"]) == {"ACME_REGION": "eu-west"}
    assert pollers["fixed"]["spec"]["replicas"] == 3
    assert pod_spec(pollers["fixed"])["terminationGracePeriodSeconds"] == 25
    (c,) = pod_spec(pollers["important"])["containers"]
    settings = json.loads(env_map(c)["FULLCTL_POOL_SETTINGS"]["value"])
    assert settings["ACME_REGION"] == "eu-west" and settings["IMPORTANT_SETTING"] is True
    tp = one(objs, "TaskPool", "acme-tasks-poller-important")
    assert tp["spec"]["minReplicas"] == 0 and tp["spec"]["restartStalePods"] is False
    pdb = one(objs, "PodDisruptionBudget", "acme-tasks-poller-important")
    assert pdb["spec"]["maxUnavailable"] == "25%"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_selectors_include_component(scenario):
    objs = render("helm4", scenario)
    for obj in objs:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in {"Deployment", "StatefulSet", "PodDisruptionBudget"}:
            selector = obj["spec"]["selector"]["matchLabels"]
        elif obj["kind"] == "Service":
            selector = obj["spec"]["selector"]
        else:
            continue
        assert "app.kubernetes.io/component" in selector, where
        assert "app.kubernetes.io/instance" in selector, where
        if selector["app.kubernetes.io/component"] == "poller":
            assert "tasks.fullctl.io/pool" in selector, where
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            template_labels = obj["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= template_labels.items(), where


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_services_reach_pods(scenario):
    objs = render("helm4", scenario)
    pods = [
        o["spec"]["template"]["metadata"]["labels"]
        for o in objs
        if o["kind"] in {"Deployment", "StatefulSet"}
    ]
    for svc in by_kind(objs, "Service"):
        selector = svc["spec"]["selector"]
        assert sum(selector.items() <= labels.items() for labels in pods) == 1, svc["metadata"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_standard_labels(scenario):
    objs = render("helm4", scenario)
    for obj in objs:
        if obj["kind"] == "CustomResourceDefinition":
            continue  # crds/ is not templated
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert set(obj["metadata"]["labels"]) >= STANDARD_LABELS, where
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "fullctl-tasks"
        if obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
            assert set(obj["spec"]["template"]["metadata"]["labels"]) >= STANDARD_LABELS, where


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_secrets_come_from_secrets(scenario):
    objs = render("helm4", scenario)
    v = values(scenario)
    django_containers = 0
    for obj in objs:
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        for c in containers(pod_spec(obj)):
            env = env_map(c)
            for e in env.values():
                assert "postgresql://" not in e.get("value", ""), (obj["metadata"]["name"], e)
            if c["name"] == "postgresql":
                assert "secretKeyRef" in env["POSTGRES_PASSWORD"]["valueFrom"]
                continue
            django_containers += 1
            for name in ("DATABASE_URL", "DJANGO_SECRET_KEY"):
                assert set(env[name]) == {"name", "valueFrom"}, (obj["metadata"]["name"], name)
                assert "secretKeyRef" in env[name]["valueFrom"]
            assert env["DJANGO_SETTINGS_MODULE"]["value"] == v["settingsModule"]
    assert django_containers >= 5
    if v["database"]["existingSecret"]:
        assert not by_kind(objs, "Secret"), "existing secrets: the chart renders none"
        (c,) = pod_spec(one(objs, "Deployment", "acme-tasks-web"))["containers"]
        assert env_map(c)["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": v["database"]["existingSecret"],
            "key": v["database"]["key"],
        }
        assert env_map(c)["DJANGO_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": v["secretKey"]["existingSecret"],
            "key": v["secretKey"]["key"],
        }


def test_extra_env_and_django_env():
    objs = render("helm4", "all")
    (c,) = pod_spec(one(objs, "Deployment", "acme-tasks-web"))["containers"]
    env = env_map(c)
    assert env["SENTRY_ENVIRONMENT"]["value"] == "production"
    assert env["SENTRY_DSN"]["valueFrom"]["secretKeyRef"]["name"] == "acme-sentry"
    assert env["DJANGO_DEBUG"]["value"] == "1"
    assert env["TASK_TRACK_INTERVAL_SECONDS"]["value"] == "5"
    assert env["DJANGO_ALLOWED_HOSTS"]["value"] == (
        "tasks.acme.invalid,tasks-internal.acme.invalid,localhost"
    )
    assert c["command"][:2] == ["gunicorn", "acme.wsgi:application"]
    defaults = env_map(
        pod_spec(one(render("helm4", "defaults"), "Deployment", "fullctl-tasks-web"))["containers"][
            0
        ]
    )
    assert defaults["DJANGO_DEBUG"]["value"] == "0"
    assert "TASK_TRACK_INTERVAL_SECONDS" not in defaults


def test_web_command():
    objs = render("helm4", "defaults")
    (c,) = pod_spec(one(objs, "Deployment", "fullctl-tasks-web"))["containers"]
    argv = c["command"]
    assert argv[:2] == ["gunicorn", "example_project.wsgi"]
    assert flag(argv, "--bind") == "0.0.0.0:8000"
    assert flag(argv, "--worker-tmp-dir") == "/tmp"
    svc = one(objs, "Service", "fullctl-tasks-web")
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]


# ================================================================ tests: hooks, secrets, postgres


def hook(obj) -> tuple[str, int]:
    annotations = obj["metadata"].get("annotations", {})
    return annotations.get("helm.sh/hook", ""), int(annotations.get("helm.sh/hook-weight", "0"))


def test_migration_with_bundled_postgresql():
    # first install: the database is created by the install itself, so the Job is a plain
    # resource started beside PostgreSQL and the pods (which wait for it)
    objs = render("helm4", "defaults")
    secret = one(objs, "Secret", "fullctl-tasks")
    job = one(objs, "Job", "fullctl-tasks-migrate-install")
    assert hook(job)[0] == ""
    assert not [o for o in objs if o["metadata"]["name"] == "fullctl-tasks-migrate"]
    # the Secret exists before anything else: postgres, the Job and the pods all read it
    assert hook(secret) == ("pre-install,pre-upgrade", -10)
    spec = pod_spec(job)
    (wait,) = spec["initContainers"]
    assert wait["name"] == "wait-for-database"
    assert wait["command"][:2] == ["python", "-c"]
    assert "ensure_connection" in wait["command"][2]
    (migrate,) = spec["containers"]
    assert migrate["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert spec["restartPolicy"] == "Never"
    for obj in objs:
        if obj["kind"] in {"StatefulSet", "Deployment", "Service", "TaskPool"}:
            assert hook(obj)[0] == "", obj["metadata"]["name"]
    # upgrades: the hook, after the Secret hook, before the new pods
    upgrade = render("helm4", "defaults", ("--is-upgrade",))
    job = one(upgrade, "Job", "fullctl-tasks-migrate")
    assert hook(job) == ("pre-install,pre-upgrade", 0)
    assert hook(one(upgrade, "Secret", "fullctl-tasks"))[1] < hook(job)[1]
    assert not [o for o in upgrade if o["metadata"]["name"] == "fullctl-tasks-migrate-install"]


def test_hooks_with_existing_database():
    objs = render("helm4", "all")
    job = one(objs, "Job", "acme-tasks-migrate")
    assert hook(job) == ("pre-install,pre-upgrade", 0)
    assert (
        pod_spec(job)["initContainers"][0]["command"]
        == pod_spec(one(render("helm4", "defaults"), "Job", "fullctl-tasks-migrate-install"))[
            "initContainers"
        ][0]["command"]
    )
    assert not by_kind(objs, "StatefulSet")
    test_pod = one(objs, "Pod", "acme-tasks-test-sumtask")
    assert hook(test_pod)[0] == "test"
    assert test_pod["spec"]["containers"][0]["command"] == values("all")["tests"]["command"]


def test_generated_secret_offline():
    """Rendered without a cluster the generated values are fixed placeholders (so k8s/ is
    reproducible); DATABASE_URL points at the bundled PostgreSQL Service."""
    import base64

    objs = render("helm4", "defaults")
    data = {
        k: base64.b64decode(v).decode()
        for k, v in one(objs, "Secret", "fullctl-tasks")["data"].items()
    }
    assert set(data) == {"DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "DATABASE_URL"}
    assert data["DATABASE_URL"] == (
        f"postgresql://fullctl:{data['POSTGRES_PASSWORD']}@fullctl-tasks-postgresql:5432/fullctl"
    )
    one(objs, "Service", "fullctl-tasks-postgresql")
    given = render("helm4", "defaults", ("--set", "database.postgresql.password=s3cret-pw"))
    data = {
        k: base64.b64decode(v).decode()
        for k, v in one(given, "Secret", "fullctl-tasks")["data"].items()
    }
    assert data["DATABASE_URL"].startswith("postgresql://fullctl:s3cret-pw@")


def test_bundled_postgresql():
    objs = render("helm4", "defaults")
    sts = one(objs, "StatefulSet", "fullctl-tasks-postgresql")
    spec = pod_spec(sts)
    assert spec["securityContext"]["runAsUser"] == 999
    (c,) = spec["containers"]
    image = c["image"]
    assert re.fullmatch(r"postgres:\d+\.\d+-[a-z]+", image), f"pin the postgres tag: {image}"
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/var/lib/postgresql", "/var/run/postgresql", "/tmp"} <= mounts
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["run"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_helm_test_pod():
    objs = render("helm4", "defaults")
    pod = one(objs, "Pod", "fullctl-tasks-test-sumtask")
    assert hook(pod)[0] == "test"
    (c,) = pod["spec"]["containers"]
    assert c["command"][:4] == ["python", "manage.py", "shell", "-c"]
    assert "SumTask.create_task(2, 3)" in c["command"][4]
    assert "t.result == 5" in c["command"][4]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert not [
        o
        for o in render("helm4", "defaults", ("--set", "tests.enabled=false"))
        if o["kind"] == "Pod"
    ]


def test_notes_show_how_to_watch_and_scale():
    """NOTES.txt, rendered by Helm 4's client-side dry run (Helm 3's needs a cluster)."""
    env = {**os.environ, "KUBECONFIG": str(ROOT / ".tools" / "no-kubeconfig")}
    out = run(
        [tool("helm4"), "install", "fullctl-tasks", CHART, "--dry-run=client"], env=env
    ).stdout
    notes = out[out.index("NOTES:") :]
    for needle in (
        "logs -f -l app.kubernetes.io/instance=fullctl-tasks,app.kubernetes.io/component=poller",
        "port-forward service/fullctl-tasks-web 8000:80",
        "curl http://localhost:8000/health",
        "createsuperuser",
        "get taskpools",
        "scale deployment/fullctl-tasks-poller-default",
        "helm test fullctl-tasks",
    ):
        assert needle in notes, needle


# ================================================================ tests: k8s/


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("helm_name", HELMS)
def test_k8s_is_in_sync_with_the_chart(helm_name, tmp_path):
    env = {**os.environ, "HELM": str(tool(helm_name))}
    run([ROOT / "tools" / "render-k8s.sh", tmp_path / "k8s"], env=env)
    fresh, committed = read_tree(tmp_path / "k8s"), read_tree(K8S)
    assert sorted(fresh) == sorted(committed), "run tools/render-k8s.sh"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"k8s/ out of date ({stale}): run tools/render-k8s.sh"
    assert filecmp.dircmp(tmp_path / "k8s", K8S).diff_files == []


def test_kustomize_builds_the_chart_defaults():
    out = run([tool("kubectl"), "kustomize", K8S]).stdout
    built = [d for d in yaml.safe_load_all(out) if d]
    chart = [o for o in render("helm4", "defaults") if o["kind"] != "Pod"]  # no helm test pod

    def key(o):
        return (o["kind"], o["metadata"]["name"])

    assert sorted(map(key, built)) == sorted(map(key, chart))
    chart_by_key = {key(o): o for o in chart}
    for obj in built:
        assert obj == chart_by_key[key(obj)], key(obj)


# ================================================================ tests: docs, Dockerfile


def docs() -> tuple[list[str], dict[str, str]]:
    """docs/kubernetes.md: the shell commands of its ```sh blocks, and the files it spells out
    (a fenced block right after an `<!-- file: NAME -->` comment)."""
    commands: list[str] = []
    files: dict[str, str] = {}
    lines = DOCS.read_text().splitlines()
    pending_file = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = re.fullmatch(r"<!-- file: (\S+) -->", line.strip())
        if marker:
            pending_file = marker.group(1)
        elif line.startswith("```") and line.strip() != "```":
            info = line[3:].strip()
            body = []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if pending_file:
                files[pending_file] = "\n".join(body) + "\n"
                pending_file = None
            elif info == "sh":
                commands += [ln for ln in body if ln.strip() and not ln.startswith("#")]
        i += 1
    return commands, files


def test_docs_helm_commands_render(helm, tmp_path):
    """Every helm command of the guide, as `helm template` (install and upgrade need a cluster),
    with the values files the guide spells out."""
    commands, files = docs()
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    helm_commands = [shlex.split(c) for c in commands if c.startswith("helm ")]
    assert len(helm_commands) >= 6
    for tokens in helm_commands:
        if "|" in tokens:
            tokens = tokens[: tokens.index("|")]
        verb, rest = tokens[1], tokens[2:]
        if verb in {"test", "uninstall"}:
            assert rest[0] == "fullctl-tasks", tokens
            continue
        if verb == "install":
            argv = ["template", *rest]
        elif verb == "upgrade":
            argv = ["template", *[t for t in rest if t != "--install"], "--is-upgrade"]
        else:
            assert verb in {"lint", "template"}, tokens
            argv = [verb, *rest]
        for i, token in enumerate(argv):
            if argv[i - 1] in {"-f", "--values"}:
                assert token in files, f"{token} is not spelled out in the guide"
                argv[i] = str(tmp_path / token)
        run([helm, *argv])


def test_docs_secrets_match_the_values():
    """`kubectl create secret generic NAME --from-literal=KEY=...` in the guide: the production
    values refer to exactly those names and keys."""
    commands, files = docs()
    created = set()
    for command in commands:
        m = re.match(r"kubectl .*create secret generic (\S+) --from-literal=([A-Za-z_]+)=", command)
        if m:
            created.add((m.group(1), m.group(2)))
    assert len(created) == 2
    prod = yaml.safe_load(files["production-values.yaml"])
    assert created == {
        (prod["database"]["existingSecret"], prod["database"]["key"]),
        (prod["secretKey"]["existingSecret"], prod["secretKey"]["key"]),
    }


def test_docs_name_only_rendered_objects():
    """Every `kind/name`, object name and `-l selector` the guide uses exists in the chart's
    rendering with the guide's values."""
    text = DOCS.read_text()
    _, files = docs()
    objs = render("helm4", "defaults")
    pools = yaml.safe_load(files["pools.yaml"])
    objs += render("helm4", "defaults", ("--set-json", f"pollers={json.dumps(pools['pollers'])}"))
    names = {(o["kind"].lower(), o["metadata"]["name"]) for o in objs}
    names.add(("persistentvolumeclaim", "data-fullctl-tasks-postgresql-0"))  # the StatefulSet's
    aliases = {
        "deploy": "deployment",
        "svc": "service",
        "sts": "statefulset",
        "tp": "taskpool",
        "pvc": "persistentvolumeclaim",
        "crd": "customresourcedefinition",
    }
    kinds = "deployment|deploy|service|svc|statefulset|sts|job|secret|taskpool|tp|pvc|crd"
    refs = re.findall(rf"\b({kinds})/((?:fullctl-tasks|taskpools)[-.a-z0-9]*[a-z0-9])", text)
    refs += re.findall(
        r"\b(?:get|describe|patch|scale) (deployment|taskpool|tp|job|secret) "
        r"(fullctl-tasks[-a-z0-9]*)",
        text,
    )
    assert len(refs) >= 10, refs
    for kind, name in refs:
        assert (aliases.get(kind, kind), name) in names, f"the guide names {kind}/{name}"
    labels = [o["metadata"].get("labels", {}) for o in objs]
    selectors = re.findall(r"-l ([a-z0-9./-]+=[-a-z0-9]+(?:,[a-z0-9./-]+=[-a-z0-9]+)*)", text)
    assert selectors
    for selector in selectors:
        wanted = dict(pair.split("=", 1) for pair in selector.split(","))
        assert any(wanted.items() <= lab.items() for lab in labels), f"nothing has {selector}"
    for path in re.findall(r"(?:-f|-k) ((?:k8s|charts)/[^\s`]*)", text):
        assert (ROOT / path).exists(), path


def test_docs_kustomize_overlay(tmp_path):
    """The guide's overlay of k8s/ (namespace, image, secrets) builds as it says."""
    import base64
    import shutil

    _, files = docs()
    shutil.copytree(K8S, tmp_path / "k8s")
    for name, text in files.items():
        if name.startswith("k8s-tasks/"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
    proc = subprocess.run(
        [str(tool("kubectl")), "kustomize", "k8s-tasks/"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    built = [d for d in yaml.safe_load_all(proc.stdout) if d]
    for obj in built:
        if obj["kind"] != "CustomResourceDefinition":
            assert obj["metadata"]["namespace"] == "tasks", obj["metadata"]
    (binding,) = by_kind(built, "RoleBinding")
    assert binding["subjects"][0]["namespace"] == "tasks"
    images = {
        c["image"] for o in built if o["kind"] in WORKLOAD_KINDS for c in containers(pod_spec(o))
    }
    assert images == {"your-registry/fullctl-tasks:0.1.0", "postgres:18.6-bookworm"}
    (secret,) = by_kind(built, "Secret")
    assert secret["metadata"]["name"] == "fullctl-tasks"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == {"DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "DATABASE_URL"}
    assert data["POSTGRES_PASSWORD"] in data["DATABASE_URL"]


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M | re.I)
    assert len(stages) == 2 and stages[0][1] == "builder"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, flags=re.M).group(1)
    assert re.fullmatch(r"python:3\.11[-.\w]*-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    final = text[text.rindex("\nFROM ") :]
    assert 'pip install ".[web,operator' in text
    for needle in (
        "COPY --from=builder /opt/venv /opt/venv",
        "COPY example /app/example",
        "WORKDIR /app/example",
        "USER 10001:10001",
        "PYTHONUNBUFFERED=1",
        "PYTHONDONTWRITEBYTECODE=1",
        "DJANGO_SETTINGS_MODULE=example_project.settings",
    ):
        assert needle in final, needle
    for build_tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert build_tool not in final, f"{build_tool} in the final stage"
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", final, flags=re.M).group(1))
    assert cmd == [
        "gunicorn",
        "example_project.wsgi",
        "--bind",
        "0.0.0.0:8000",
        "--worker-tmp-dir",
        "/tmp",
    ]
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 :][:1], ".dockerignore: allow-list after '*'"
    for needed in ("!pyproject.toml", "!django_fullctl/", "!fullctl/", "!operator/", "!example/"):
        assert needed in ignore, needed


def test_readme_kubernetes_commands_are_the_guides():
    """The README's Kubernetes section only uses commands that the guide has (and that the
    tests above render and check)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## On Kubernetes"):].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands = [line for block in blocks for line in block.splitlines() if line.strip()]
    assert commands
    guide, _ = docs()
    for command in commands:
        assert command in guide, f"README command not in docs/kubernetes.md: {command}"
