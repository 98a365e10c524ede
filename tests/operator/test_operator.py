"""The real kopf operator against kmock's Kubernetes emulator, with real tasks in PostgreSQL.

Ticks are TICK seconds of real time (conftest), delays a couple of seconds: every wait has
a deadline, none is a fixed sleep.
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
from pathlib import Path

import pytest
import yaml
from django.db import connections, transaction
from example_tasks.models import ImportantTask, NoopTask
from fullctl_operator.rbac import RULES
from harness import (
    DEPLOYMENTS,
    NAMESPACE,
    PODS,
    TASKPOOLS,
    TICK,
    Emulator,
    condition,
    create_taskpool,
    db,
    deployment,
    pod,
    pool_status,
    replicas,
    taskpool,
    validate_taskpool,
    write_kubeconfig,
)
from helpers import async_wait_for

from django_fullctl.models import Poller
from django_fullctl.pollers import PollerReport
from fullctl.django.models import Task

pytestmark = pytest.mark.django_db(transaction=True)

# every TaskPool the tests create (their specs are also checked against the CRD's schema)
POOLS = {
    "burst": taskpool("burst", "burst-workers", minReplicas=1, maxReplicas=60),
    "drain": taskpool("drain", "drain-workers", scaleDownDelaySeconds=2),
    "stale": taskpool("stale", "stale-workers", staleHeartbeatSeconds=1, minReplicas=2),
    "outage": taskpool("outage", "outage-workers", scaleDownDelaySeconds=0),
    "paused": taskpool("paused", "paused-workers", paused=True, staleHeartbeatSeconds=1,
                       scaleDownDelaySeconds=0),
    "plain": taskpool("plain", "plain-workers", maxReplicas=20),
    "important": taskpool("important", "important-workers", maxReplicas=20,
                          settings={"IMPORTANT_SETTING": True, "IMPORTANT_LIST": ["xyz"]}),
    "ghost": taskpool("ghost", "no-such-deployment", minReplicas=3, maxReplicas=2),
}




@pytest.fixture(autouse=True)
def calls_within_the_role(request):
    """After each test with an emulator: the operator stayed within its Role."""
    cluster = request.getfixturevalue("cluster") if "cluster" in request.fixturenames else None
    yield
    if cluster is not None:
        used = cluster.operator_permissions()
        outside = {p for p in used if p[2] not in RULES.get(p[:2], set())}
        assert not outside, f"calls outside the operator's Role: {outside}"
        if os.environ.get("FULLCTL_PRINT_PERMISSIONS"):
            print("\nPERMISSIONS", sorted(used))


def test_the_charts_role_grants_what_the_operator_calls():
    """The rules block of the chart's Role template is plain YAML: compare it with rbac.RULES."""
    template = Path(__file__).parents[2] / "charts/fullctl-tasks/templates/operator-rbac.yaml"
    if not template.exists():
        pytest.skip("the chart has no operator Role yet")
    text = template.read_text()
    block = text[text.index("\nrules:\n"):].split("\n---", 1)[0]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in yaml.safe_load(block)["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == RULES


@pytest.mark.parametrize("name", sorted(POOLS))
def test_the_test_taskpools_are_valid_for_the_crd(name):
    validate_taskpool(POOLS[name])


# -- helpers ---------------------------------------------------------------------------


def create_noop_tasks(count: int) -> None:
    """A burst: ``count`` tasks committed at once."""
    with transaction.atomic():
        for _ in range(count):
            NoopTask.create_task()


def poller_in(pod_name: str, busy_slots: int, slots: int = 2) -> None:
    """What the poller in ``pod_name`` writes of itself: its row, with its busy slots."""
    Poller.fleet.report(PollerReport(
        host=pod_name, pid=1, worker_id=f"{pod_name}:1", mode="processes",
        ops=["task_noop"], slots=slots, busy_slots=busy_slots,
    ))


def acknowledge_stop_requests() -> int:
    """What a real supervisor does on its next refresh when its row asks it to stop
    claiming: it says it stopped (``claiming_stopped``)."""
    return Poller.fleet.rows().filter(claiming_paused=True, claiming_stopped=False).update(
        claiming_stopped=True
    )


async def acknowledging_pollers() -> None:
    """The emulated pods' pollers, acknowledging stop-claiming requests until cancelled."""
    while True:
        await db(acknowledge_stop_requests)
        await asyncio.sleep(0.1)  # the rhythm of a supervisor's refresh, not a wait


def claim_as(pod_name: str, count: int = 1) -> list[Task]:
    """What a poller's worker in ``pod_name`` does: claim, then send a heartbeat."""
    tasks = Task.queue.claim(f"{pod_name}:1", ["task_noop"], limit=count)
    for task in tasks:
        Task.queue.heartbeat(task.lease)
    return tasks


def ticks_between(cluster: Emulator, deployment_name: str, start: float, end: float) -> int:
    """Operator ticks from ``start`` to the one that acted at ``end``, that one included.

    Each tick reads the Deployment exactly once, at its start; a tick already running at
    ``start`` (it read the Deployment just before) counts as the first.
    """
    reads = [c.at for c in cluster.requests_for("GET", "deployments", name=deployment_name)
             if c.at <= end]
    within = [at for at in reads if at >= start]
    return len(within) + (1 if reads and reads[-1] < start else 0)


def scale_patches(cluster: Emulator, deployment_name: str, since: float = 0.0) -> list:
    return cluster.requests_for("PATCH", "deployments", subresource="scale",
                                name=deployment_name, since=since)


def events(cluster: Emulator, reason: str) -> list[dict]:
    return [c.data for c in cluster.requests_for("POST", "events")
            if (c.data or {}).get("reason") == reason]


async def wait_ticks(cluster: Emulator, deployment_name: str, count: int) -> None:
    """Let the operator tick ``count`` more times for this pool."""
    start = len(cluster.requests_for("GET", "deployments", name=deployment_name))
    await async_wait_for(
        lambda: len(cluster.requests_for("GET", "deployments", name=deployment_name))
        >= start + count)


async def started(cluster: Emulator, pool: str) -> dict:
    """Wait for the pool's first status (its first tick)."""
    return await async_wait_for(lambda: pool_status(cluster, pool).get("lastDecision")
                                and pool_status(cluster, pool))


# -- scaling ------------------------------------------------------------------------


async def test_a_burst_of_tasks_scales_the_deployment_up(cluster, operator):
    cluster.put(DEPLOYMENTS, deployment("burst-workers", 1))
    await create_taskpool(cluster, POOLS["burst"])
    first = await started(cluster, "burst")
    assert first["desiredReplicas"] == 1 and not scale_patches(cluster, "burst-workers")

    await db(create_noop_tasks, 200)
    burst = time.monotonic()
    await async_wait_for(lambda: replicas(cluster, "burst-workers") == 50)

    [patch] = scale_patches(cluster, "burst-workers")
    assert patch.data["spec"] == {"replicas": 50}
    ticks = ticks_between(cluster, "burst-workers", burst, patch.at)
    print(f"\nMEASURED burst of 200 tasks -> scale patch: {patch.at - burst:.3f}s, "
          f"{ticks} tick(s) of {TICK}s")
    status = await async_wait_for(
        lambda: pool_status(cluster, "burst").get("desiredReplicas") == 50
        and pool_status(cluster, "burst"))
    assert status["pending"] == 200 and status["running"] == 0
    assert status["lastDecision"].startswith("scaling up 1 -> 50: 200 pending")
    assert status["lastScaleTime"]
    validate_taskpool(cluster.objects[TASKPOOLS, NAMESPACE, "burst"].raw)  # status included
    scaled = await async_wait_for(lambda: events(cluster, "Scaled"))
    assert [e["message"] for e in scaled] == [status["lastDecision"]]
    assert scaled[0]["involvedObject"]["kind"] == "TaskPool"
    # steady afterwards: no second patch, and the status is written once more (the decision
    # becomes "steady at 50"), then not again while nothing changes
    writes = len(cluster.requests_for("PATCH", "taskpools", subresource="status"))
    await wait_ticks(cluster, "burst-workers", 4)
    assert len(scale_patches(cluster, "burst-workers")) == 1
    assert len(cluster.requests_for("PATCH", "taskpools", subresource="status")) <= writes + 1
    assert pool_status(cluster, "burst")["lastDecision"].startswith("steady at 50")


async def test_a_drained_queue_scales_down_after_the_delay_keeping_busy_pods(cluster, operator):
    cluster.put(DEPLOYMENTS, deployment("drain-workers", 3))
    for i in range(3):
        cluster.put(PODS, pod(f"drain-{i}", "drain-workers"))
    await db(create_noop_tasks, 12)  # 12 tasks at 4 per replica: 3 replicas
    await create_taskpool(cluster, POOLS["drain"])
    assert (await started(cluster, "drain"))["desiredReplicas"] == 3

    def drain() -> list[Task]:
        for worker in ("drain-0", "drain-2"):
            for task in Task.queue.claim(f"{worker}:1", ["task_noop"], limit=5):
                Task.queue.complete(task.lease, None, 0.01)
        # two tasks still running, under a worker id that names no pod (as with
        # TASK_ORM_WORKER_ID set): the pollers' rows say which pods are busy
        for name, busy in (("drain-0", 1), ("drain-1", 1), ("drain-2", 0)):
            poller_in(name, busy)
        return claim_as("shared-worker-id", 2)

    still_running = await db(drain)
    drained = time.monotonic()
    # the idle pod is asked to stop claiming first, and stays until its poller says so
    await async_wait_for(lambda: db(lambda: Poller.fleet.rows().filter(
        host="drain-2", claiming_paused=True).exists()), timeout=20)
    assert replicas(cluster, "drain-workers") == 3
    acknowledging = asyncio.ensure_future(acknowledging_pollers())
    await async_wait_for(lambda: replicas(cluster, "drain-workers") == 2, timeout=20)
    [down] = scale_patches(cluster, "drain-workers")
    assert down.data["spec"] == {"replicas": 2}  # 2 running want 1, but 2 pods are busy
    assert down.at - drained >= 2.0, "scaled down before scaleDownDelaySeconds"
    print(f"\nMEASURED drain -> scale down: {down.at - drained:.3f}s "
          f"(scaleDownDelaySeconds=2, {ticks_between(cluster, 'drain-workers', drained, down.at)}"
          f" ticks)")

    # idle pods were made cheaper to delete than busy ones, before the scale patch
    costs = {
        c.name: c.data["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
        for c in cluster.requests_for("PATCH", "pods") if c.at <= down.at
    }
    assert costs == {"drain-0": "100", "drain-1": "100", "drain-2": "-100"}
    status = await async_wait_for(  # the status of the tick that scaled
        lambda: "keep it at 2" in pool_status(cluster, "drain").get("lastDecision", "")
        and pool_status(cluster, "drain"))
    assert status["lastDecision"].startswith("scaling down 3 -> 2")
    assert status["busyPods"] == 2
    wish = status["lowerSince"]  # kept: 1 replica is still wanted
    assert wish

    # the wish to shrink was kept: once the pods are idle it applies without a new delay
    def finish() -> None:
        for task in still_running:
            Task.queue.complete(task.lease, None, 0.01)
        for name in ("drain-0", "drain-1"):
            poller_in(name, 0)

    await db(finish)
    idle = time.monotonic()
    await async_wait_for(lambda: replicas(cluster, "drain-workers") == 0, timeout=20)
    last = scale_patches(cluster, "drain-workers")[-1]
    assert last.data["spec"] == {"replicas": 0}
    # no second delay: no tick after the pods went idle started a new lowerSince clock
    clocks = {
        c.data["status"]["lowerSince"]
        for c in cluster.requests_for("PATCH", "taskpools", subresource="status", since=idle)
        if c.at <= last.at and c.data["status"].get("lowerSince")
    }
    assert clocks <= {wish}
    # one event per scale patch (the last scale-in may come in steps: each pod leaves
    # once its poller says it stopped claiming)
    await async_wait_for(lambda: len(events(cluster, "Scaled"))
                         == len(scale_patches(cluster, "drain-workers")))
    acknowledging.cancel()


# -- stale pods ------------------------------------------------------------------------


async def test_a_pod_whose_heartbeat_went_stale_is_deleted_and_its_task_requeued(
    cluster, operator
):
    cluster.put(DEPLOYMENTS, deployment("stale-workers", 2))
    cluster.put(PODS, pod("stale-0", "stale-workers"))
    cluster.put(PODS, pod("stale-1", "stale-workers"))
    cluster.put(PODS, pod("stale-2", "stale-workers", terminating=True))
    cluster.put(PODS, pod("other-0", "other-workers"))  # not this Deployment's
    await create_taskpool(cluster, POOLS["stale"])
    await started(cluster, "stale")

    await db(create_noop_tasks, 4)
    tasks = await db(lambda: {name: claim_as(name)[0]
                              for name in ("stale-0", "stale-1", "stale-2", "other-0")})
    heartbeat = time.monotonic()  # the heartbeats were just written: stale 1s from now
    await async_wait_for(lambda: len(cluster.requests_for("DELETE", "pods")) >= 2, timeout=20)

    deletes = cluster.requests_for("DELETE", "pods")
    assert sorted(c.name for c in deletes) == ["stale-0", "stale-1"]
    assert all(c.data is None for c in deletes)  # no body: the pod's own grace period
    stale_at = heartbeat + 1.0
    first = deletes[0]
    ticks = ticks_between(cluster, "stale-workers", stale_at, first.at)
    print(f"\nMEASURED heartbeat stale -> pod deleted: {first.at - stale_at:.3f}s, "
          f"{ticks} tick(s) of {TICK}s (staleHeartbeatSeconds=1)")
    # at most one pod per tick: a new tick started between the two deletions
    assert any(first.at < c.at < deletes[1].at
               for c in cluster.requests_for("GET", "deployments", name="stale-workers"))

    async def rescued(name: str) -> Task | None:
        task = await db(lambda: Task.objects.get(pk=tasks[name].pk))
        return task if task.status == "pending" else None

    for name in ("stale-0", "stale-1"):
        # the operator deletes the pod first, then rescues its task: wait for the rescue
        task = await async_wait_for(lambda n=name: rescued(n), timeout=10)
        assert task.queue_id is None
        assert f"pod {name} restarted by the operator" in task.error
    for name in ("stale-2", "other-0"):  # terminating, or not ours: left alone
        task = await db(lambda n=name: Task.objects.get(pk=tasks[n].pk))
        assert task.status == "running"
    await async_wait_for(lambda: pool_status(cluster, "stale").get("restartedPods") == 2)
    restarted = await async_wait_for(lambda: len(events(cluster, "RestartedPod")) == 2
                                     and events(cluster, "RestartedPod"))
    assert all(e["type"] == "Warning" for e in restarted)


# -- failures and switches -------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def database_outage():
    """The database goes away: the operator's connections are terminated and new ones are
    refused (the server's address now points at a closed port)."""
    settings_dict = connections["default"].settings_dict
    saved_port = settings_dict["PORT"]
    main = connections["default"].connection  # pytest-django's, needed at teardown
    keep = [main.info.backend_pid] if main is not None else []

    def terminate_others() -> None:
        with connections["default"].cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND NOT pid = ANY(%s)", [keep],
            )

    await db(terminate_others)
    settings_dict["PORT"] = str(closed_port())
    try:
        yield
    finally:
        settings_dict["PORT"] = saved_port


async def test_a_database_outage_holds_the_size(cluster, operator, postgresql_only):
    cluster.put(DEPLOYMENTS, deployment("outage-workers", 3))
    async with database_outage():
        await create_taskpool(cluster, POOLS["outage"])
        status = await async_wait_for(
            lambda: condition(pool_status(cluster, "outage"), "DatabaseReachable")
            .get("status") == "False" and pool_status(cluster, "outage"))
        await wait_ticks(cluster, "outage-workers", 3)
        assert not scale_patches(cluster, "outage-workers")
        assert replicas(cluster, "outage-workers") == 3
        assert status["lastDecision"].startswith("holding 3 replica(s): the database could not")
        assert condition(status, "Ready")["reason"] == "DatabaseUnreachable"
        assert status["desiredReplicas"] == 3

    # back: the empty queue now scales it down (scaleDownDelaySeconds=0)
    await async_wait_for(lambda: replicas(cluster, "outage-workers") == 0)
    status = await async_wait_for(
        lambda: condition(pool_status(cluster, "outage"), "DatabaseReachable")
        .get("status") == "True" and pool_status(cluster, "outage"))
    assert status["pending"] == 0


async def test_a_paused_pool_is_left_alone(cluster, operator):
    cluster.put(DEPLOYMENTS, deployment("paused-workers", 1))
    cluster.put(PODS, pod("paused-0", "paused-workers"))
    await db(create_noop_tasks, 41)
    await db(claim_as, "paused-0")  # its heartbeat goes stale after 1s
    heartbeat = time.monotonic()
    await create_taskpool(cluster, POOLS["paused"])
    status = await async_wait_for(lambda: pool_status(cluster, "paused").get("pending") == 40
                                  and pool_status(cluster, "paused"))
    # the behaviour under test: the heartbeat goes stale (staleHeartbeatSeconds=1), and the
    # paused pool still restarts nothing
    await async_wait_for(lambda: time.monotonic() > heartbeat + 1.5)
    await wait_ticks(cluster, "paused-workers", 3)

    assert not scale_patches(cluster, "paused-workers")
    assert not cluster.requests_for("PATCH", "pods")
    assert not cluster.requests_for("DELETE", "pods")
    assert replicas(cluster, "paused-workers") == 1
    assert condition(status, "Paused")["status"] == "True"
    assert status["lastDecision"].startswith("paused: leaving paused-workers at 1")


async def test_a_pool_counts_only_the_tasks_its_settings_qualify_for(cluster, operator):
    cluster.put(DEPLOYMENTS, deployment("plain-workers", 1))
    cluster.put(DEPLOYMENTS, deployment("important-workers", 1))

    def create() -> None:
        with transaction.atomic():
            for _ in range(40):
                ImportantTask.create_task()
            for _ in range(4):
                NoopTask.create_task()

    await db(create)
    await create_taskpool(cluster, POOLS["plain"])
    await create_taskpool(cluster, POOLS["important"])
    plain = await async_wait_for(
        lambda: pool_status(cluster, "plain").get("pending") is not None
        and pool_status(cluster, "plain"))
    important = await async_wait_for(lambda: replicas(cluster, "important-workers") == 11
                                     and pool_status(cluster, "important"))
    # IMPORTANT_SETTING is False in the operator's settings: the plain pool counts 4 tasks
    assert plain["pending"] == 4 and plain["desiredReplicas"] == 1
    assert important["pending"] == 44
    assert replicas(cluster, "plain-workers") == 1


async def test_a_missing_deployment_and_a_bad_spec_are_conditions(cluster, operator):
    await create_taskpool(cluster, POOLS["ghost"])
    status = await async_wait_for(
        lambda: condition(pool_status(cluster, "ghost"), "DeploymentFound")
        and pool_status(cluster, "ghost"))
    assert condition(status, "DeploymentFound")["status"] == "False"
    assert condition(status, "SpecValid")["status"] == "False"
    assert "minReplicas 3 is above maxReplicas 2" in condition(status, "SpecValid")["message"]
    assert condition(status, "Ready")["reason"] == "DeploymentNotFound"
    # the timer keeps running without errors
    await async_wait_for(lambda: len(cluster.requests_for("GET", "deployments",
                                                          name="no-such-deployment")) >= 3)
    assert not cluster.requests_for("PATCH", "deployments")


async def test_only_the_taskpool_carries_the_finalizer(cluster, operator):
    cluster.put(DEPLOYMENTS, deployment("burst-workers", 1))
    cluster.put(PODS, pod("burst-0", "burst-workers"))
    await create_taskpool(cluster, POOLS["burst"])
    await started(cluster, "burst")
    meta = cluster.objects[TASKPOOLS, NAMESPACE, "burst"].raw["metadata"]
    assert meta["finalizers"] == ["tasks.fullctl.io/finalizer"]
    assert not any(k.startswith("kopf.zalando.org") for k in meta.get("annotations") or {})
    for key in ((DEPLOYMENTS, NAMESPACE, "burst-workers"), (PODS, NAMESPACE, "burst-0")):
        assert not cluster.objects[key].raw["metadata"].get("finalizers")
    # the operator watches TaskPools only
    watched = {c.resource for c in cluster.calls if c.params.get("watch") == "true"}
    assert watched == {"taskpools"}

    # deleting the pool: kopf releases its finalizer and the object goes
    async with cluster.delete(f"/apis/tasks.fullctl.io/v1/namespaces/{NAMESPACE}/taskpools/burst"):
        pass
    await async_wait_for(lambda: cluster.objects[TASKPOOLS, NAMESPACE, "burst"].deleted)
    assert replicas(cluster, "burst-workers") == 1  # the Deployment is left as it was


# -- credentials -----------------------------------------------------------------------


async def test_rotated_credentials_reach_kopf_and_the_operators_client(
    cluster, operator, caplog
):
    """One kubeconfig for both: when its token changes, the requests with the old one get
    a 401, kopf logs in again (its default login reads the kubeconfig afresh) and the
    operator's client loads its configuration again; no tick is lost."""
    caplog.set_level(logging.INFO, logger="kopf")
    cluster.put(DEPLOYMENTS, deployment("burst-workers", 1))
    await create_taskpool(cluster, POOLS["burst"])
    await started(cluster, "burst")

    write_kubeconfig(cluster.kubeconfig, str(cluster.url).rstrip("/"), token="rotated")
    cluster.token = "rotated"
    rotated = time.monotonic()
    await db(create_noop_tasks, 200)
    await async_wait_for(lambda: replicas(cluster, "burst-workers") == 50)
    await async_wait_for(lambda: pool_status(cluster, "burst").get("desiredReplicas") == 50)

    after = [c for c in cluster.calls if c.at >= rotated and not c.agent.startswith("kmock")]
    refused = {c.agent.split("/")[0] for c in after if c.authorization != "Bearer rotated"}
    assert refused == {"kopf", "fullctl-operator"}, refused  # each got its 401 ...
    [patch] = scale_patches(cluster, "burst-workers")  # ... and then carried on
    assert patch.authorization == "Bearer rotated"
    # kopf logged in again, with its default login (records from the test's start on)
    assert "Activity 'login_via_client' succeeded." in caplog.messages
