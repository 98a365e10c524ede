"""What the deploy tests share: rendering the Helm chart with Helm 3 and Helm 4, the scenarios,
reading the rendered objects, and the CRD's schema as JSON schema. The ``helm`` fixture is in
conftest.py; the tests are split by subject into the test_*.py modules beside this one.

Checks of the Helm chart, the plain manifests in k8s/ and the Dockerfile, without a cluster.

Needs the tools from `tools/install-tools.sh` (.tools/bin/helm3, helm4, kubectl): the tests fail,
not skip, when they are missing. What needs a real API server (helm install, helm test, kubectl
apply) is out of reach here; everything up to that is checked: lint, schema, rendering with Helm 3
and Helm 4, kubernetes-validate (strict) for the built-in kinds, the CRD's own schema for
TaskPools, and the properties the rest of the project relies on.
"""

from __future__ import annotations

import copy
import functools
import os
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

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


# ---------------------------------------------------------------- CRD schemas

# KEDA's CRDs, vendored (see the comment at the top of each file)
KEDA_CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): HERE / "keda" / "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"):
        HERE / "keda" / "keda.sh_triggerauthentications.yaml",
}


def crd() -> dict:
    return yaml.safe_load(CRD_FILE.read_text())


def crd_jsonschema(doc: dict | None = None, version: str | None = None) -> dict:
    """A CRD's openAPIV3Schema as JSON schema (the TaskPool CRD's unless ``doc`` is given; the
    one version it serves, or ``version``): x-kubernetes-* keys dropped, and objects that do not
    preserve unknown fields refuse them (what pruning plus strict field validation do)."""

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

    versions = (doc or crd())["spec"]["versions"]
    if version is None:
        (served,) = versions
    else:
        (served,) = [v for v in versions if v["name"] == version]
    return convert(served["schema"]["openAPIV3Schema"])


def validate_taskpool(obj):
    jsonschema.Draft7Validator(
        crd_jsonschema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    ).validate(obj)


@functools.cache
def _keda_schema(api_version: str, kind: str) -> dict:
    doc = yaml.safe_load(KEDA_CRDS[(api_version, kind)].read_text())
    return crd_jsonschema(doc, api_version.split("/")[1])


def is_custom(obj) -> bool:
    """Whether ``obj`` is a custom resource whose CRD the tests hold (kubernetes-validate knows
    only the built-in kinds)."""
    return (obj["apiVersion"] == "tasks.fullctl.io/v1"
            or (obj["apiVersion"], obj["kind"]) in KEDA_CRDS)


def validate_custom(obj):
    """A TaskPool against the chart's CRD; a KEDA object against KEDA's."""
    if obj["apiVersion"] == "tasks.fullctl.io/v1":
        validate_taskpool(obj)
        return
    jsonschema.Draft7Validator(
        _keda_schema(obj["apiVersion"], obj["kind"]),
        format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
    ).validate(obj)
