"""The workloads the chart renders: probes, commands, the operator and its Role, Pod Security,
pools and TaskPools, selectors, labels, secrets and env."""

from __future__ import annotations

import json

import pytest
from chartlib import (
    RESTRICTED_VOLUME_SOURCES,
    SCENARIOS,
    STANDARD_LABELS,
    WORKLOAD_KINDS,
    argv_of,
    by_kind,
    containers,
    env_map,
    flag,
    one,
    pod_spec,
    pollers_by_pool,
    render,
    values,
)
from fullctl_operator.rbac import RULES


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
        deployment = deployments[pool["name"]]
        spec = deployment["spec"]
        if pool["autoscale"]["enabled"]:
            assert "replicas" not in spec, pool["name"]
            # who sizes it, for whoever looks at the Deployment
            sizer = "ScaledObject" if pool["autoscale"]["keda"]["enabled"] else "TaskPool"
            assert deployment["metadata"]["annotations"]["tasks.fullctl.io/sized-by"] == \
                f"{sizer}/{deployment['metadata']['name']}"
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
        # the pods' --processes, which tasksPerReplica follows unless the pool sets it
        assert tp["spec"]["processes"] == pool["processes"] == int(
            c["command"][c["command"].index("--processes") + 1])
        for key in ("tasksPerReplica", "maxScaleUpPods", "maxScaleUpPercent",
                    "connectionsPerPod"):
            assert tp["spec"].get(key) == autoscale.get(key), key
        budget = values(scenario)["operator"]["connectionBudget"]
        assert tp["spec"].get("connectionBudget") == budget
        assert tp["spec"].get("sizing", "Operator") == (
            "External" if autoscale["keda"]["enabled"] else "Operator")
        for key in (
            "minReplicas",
            "maxReplicas",
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
