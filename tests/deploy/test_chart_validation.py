"""The rendered objects validated strictly (kubernetes-validate; TaskPools against the CRD, KEDA's
objects against KEDA's), and the CRD's own contract."""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest
from chartlib import (
    KUBERNETES_VERSION,
    SCENARIOS,
    by_kind,
    crd,
    is_custom,
    one,
    render,
    validate_custom,
    validate_taskpool,
)
from fullctl_operator.pool import DEFAULTS as POOL_DEFAULTS
from kubernetes_validate.utils import SchemaNotFoundError


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_objects_validate_strictly(scenario):
    """kubernetes-validate --strict for built-in kinds (helm3 renders the same bytes, see above);
    TaskPools against the CRD's schema, KEDA's ScaledObject and TriggerAuthentication against
    KEDA's."""
    objs = render("helm4", scenario)
    kinds = set()
    for obj in objs:
        kinds.add(obj["kind"])
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if is_custom(obj):
            validate_custom(obj)
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
    if scenario == "all":  # KEDA's objects and the NetworkPolicies are switched on there
        expected |= {"NetworkPolicy", "ScaledObject", "TriggerAuthentication"}
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
        {"deployment": "p", "processes": 0},
        {"deployment": "p", "sizing": "keda"},
        {"deployment": "p", "connectionBudget": -1},
        {"deployment": "p", "connectionsPerPod": 0},
        {"deployment": "p", "maxScaleUpPods": 0},
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
    # no default of its own: the operator sizes one replica per worker process unless told
    assert "default" not in p["tasksPerReplica"] and p["processes"]["minimum"] == 1
    assert p["sizing"]["enum"] == ["Operator", "External"]
    assert p["connectionBudget"]["minimum"] == 0 and "default" not in p["connectionBudget"]
    for key in ("connectionsPerPod", "maxScaleUpPods", "maxScaleUpPercent"):
        assert p[key]["minimum"] == 1 and "default" not in p[key], key
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
        "connections": "integer",
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
