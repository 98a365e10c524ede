"""The connection budget, the scale-up step and externally sized pools with the real operator
against the emulator and real tasks in PostgreSQL: what ``kubectl get deployment`` and the
TaskPool's status show."""

import pytest
from django.db import transaction
from example_tasks.models import NoopTask, SumTask
from harness import (
    DEPLOYMENTS,
    NAMESPACE,
    TASKPOOLS,
    condition,
    create_taskpool,
    db,
    deployment,
    pool_status,
    replicas,
    taskpool,
    validate_taskpool,
)
from helpers import async_wait_for

from django_fullctl.models import Poller
from django_fullctl.pollers import PollerReport

pytestmark = pytest.mark.django_db(transaction=True)

# pods of two worker processes: 3 x 2 + 1 = 7 connections each; 70 fit ten pods in all
BUDGET = 70
POOLS = {
    "left": taskpool("left", "left-workers", processes=2, maxReplicas=20, ops=["task_noop"],
                     connectionBudget=BUDGET),
    "right": taskpool("right", "right-workers", processes=2, maxReplicas=20, ops=["task_sum"],
                      connectionBudget=BUDGET),
    "alone": taskpool("alone", "alone-workers", processes=2, maxReplicas=20, ops=["task_noop"],
                      connectionBudget=BUDGET),
    "steps": taskpool("steps", "steps-workers", minReplicas=1, maxReplicas=60,
                      tasksPerReplica=4, maxScaleUpPods=4, maxScaleUpPercent=100),
    "keda": taskpool("keda", "keda-workers", processes=2, maxReplicas=20, sizing="External",
                     scaleDownDelaySeconds=0),
}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_the_taskpools_are_valid_for_the_crd(name):
    validate_taskpool(POOLS[name])


def scale_patches(cluster, deployment_name: str) -> list:
    return cluster.requests_for("PATCH", "deployments", subresource="scale",
                                name=deployment_name)


async def wait_ticks(cluster, deployment_name: str, count: int) -> None:
    """Let the operator tick ``count`` more times for this pool (each tick reads the
    Deployment once)."""
    start = len(cluster.requests_for("GET", "deployments", name=deployment_name))
    await async_wait_for(
        lambda: len(cluster.requests_for("GET", "deployments", name=deployment_name))
        >= start + count)


def queue(count: int, task_class=NoopTask) -> None:
    with transaction.atomic():
        for _ in range(count):
            task_class.create_task(*(() if task_class is NoopTask else (1, 2)))


def sizes_over_time(cluster, *names: str) -> list[int]:
    """The total replicas of the Deployments after each scale patch, in the order sent."""
    current = {name: 0 for name in names}
    patches = sorted(
        ((call.at, name, call.data["spec"]["replicas"])
         for name in names for call in scale_patches(cluster, name)),
    )
    totals = []
    for _, name, size in patches:
        current[name] = size
        totals.append(sum(current.values()))
    return totals


async def test_two_pools_share_the_budget_and_never_exceed_it(cluster, operator):
    for name in ("left-workers", "right-workers"):
        cluster.put(DEPLOYMENTS, deployment(name, 0))
    # each pool's queue wants 20 pods (40 tasks, one per worker process): 280 connections
    await db(queue, 40, NoopTask)
    await db(queue, 40, SumTask)
    await create_taskpool(cluster, POOLS["left"])
    await create_taskpool(cluster, POOLS["right"])

    await async_wait_for(
        lambda: replicas(cluster, "left-workers") + replicas(cluster, "right-workers") == 10)
    await wait_ticks(cluster, "left-workers", 3)
    await wait_ticks(cluster, "right-workers", 3)
    total = replicas(cluster, "left-workers") + replicas(cluster, "right-workers")
    assert total == 10  # the whole budget in use, no more
    assert max(sizes_over_time(cluster, "left-workers", "right-workers")) <= 10
    statuses = [pool_status(cluster, "left"), pool_status(cluster, "right")]
    assert sum(s["connections"] for s in statuses) <= BUDGET
    for status in statuses:
        limited = condition(status, "ScalingLimited")
        assert (limited["status"], limited["reason"]) == ("True", "ConnectionBudget")
        assert "the connection budget allows" in status["lastDecision"]
    for name in ("left", "right"):  # the status with its new fields fits the CRD
        validate_taskpool(cluster.objects[TASKPOOLS, NAMESPACE, name].raw)


async def test_pollers_no_pool_knows_count_against_the_budget(cluster, operator):
    # a fixed-size poller of four processes (13 connections) runs beside the pool
    await db(Poller.fleet.report, PollerReport(
        host="fixed-0", pid=1, worker_id="fixed-0:1", mode="processes", ops=["task_sum"],
        slots=4, busy_slots=0,
    ))
    cluster.put(DEPLOYMENTS, deployment("alone-workers", 0))
    await db(queue, 40, NoopTask)
    await create_taskpool(cluster, POOLS["alone"])
    # (70 - 13) // 7 = 8
    await async_wait_for(lambda: replicas(cluster, "alone-workers") == 8)
    await wait_ticks(cluster, "alone-workers", 3)
    assert replicas(cluster, "alone-workers") == 8
    status = pool_status(cluster, "alone")
    assert status["connections"] == 56
    assert "13 in use elsewhere" in status["lastDecision"]


async def test_a_burst_climbs_by_the_scale_up_step(cluster, operator):
    cluster.put(DEPLOYMENTS, deployment("steps-workers", 1))
    await create_taskpool(cluster, POOLS["steps"])
    await wait_ticks(cluster, "steps-workers", 1)
    await db(queue, 200, NoopTask)
    await async_wait_for(lambda: replicas(cluster, "steps-workers") == 50)
    # one step per tick: +4 or doubled, whichever is more, as the HPA's default policy
    sent = [call.data["spec"]["replicas"] for call in scale_patches(cluster, "steps-workers")]
    assert sent == [5, 10, 20, 40, 50]


async def test_an_externally_sized_pool_keeps_its_replicas(cluster, operator):
    cluster.put(DEPLOYMENTS, deployment("keda-workers", 3))
    await db(queue, 40, NoopTask)
    await create_taskpool(cluster, POOLS["keda"])
    await async_wait_for(lambda: pool_status(cluster, "keda").get("lastDecision"))
    await wait_ticks(cluster, "keda-workers", 3)
    assert not scale_patches(cluster, "keda-workers") and replicas(cluster, "keda-workers") == 3
    status = pool_status(cluster, "keda")
    assert status["pending"] == 40 and status["desiredReplicas"] == 3
    assert status["lastDecision"].startswith("sized externally:")
    assert condition(status, "ScalingLimited")["reason"] == "SizedExternally"
