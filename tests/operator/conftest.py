"""Fixtures of the operator's tests: the emulator on a real port and the real kopf operator
in the test's event loop (see harness.py for what they are made of)."""

import asyncio

import kopf
import pytest
from harness import NAMESPACE, Emulator, Operator, serving


@pytest.fixture
async def cluster(tmp_path, monkeypatch):
    """A Kubernetes API emulator on a real port, with the resources the operator uses, and
    ``KUBECONFIG`` naming it (``cluster.kubeconfig``): kopf's default login and the
    operator's client find it there, as they would in production."""
    async with serving(Emulator(), tmp_path, monkeypatch) as emulator:
        yield emulator


@pytest.fixture
async def operator(cluster: Emulator):
    """The real kopf operator (all registered handlers) in this event loop."""
    stop, ready = asyncio.Event(), asyncio.Event()
    memo = kopf.Memo()
    # kopf cancels every task of the loop that appeared after it started when it stops:
    # the tasks that pytest-asyncio creates later for this fixture's teardown are added
    # to the ignored ones before stopping it
    ignored = set(asyncio.all_tasks())
    tasks = await kopf.spawn_tasks(
        standalone=True, namespaces=[NAMESPACE], stop_flag=stop, ready_flag=ready, memo=memo,
    )
    runner = asyncio.create_task(kopf.run_tasks(tasks, ignored=ignored))
    await asyncio.wait_for(ready.wait(), timeout=15)
    try:
        yield Operator(memo)
    finally:
        ignored.update(asyncio.all_tasks() - set(tasks))
        stop.set()
        await asyncio.wait_for(runner, timeout=15)
