"""A TaskPool may name the Django Tasks backend's queues (``queues: [...]``) instead of the
ops behind them (``django.tasks:<queue>``): the pool then counts, and scales on, only the
tasks of those queues."""

import pytest
from django.db import transaction
from fullctl_operator.pool import parse_spec
from harness import (
    DEPLOYMENTS,
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

from tests.testapp import django_tasks as jobs

pytestmark = pytest.mark.django_db(transaction=True)

POOLS = {
    "mail": taskpool("mail", "mail-workers", maxReplicas=20, queues=["emails"]),
    "rest": taskpool("rest", "rest-workers", maxReplicas=20, queues=["default"]),
}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_the_pools_are_valid_for_the_crd(name):
    validate_taskpool(POOLS[name])


def test_queues_are_a_shorthand_for_their_ops():
    spec = parse_spec({"deployment": "d", "queues": ["emails", "default"]})
    assert spec.ops == {"django.tasks:emails", "django.tasks:default"} and not spec.problems
    spec = parse_spec({"deployment": "d", "queues": ["emails"], "ops": ["task_noop"]})
    assert spec.ops == {"django.tasks:emails", "task_noop"}
    assert parse_spec({"deployment": "d"}).ops is None
    bad = parse_spec({"deployment": "d", "queues": "emails"})
    assert bad.ops is None and bad.queues is None
    assert "queues must be a list of queue names" in bad.problems[0]


async def test_a_pool_naming_one_queue_scales_only_on_that_queue(cluster, operator):
    cluster.put(DEPLOYMENTS, deployment("mail-workers", 1))
    cluster.put(DEPLOYMENTS, deployment("rest-workers", 1))

    def create() -> None:
        with transaction.atomic():
            for user_id in range(8):
                jobs.send_welcome.enqueue(user_id)  # queue "emails"
            for i in range(20):
                jobs.add.enqueue(i, i)  # queue "default"

    await db(create)
    await create_taskpool(cluster, POOLS["mail"])
    await create_taskpool(cluster, POOLS["rest"])
    mail = await async_wait_for(lambda: replicas(cluster, "mail-workers") == 2
                                and pool_status(cluster, "mail"))
    rest = await async_wait_for(lambda: replicas(cluster, "rest-workers") == 5
                                and pool_status(cluster, "rest"))
    # tasksPerReplica 4: 8 emails need 2 replicas, 20 default-queue tasks 5
    assert mail["pending"] == 8 and mail["desiredReplicas"] == 2
    assert rest["pending"] == 20 and rest["desiredReplicas"] == 5
    assert condition(mail, "SpecValid")["status"] == "True"
