"""The poller's /metrics on its --health-port: a real poller runs tasks of every outcome
(completed, failed, retried, timed out, a worker killed by its task) while its workers are
recycled; every counter and histogram must match what happened, across the recycling, and
no task id or argument may show in the output."""

import urllib.request

import pytest
from example_tasks.models import FailTask, SleepTask, SumTask
from helpers import wait_for
from prometheus_client.parser import text_string_to_metric_families

from tests.testapp.models import CrashTask, FlakyTask, StubbornTask

pytestmark = pytest.mark.django_db(transaction=True)

ALLOWED_LABELS = {"op", "outcome", "reason", "state", "operation", "le"}
SECRET_A, SECRET_B, SECRET_MESSAGE = 7_777_123, 8_888_456, "classified-argument-xyz"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return values


def value(values: dict, name: str, **labels: str) -> float:
    return values.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_every_outcome_across_recycled_workers(start_poller, unused_tcp_port):
    # 2 self-claiming workers, each recycled after 3 tasks: their numbers must survive it
    poller = start_poller("-p", "2", "-t", "3", "--poll-interval", "0.5",
                          "--health-port", str(unused_tcp_port),
                          env={"TASK_TIMEOUT_KILL_GRACE_SECONDS": "0.5"})
    first = wait_for(lambda: _try_scrape(unused_tcp_port))
    assert "fullctl_tasks_claimed_total" in first

    sums = [SumTask.create_task(SECRET_A + i, SECRET_B) for i in range(4)]
    fails = [FailTask.create_task(SECRET_MESSAGE) for _ in range(2)]
    flaky = FlakyTask.create_task(1)  # fails once (retried after 0.4 s), then completes
    slow = SleepTask.create_task(30, timeout=1)  # the soft timeout stops it
    crash = CrashTask.create_task()  # kills its worker on both attempts: then failed
    stubborn = StubbornTask.create_task(30, timeout=1)  # ignores it: the supervisor kills it
    everything = [*sums, *fails, flaky, slow, crash, stubborn]
    for task in everything:
        task.wait(timeout=30)

    op = {"sum": sums[0].op, "fail": fails[0].op, "flaky": flaky.op, "sleep": slow.op,
          "crash": crash.op, "stubborn": stubborn.op}
    assert len(set(op.values())) == 6

    expected = {
        ("fullctl_tasks_claimed_total", (("op", op["sum"]),)): 4,
        ("fullctl_tasks_finished_total", (("op", op["sum"]), ("outcome", "completed"))): 4,
        ("fullctl_tasks_claimed_total", (("op", op["fail"]),)): 2,
        ("fullctl_tasks_finished_total", (("op", op["fail"]), ("outcome", "failed"))): 2,
        ("fullctl_tasks_claimed_total", (("op", op["flaky"]),)): 2,
        ("fullctl_tasks_finished_total", (("op", op["flaky"]), ("outcome", "failed"))): 1,
        ("fullctl_tasks_finished_total", (("op", op["flaky"]), ("outcome", "completed"))): 1,
        ("fullctl_tasks_retried_total", (("op", op["flaky"]), ("reason", "exception"))): 1,
        ("fullctl_tasks_claimed_total", (("op", op["sleep"]),)): 1,
        ("fullctl_tasks_finished_total", (("op", op["sleep"]), ("outcome", "timed_out"))): 1,
        ("fullctl_tasks_claimed_total", (("op", op["crash"]),)): 2,
        ("fullctl_tasks_retried_total", (("op", op["crash"]), ("reason", "worker_died"))): 1,
        ("fullctl_tasks_finished_total", (("op", op["crash"]), ("outcome", "failed"))): 1,
        ("fullctl_poller_worker_restarts_total", (("reason", "died"),)): 2,
        ("fullctl_tasks_claimed_total", (("op", op["stubborn"]),)): 1,
        ("fullctl_tasks_finished_total", (("op", op["stubborn"]), ("outcome", "timed_out"))): 1,
        ("fullctl_task_run_duration_seconds_count", (("op", op["stubborn"]),)): 1,
        ("fullctl_poller_worker_restarts_total", (("reason", "timed_out"),)): 1,
        ("fullctl_task_run_duration_seconds_count", (("op", op["sum"]),)): 4,
        ("fullctl_task_queue_wait_seconds_count", (("op", op["sum"]),)): 4,
        ("fullctl_task_run_duration_seconds_count", (("op", op["sleep"]),)): 1,
        ("fullctl_task_run_duration_seconds_count", (("op", op["flaky"]),)): 2,
    }

    def matches() -> dict | None:
        values = samples(scrape(unused_tcp_port))
        got = {key: value(values, key[0], **dict(key[1])) for key in expected}
        return values if got == expected else None

    try:
        values = wait_for(matches, timeout=15)
    except AssertionError:
        values = samples(scrape(unused_tcp_port))
        got = {key: value(values, key[0], **dict(key[1])) for key in expected}
        raise AssertionError(
            {k: (got[k], v) for k, v in expected.items() if got[k] != v}) from None

    # 4 + 2 + 2 + 1 finished by workers of 3 tasks each (crashes aside): some were recycled
    assert value(values, "fullctl_poller_worker_restarts_total", reason="recycled") >= 1
    # nothing else finished, no stray op, no database error
    finished = sum(v for (name, _), v in values.items() if name == "fullctl_tasks_finished_total")
    assert finished == 4 + 2 + 2 + 1 + 1 + 1
    assert all(v == 0 for (name, _), v in values.items()
               if name == "fullctl_poller_database_errors_total")
    # histograms: the timed-out run took about its 1 s timeout; buckets are cumulative
    assert 0.9 <= value(values, "fullctl_task_run_duration_seconds_sum", op=op["sleep"]) < 10
    assert value(values, "fullctl_task_run_duration_seconds_bucket",
                 op=op["sleep"], le="0.5") == 0
    assert value(values, "fullctl_task_run_duration_seconds_bucket",
                 op=op["sleep"], le="+Inf") == 1
    assert value(values, "fullctl_task_run_duration_seconds_bucket",
                 op=op["sum"], le="1.0") == 4
    waits = value(values, "fullctl_task_queue_wait_seconds_sum", op=op["sum"])
    assert 0 <= waits < 60
    # the retried attempt waited for its due time (0.4 s after the failure), not from created
    assert value(values, "fullctl_task_queue_wait_seconds_count", op=op["flaky"]) == 2
    # the slots: both workers there again, both idle
    wait_for(lambda: (v := samples(scrape(unused_tcp_port)))
             and value(v, "fullctl_poller_worker_slots", state="idle") == 2
             and value(v, "fullctl_poller_worker_slots", state="busy") == 0)

    # bounded labels only; no task id, argument or pid anywhere
    text = scrape(unused_tcp_port)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, sample
            assert not {str(t.pk) for t in everything} & set(sample.labels.values()), sample
    for secret in (str(SECRET_A), str(SECRET_B), SECRET_MESSAGE):
        assert secret not in text
    for pid in poller.worker_pids():
        assert f'"{pid}"' not in text and f":{pid}" not in text
    assert "worker died (killed by SIGKILL)" in poller.output


def _try_scrape(port: int) -> str | None:
    try:
        return scrape(port)
    except OSError:
        return None
