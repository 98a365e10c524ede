"""End to end on one machine: kmock as the API server, the real operator process, and real
pollers as the pods of their Deployments (the pod runner plays kubelet and ReplicaSet
controller), all on one PostgreSQL.

Every wait has a deadline and none is a fixed sleep; nothing asserts a speed. The figures
of the burst scenario are printed (run with ``-s`` to see them).
"""

import contextlib
import os
import signal
import time
from datetime import datetime

import pytest
from cluster_harness import (
    OPERATOR_TICK,
    create,
    db,
    describe_runs,
    is_scale_in_step,
    poller_deployment,
    pool_status,
    replicas,
    scale_patches,
    taskpool,
)
from helpers import async_wait_for

from django_fullctl.models import Task
from tests.e2e.e2e_tasks.models import EuTask, RecordedTask, UsTask

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


# -- helpers ---------------------------------------------------------------------------


def create_recorded(task_class, seconds: float, record: str, count: int = 1) -> list[int]:
    """``count`` tasks of ``seconds`` each, committed at once; their ids."""
    tasks = task_class.create_tasks([((seconds, record), {})] * count)
    return [t.pk for t in tasks]


def statuses(ids: list[int]) -> dict[int, tuple[str, int, str | None]]:
    return {pk: (status, attempt, error) for pk, status, attempt, error in
            Task.objects.filter(pk__in=ids).values_list("pk", "status", "attempt", "error")}


def all_completed(ids: list[int]) -> bool:
    return Task.objects.filter(pk__in=ids, status="completed").count() == len(ids)


async def pool_ready(kubelet, deployment: str, count: int, timeout: float = 60.0) -> None:
    """Wait for ``count`` ready pods and no others (terminating ones gone)."""
    await async_wait_for(
        lambda: len(kubelet.ready(deployment)) == count
        and len(kubelet.running(deployment)) == count, timeout=timeout)


async def first_status(cluster, pool: str) -> dict:
    return await async_wait_for(lambda: pool_status(cluster, pool).get("lastDecision")
                                and pool_status(cluster, pool), timeout=60)


def assert_each_ran_once(runs, ids: list[int], kubelet) -> None:
    by_task = runs.by_task()
    ends = {k.pod: k.exited_at for k in kubelet.kills}
    twice = runs.run_twice()
    assert not twice, "tasks run more than once: " + describe_runs(
        r for rs in twice.values() for r in rs)
    overlapping = runs.overlapping(ends)
    assert not overlapping, "tasks run twice at once: " + describe_runs(
        r for rs in overlapping.values() for r in rs)
    missing = [pk for pk in ids if [r.outcome for r in by_task.get(pk, [])] != ["end"]]
    assert not missing, f"tasks without exactly one finished run: {missing[:20]}"


def assert_no_busy_kill(kubelet) -> None:
    busy = kubelet.kills_while_busy()
    assert not busy, "pods killed while running a task:\n" + "\n".join(map(str, busy))


# -- scenarios -------------------------------------------------------------------------

BURST = 300  # tasks
BURST_SECONDS = 0.3  # each
BURST_MAX, BURST_MIN = 6, 1


async def test_a_burst_scales_up_drains_and_scales_back_to_the_minimum(
    cluster, kubelet, operator, runs
):
    """A few hundred short tasks: the pool grows to its maximum, the queue drains, the
    pool shrinks back to its minimum; every task completed at its first attempt, each run
    exactly once (so never twice at once), no pod killed while it ran a task."""
    await create(cluster, poller_deployment("burst-workers", replicas=BURST_MIN, processes=2,
                                            grace_period=5))
    await create(cluster, taskpool(
        "burst", "burst-workers", minReplicas=BURST_MIN, maxReplicas=BURST_MAX,
        tasksPerReplica=2, scaleDownDelaySeconds=3))
    await pool_ready(kubelet, "burst-workers", BURST_MIN)
    operator.start()
    await first_status(cluster, "burst")

    ids = await db(create_recorded, RecordedTask, BURST_SECONDS, str(runs.path), BURST)
    burst = time.time()
    await async_wait_for(lambda: len(kubelet.ready("burst-workers")) == BURST_MAX,
                         timeout=90)
    full = time.time()
    await async_wait_for(lambda: db(all_completed, ids), timeout=120, interval=0.2)
    ended = runs.ended()
    last_end = max(r.end for r in ended)
    await async_wait_for(lambda: replicas(cluster, "burst-workers") == BURST_MIN
                         and len(kubelet.running("burst-workers")) == BURST_MIN, timeout=90)
    back = time.time()

    # every worker slot of the full pool has started a task of the burst
    slots, workers = BURST_MAX * 2, set()
    for run in sorted(runs.runs(), key=lambda r: r.start):
        workers.add((run.host, run.pid))
        if len(workers) == slots:
            all_slots = run.start
            break
    else:
        all_slots = float("nan")
    at_full = [r for r in ended if all_slots <= r.end <= last_end]
    rate = len(at_full) / (last_end - all_slots) if last_end > all_slots else float("nan")
    busy_kills = kubelet.kills_while_busy()
    twice = runs.run_twice()
    print(f"\nMEASURED burst of {BURST} tasks of {BURST_SECONDS}s, pool {BURST_MIN}..{BURST_MAX} "
          f"pods x 2 processes, operator tick {OPERATOR_TICK}s, scaleDownDelaySeconds=3:\n"
          f"  burst -> full size, {BURST_MAX} pods ready (startup probe): {full - burst:.1f}s\n"
          f"  burst -> all {slots} worker slots running tasks: {all_slots - burst:.1f}s\n"
          f"  tasks/s at full size: {rate:.1f} ({len(at_full)} tasks in "
          f"{max(last_end - all_slots, 0):.1f}s; {slots} slots of {BURST_SECONDS}s tasks: "
          f"at most {slots / BURST_SECONDS:.0f})\n"
          f"  burst -> drained (last task done): {last_end - burst:.1f}s\n"
          f"  drained -> back at {BURST_MIN} pod(s), the others' processes gone: "
          f"{back - last_end:.1f}s\n"
          f"  pods killed while busy: {len(busy_kills)}\n"
          f"  tasks run twice: {len(twice)}\n"
          f"  scale patches: {[n for _, n in scale_patches(cluster, 'burst-workers')]}")

    assert kubelet.max_live("burst-workers") == BURST_MAX
    final = await db(statuses, ids)
    assert {(s, a) for s, a, _ in final.values()} == {("completed", 1)}
    assert_each_ran_once(runs, ids, kubelet)
    assert_no_busy_kill(kubelet)
    assert [k.reason for k in kubelet.kills] == ["scale-in"] * (BURST_MAX - BURST_MIN)
    assert not any(k.sigkilled for k in kubelet.kills), kubelet.describe()


async def test_a_pod_whose_worker_hangs_is_replaced_and_its_task_finishes_elsewhere(
    cluster, kubelet, operator, runs
):
    """SIGSTOP on the worker running a task: its heartbeats stop, the operator deletes the
    pod and rescues the task, the ReplicaSet replaces the pod, the task completes on
    another pod at its second attempt, and the frozen run never goes on."""
    await create(cluster, poller_deployment("hang-workers", replicas=2, processes=1,
                                            grace_period=2, termination_grace=4))
    await create(cluster, taskpool(
        "hang", "hang-workers", minReplicas=2, maxReplicas=2, tasksPerReplica=1,
        staleHeartbeatSeconds=2))
    await pool_ready(kubelet, "hang-workers", 2)
    operator.start()
    await first_status(cluster, "hang")

    [pk] = await db(create_recorded, RecordedTask, 3.0, str(runs.path), 1)
    queue_id = await async_wait_for(
        lambda: db(lambda: Task.objects.filter(pk=pk, status="running")
                   .values_list("queue_id", flat=True).first()), timeout=30)
    hung_pod, pid = queue_id.rsplit(":", 1)
    assert hung_pod in kubelet.pods, (queue_id, kubelet.describe())
    os.kill(int(pid), signal.SIGSTOP)  # the worker hangs: no progress, no heartbeats
    stopped = time.time()

    await async_wait_for(
        lambda: any(c.name == hung_pod for c in cluster.operator_calls("DELETE", "pods")),
        timeout=30)
    await async_wait_for(lambda: db(all_completed, [pk]), timeout=60)
    await pool_ready(kubelet, "hang-workers", 2)

    [(status, attempt, error)] = (await db(statuses, [pk])).values()
    assert (status, attempt) == ("completed", 2)
    [first, second] = runs.by_task()[pk]
    assert (first.host, first.attempt, first.outcome) == (hung_pod, 1, "lost")
    assert second.host != hung_pod and (second.attempt, second.outcome) == (2, "end")
    assert not [r for r in runs.records() if r["host"] == hung_pod and r["at"] > stopped]
    [kill] = [k for k in kubelet.kills if k.pod == hung_pod]
    assert kill.reason == "deleted"
    assert hung_pod not in {p.name for p in kubelet.live("hang-workers")}
    status_now = pool_status(cluster, "hang")
    assert status_now.get("restartedPods") == 1, status_now


async def test_two_pools_with_different_qualifier_settings_each_scale_for_their_own_tasks(
    cluster, kubelet, operator, runs
):
    """Two pools from zero, ``E2E_REGION`` "eu" and "us" in their settings (the TaskPool's
    and the pods'): each is sized for the tasks whose qualifier its settings meet, and its
    pods run only those."""
    for region in ("eu", "us"):
        settings = {"E2E_REGION": region}
        await create(cluster, poller_deployment(f"{region}-workers", replicas=0, processes=2,
                                                grace_period=2, settings=settings))
        await create(cluster, taskpool(
            region, f"{region}-workers", minReplicas=0, maxReplicas=4, tasksPerReplica=2,
            scaleDownDelaySeconds=1, settings=settings))
    operator.start()
    await first_status(cluster, "eu")
    await first_status(cluster, "us")

    record = str(runs.path)
    eu = await db(create_recorded, EuTask, 1.5, record, 8)  # 4 replicas' worth
    us = await db(create_recorded, UsTask, 1.5, record, 2)  # 1 replica's worth
    await async_wait_for(lambda: db(all_completed, eu + us), timeout=90, interval=0.2)
    for region in ("eu", "us"):
        await async_wait_for(lambda r=region: replicas(cluster, f"{r}-workers") == 0
                             and not kubelet.running(f"{r}-workers"), timeout=60)

    # sized for their own tasks only: 8 eu tasks at 2 per replica want 4, 2 us tasks 1
    # (the way down may take steps while the last tasks finish)
    eu_sizes = [n for _, n in scale_patches(cluster, "eu-workers")]
    us_sizes = [n for _, n in scale_patches(cluster, "us-workers")]
    assert eu_sizes[0] == max(eu_sizes) == 4 and eu_sizes[-1] == 0, eu_sizes
    assert us_sizes[0] == max(us_sizes) == 1 and us_sizes[-1] == 0, us_sizes
    assert kubelet.max_live("eu-workers") == 4 and kubelet.max_live("us-workers") == 1
    by_task = runs.by_task()
    assert all(r.host.startswith("eu-workers-") for pk in eu for r in by_task[pk])
    assert all(r.host.startswith("us-workers-") for pk in us for r in by_task[pk])
    assert_each_ran_once(runs, eu + us, kubelet)
    assert_no_busy_kill(kubelet)


async def test_a_restarted_operator_picks_up_where_it_was(cluster, kubelet, operator, runs):
    """The operator's memory is the TaskPool's status: killed (SIGKILL) in the middle of
    a scale-down delay, the new process keeps the delay's clock (``lowerSince``) and
    scales down when the first one would have, not a full delay after its own start."""
    delay = 6
    await create(cluster, poller_deployment("memo-workers", replicas=1, processes=2,
                                            grace_period=2))
    await create(cluster, taskpool(
        "memo", "memo-workers", minReplicas=1, maxReplicas=3, tasksPerReplica=2,
        scaleDownDelaySeconds=delay))
    await pool_ready(kubelet, "memo-workers", 1)
    operator.start()
    await first_status(cluster, "memo")

    ids = await db(create_recorded, RecordedTask, 1.0, str(runs.path), 12)
    await async_wait_for(lambda: replicas(cluster, "memo-workers") == 3, timeout=30)
    await async_wait_for(lambda: db(all_completed, ids), timeout=90, interval=0.2)
    lower_since = await async_wait_for(
        lambda: pool_status(cluster, "memo").get("lowerSince"), timeout=30)
    await operator.stop(signal.SIGKILL)  # a crash, in the middle of the delay
    assert replicas(cluster, "memo-workers") == 3
    restarted = time.monotonic()
    operator.start()

    await async_wait_for(lambda: replicas(cluster, "memo-workers") == 1, timeout=60)
    await pool_ready(kubelet, "memo-workers", 1)
    after = [(at, n) for at, n in scale_patches(cluster, "memo-workers") if at >= restarted]
    # down to 1, in steps when one pod finishes draining before the other
    sizes = [n for _, n in after]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1 and sizes[0] < 3, after
    down_at = after[0][0]  # the first scale-in after the restart
    # the new operator's status writes kept the clock it found
    clocks = {c.data["status"]["lowerSince"]
              for c in cluster.operator_calls("PATCH", "taskpools", subresource="status",
                                              since=restarted)
              if c.at < down_at and (c.data or {}).get("status", {}).get("lowerSince")}
    assert clocks <= {lower_since}, clocks
    # ... and scaled down after that clock's delay, not after a delay of its own
    first_tick = min(c.at for c in cluster.operator_calls("GET", "deployments")
                     if c.at >= restarted)
    wall = time.time() - time.monotonic()
    since = datetime.fromisoformat(lower_since.replace("Z", "+00:00")).timestamp()
    assert down_at + wall >= since + delay - 0.05  # the delay was respected
    assert down_at < first_tick + delay, (  # it was not started again
        f"scaled down {down_at - first_tick:.1f}s after the new operator's first tick")
    assert_each_ran_once(runs, ids, kubelet)
    assert_no_busy_kill(kubelet)


# the scale-in drains first: the pods to remove stop claiming before they are deleted
async def test_long_tasks_are_never_interrupted_by_a_scale_in(cluster, kubelet, operator, runs):
    """Long tasks (longer than the poller's grace period) while the pool shrinks, and a
    second wave that arrives just as the operator starts a scale-in (held between its
    first scale-in call and the rest until the pods claimed it): no task is interrupted
    or done again, no pod is killed while it runs one."""
    await create(cluster, poller_deployment("long-workers", replicas=1, processes=1,
                                            grace_period=1, termination_grace=3))
    await create(cluster, taskpool(
        "long", "long-workers", minReplicas=1, maxReplicas=4, tasksPerReplica=1,
        scaleDownDelaySeconds=1))
    await pool_ready(kubelet, "long-workers", 1)
    operator.start()
    await first_status(cluster, "long")

    record = str(runs.path)
    second: list[int] = []

    async def second_wave(request) -> None:
        if second or not is_scale_in_step(cluster, request):
            return
        second.extend(await db(create_recorded, RecordedTask, 4.0, record, 2))

        def claimed() -> bool:
            return Task.objects.filter(pk__in=second, status="running").count() == len(second)

        # let idle pods claim the wave before the operator carries on (bounded: when no
        # pod claims it, the operator goes on all the same)
        with contextlib.suppress(AssertionError):
            await async_wait_for(lambda: db(claimed), timeout=3)

    cluster.before.append(second_wave)
    first = []
    for seconds in (2.0, 3.0, 6.0, 6.0):
        first += await db(create_recorded, RecordedTask, seconds, record, 1)
    await async_wait_for(lambda: second, timeout=60)
    ids = first + second
    await async_wait_for(lambda: db(all_completed, ids), timeout=90, interval=0.2)
    await async_wait_for(lambda: replicas(cluster, "long-workers") == 1
                         and len(kubelet.running("long-workers")) == 1, timeout=60)

    print(f"\nlong tasks: scale patches {[n for _, n in scale_patches(cluster, 'long-workers')]}"
          f"; kills {[(k.pod, k.reason, k.running_at_sigterm) for k in kubelet.kills]}")
    problems = []
    if kubelet.kills_while_busy():
        problems.append("pods killed while running a task: " + "; ".join(
            f"{k.pod} ({k.reason}) running task(s) {list(k.running_at_sigterm)}"
            for k in kubelet.kills_while_busy()))
    twice = runs.run_twice()
    if twice:
        problems.append("tasks started more than once: " + describe_runs(
            r for rs in twice.values() for r in rs))
    final = await db(statuses, ids)
    if {(s, a) for s, a, _ in final.values()} != {("completed", 1)}:
        problems.append(f"tasks not completed at attempt 1: {final}")
    assert not problems, "\n".join(problems)
    assert_each_ran_once(runs, ids, kubelet)
