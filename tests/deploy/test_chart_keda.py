"""KEDA for the pools that opt in (autoscale.keda.enabled): a ScaledObject and a
TriggerAuthentication validated offline against KEDA's own CRD schemas (vendored in keda/,
see the comment at the top of each file), a trigger query that counts exactly what the
operator counts (run on the test database), the connection taken from a Secret, and a
TaskPool that tells the operator to leave the pool's replicas alone."""

from __future__ import annotations

import copy
import json
from datetime import timedelta

import jsonschema
import pytest
import yaml
from chartlib import (
    CHART,
    KEDA_CRDS,
    by_kind,
    one,
    pod_spec,
    pollers_by_pool,
    render,
    run,
    tool,
    validate_custom,
)

KEDA_POOL = {
    "name": "burst",
    "processes": 3,
    "autoscale": {"minReplicas": 0, "maxReplicas": 30, "ops": ["task_sum", "task_echo", "it's"],
                  "keda": {"enabled": True}},
}


def with_pools(*pools: dict, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    return ("--set-json", f"pollers={json.dumps([{'name': 'default'}, *pools])}", *extra)


EXISTING_DATABASE = ("--set", "database.existingSecret=acme-db", "--set", "database.key=url",
                     "--set", "database.postgresql.enabled=false")


def keda_objects(objs) -> tuple[dict, dict]:
    return (one(objs, "ScaledObject", "fullctl-tasks-poller-burst"),
            one(objs, "TriggerAuthentication", "fullctl-tasks-poller-burst"))


def test_the_vendored_crds_are_kedas():
    for (api_version, kind), path in KEDA_CRDS.items():
        text = path.read_text()
        assert "tag v2.20.2" in text.splitlines()[0] + text.splitlines()[1]
        doc = yaml.safe_load(text)
        assert doc["spec"]["group"] == "keda.sh" and doc["spec"]["names"]["kind"] == kind
        assert api_version.split("/")[1] in [v["name"] for v in doc["spec"]["versions"]]


@pytest.mark.parametrize("database", ["bundled", "existing", "own secret"])
def test_keda_objects_validate_against_kedas_crds(helm, database):
    extra = {"bundled": (), "existing": EXISTING_DATABASE, "own secret": (
        "--set", "pollers[1].autoscale.keda.connectionSecret.name=keda-db",
        "--set", "pollers[1].autoscale.keda.connectionSecret.key=url")}[database]
    objs = render(helm.name, "defaults", with_pools(KEDA_POOL, extra=extra))
    for obj in keda_objects(objs):
        validate_custom(obj)


def test_the_validation_refuses_what_keda_would():
    """The vendored schemas are really applied: mistakes KEDA's API server refuses fail here."""
    scaled, auth = keda_objects(render("helm4", "defaults", with_pools(KEDA_POOL)))
    broken = []
    wrong_type = copy.deepcopy(scaled)  # trigger metadata is a map of strings
    wrong_type["spec"]["triggers"][0]["metadata"]["targetQueryValue"] = 3
    broken.append(wrong_type)
    typo = copy.deepcopy(scaled)
    typo["spec"]["maxReplicas"] = 30
    broken.append(typo)
    no_target = copy.deepcopy(scaled)
    del no_target["spec"]["scaleTargetRef"]
    broken.append(no_target)
    no_key = copy.deepcopy(auth)
    del no_key["spec"]["secretTargetRef"][0]["key"]
    broken.append(no_key)
    for obj in broken:
        with pytest.raises(jsonschema.ValidationError):
            validate_custom(obj)


def test_keda_sizes_the_pool_as_the_operator_would():
    objs = render("helm4", "defaults", with_pools(KEDA_POOL))
    scaled, auth = keda_objects(objs)
    deployment = pollers_by_pool(objs)["burst"]
    name = deployment["metadata"]["name"]
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": name}
    assert "replicas" not in deployment["spec"]  # KEDA's HPA owns it
    assert deployment["metadata"]["annotations"]["tasks.fullctl.io/sized-by"] == \
        f"ScaledObject/{name}"
    spec = scaled["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 30)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "postgresql"
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    # one replica per worker process (tasksPerReplica unset), as the operator sizes
    (c,) = pod_spec(deployment)["containers"]
    assert trigger["metadata"]["targetQueryValue"] == c["command"][c["command"].index(
        "--processes") + 1] == "3"
    assert trigger["metadata"]["activationTargetQueryValue"] == "0"
    # the operator's delays and scale-up step, in the HPA's terms
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"] == {"stabilizationWindowSeconds": 300}
    assert spec["cooldownPeriod"] == 300
    assert behavior["scaleUp"] == {"selectPolicy": "Max", "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ]}
    # the operator still watches the pool (stale pods) but leaves its size to KEDA
    assert one(objs, "TaskPool", name)["spec"]["sizing"] == "External"
    assert "sizing" not in one(objs, "TaskPool", "fullctl-tasks-poller-default")["spec"]
    assert not [o for o in objs if o["kind"] == "ScaledObject"
                and o["metadata"]["name"].endswith("-default")]


def test_no_keda_objects_by_default(helm):
    objs = render(helm.name, "defaults")
    assert not [o for o in objs if o["apiVersion"].startswith("keda.sh/")]


def test_the_connection_comes_from_a_secret():
    # the bundled PostgreSQL: the password from the chart's Secret, KEDA reaching the Service
    # from its own namespace by the namespaced name
    objs = render("helm4", "defaults", with_pools(KEDA_POOL))
    scaled, auth = keda_objects(objs)
    bundled = scaled
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "fullctl-tasks", "key": "POSTGRES_PASSWORD"}]
    assert "POSTGRES_PASSWORD" in one(objs, "Secret", "fullctl-tasks")["data"]
    meta = scaled["spec"]["triggers"][0]["metadata"]
    service = one(objs, "Service", "fullctl-tasks-postgresql")
    assert meta["host"] == f"{service['metadata']['name']}.default.svc"
    assert (meta["port"], meta["userName"], meta["dbName"], meta["sslmode"]) == \
        ("5432", "fullctl", "fullctl", "disable")
    # your own database: the same Secret key the pods read DATABASE_URL from
    objs = render("helm4", "defaults", with_pools(KEDA_POOL, extra=EXISTING_DATABASE))
    scaled, auth = keda_objects(objs)
    (c,) = pod_spec(pollers_by_pool(objs)["burst"])["containers"]
    (url,) = [e for e in c["env"] if e["name"] == "DATABASE_URL"]
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "connection",
                                                **url["valueFrom"]["secretKeyRef"]}]
    assert set(scaled["spec"]["triggers"][0]["metadata"]) == {
        "query", "targetQueryValue", "activationTargetQueryValue"}
    # never a credential in the ScaledObject itself
    for obj in (bundled, scaled):
        assert "password" not in json.dumps(obj["spec"]).lower()


@pytest.mark.django_db(transaction=True)
def test_the_query_counts_what_the_operator_counts(postgresql_only):
    """Run the rendered trigger query on the test database next to the operator's own count
    (``counts_by_op`` over the pool's ops, as ``decisions.demand`` adds it up)."""
    from django.db import connection
    from django.utils import timezone
    from example_tasks.models import EchoTask, NoopTask, SumTask
    from fullctl_operator.decisions import demand

    from fullctl.django.models import Task

    scaled, _ = keda_objects(render("helm4", "defaults", with_pools(KEDA_POOL)))
    query = scaled["spec"]["triggers"][0]["metadata"]["query"]

    for _ in range(3):
        SumTask.create_task(1, 2)  # runnable
    parent = SumTask.create_task(1, 1)  # runnable, with a child that waits for it
    SumTask.create_task(2, 2, parent=parent)
    SumTask.configure(run_after=timezone.now() + timedelta(hours=1)).create_task(1, 1)
    EchoTask.create_task("a")
    EchoTask.create_task("b")
    running, finished = Task.queue.claim("pod-0:1", ["task_echo"], limit=2)
    Task.queue.complete(finished.lease, None, 0.01)
    NoopTask.create_task()  # another pool's op

    with connection.cursor() as cursor:
        cursor.execute(query)
        (counted,) = cursor.fetchone()
    pending, running_count = demand(Task.queue.counts_by_op(), KEDA_POOL["autoscale"]["ops"])
    assert counted == pending + running_count == 4 + 1
    assert Task._meta.db_table in query
    # a task that finished no longer counts
    Task.queue.complete(running.lease, None, 0.01)
    with connection.cursor() as cursor:
        cursor.execute(query)
        assert cursor.fetchone()[0] == 4


BAD_KEDA = {
    "no ops": ({"name": "k", "autoscale": {"keda": {"enabled": True}}}, "autoscale.ops"),
    "not autoscaled": ({"name": "k", "autoscale": {"enabled": False, "ops": ["task_sum"],
                                                   "keda": {"enabled": True}}},
                       "set autoscale.enabled"),
    "delay above the HPA's": ({"name": "k", "autoscale": {
        "ops": ["task_sum"], "scaleDownDelaySeconds": 7200, "keda": {"enabled": True}}},
        "above 3600"),
    "secret without key": ({"name": "k", "autoscale": {"ops": ["task_sum"], "keda": {
        "enabled": True, "connectionSecret": {"name": "db"}}}}, "give the key"),
    "typo": ({"name": "k", "autoscale": {"keda": {"enable": True}}}, "enable"),
}


@pytest.mark.parametrize("case", BAD_KEDA)
def test_bad_keda_values_are_refused(case, tmp_path):
    pool, needle = BAD_KEDA[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"pollers": [pool]}))
    proc = run([tool("helm4"), "template", "x", CHART, "--values", bad], check=False)
    assert proc.returncode != 0 and needle in proc.stderr, proc.stderr


def test_values_all_has_a_keda_pool_beside_the_operators():
    objs = render("helm4", "all")
    (scaled,) = by_kind(objs, "ScaledObject")
    (auth,) = by_kind(objs, "TriggerAuthentication")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "acme-tasks-poller-keda"
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": "acme-keda-database", "key": "url"}]
    meta = scaled["spec"]["triggers"][0]["metadata"]
    assert "op IN ('task_sleep', 'it''s')" in meta["query"]  # quoted as SQL
    assert meta["targetQueryValue"] == "3"
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["policies"] == [
        {"type": "Percent", "value": 50, "periodSeconds": 30}]
