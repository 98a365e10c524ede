"""Hooks (migrations, helm test), the generated Secret, the bundled PostgreSQL and NOTES.txt."""

from __future__ import annotations

import os
import re

from chartlib import (
    CHART,
    ROOT,
    by_kind,
    one,
    pod_spec,
    render,
    run,
    tool,
    values,
)


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
