"""Helpers the tests import: waiting with a deadline (``wait_for`` and its async twin
``async_wait_for``), racing threads, the test database's URL and the environment for other
processes, and a real poller process."""

import asyncio
import contextlib
import inspect
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.db import connection


def wait_for(condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.05):
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)


async def async_wait_for(
    condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.05
):
    """``wait_for`` without blocking the event loop: poll ``condition`` (a function, or a
    coroutine function, e.g. one that reads the database in a thread) until it returns
    something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        await asyncio.sleep(interval)


def run_threads(count: int, target: Callable[[int], object]) -> list:
    """Run ``target(i)`` in ``count`` threads released at once; return results or exceptions."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def body(i: int) -> None:
        from django.db import connections

        barrier.wait()
        try:
            results[i] = target(i)
        except Exception as exc:
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_database_url() -> str:
    """A DATABASE_URL for other processes, pointing at pytest-django's test database."""
    from urllib.parse import quote

    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    auth = quote(settings["USER"] or "")
    if settings["PASSWORD"]:
        auth += ":" + quote(settings["PASSWORD"])
    host, name = settings["HOST"] or "", quote(settings["NAME"])
    if host.startswith("/"):
        return f"postgresql://{auth}@/{name}?host={host}"
    return f"postgresql://{auth}@{host}:{settings['PORT'] or 5432}/{name}"


test_database_url.__test__ = False  # a helper, not a test


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = ROOT / "example"


TEST_SETTINGS = "tests.testapp.settings"


def settings_module() -> str:
    """The settings module of this test run (``tests.testapp.settings``: the example project
    plus the test-only task classes), for the processes the tests start. Read from the
    environment, where pytest-django puts it: under ``override_settings`` (the ``settings``
    fixture) ``django.conf.settings.SETTINGS_MODULE`` is None."""
    return os.environ.get("DJANGO_SETTINGS_MODULE") or TEST_SETTINGS


def with_test_settings(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a Django process of the tests: the settings module of this run unless
    ``env`` names one, and the repository root on ``PYTHONPATH`` so ``tests.testapp``
    imports (a process started in example/ only finds example_project by itself)."""
    env = dict(env)
    env.setdefault("DJANGO_SETTINGS_MODULE", settings_module())
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in paths:
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *paths])
    return env


def process_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child process of the tests, with this run's settings
    module and ``extra`` on top."""
    return with_test_settings(
        {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module(), **extra}
    )


class PollerProcess:
    """A real ``manage.py fullctl_poll_tasks`` in its own process group, logging to a file.

    It runs with the settings module of ``env`` (this run's when ``env`` names none), with
    the repository root on ``PYTHONPATH``: the test-only task classes are there."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.log_file = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "fullctl_poll_tasks", *args],
            cwd=EXAMPLE_DIR, env=with_test_settings(env), stdout=self.log_file,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> str:
        return wait_for(lambda: text in self.output and self.output, timeout)

    def worker_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"worker started worker=\S+:(\d+)", self.output)]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            # drain, then a second signal: stop at once (tasks are requeued either way)
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(0.5)
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log_file.close()


def final(task, timeout: float = 30.0):
    """``task`` once it has finished (``wait()``), for the poller tests."""
    task.wait(timeout=timeout)
    return task


def running(task, timeout: float = 30.0):
    """``task`` once a worker runs it."""
    def is_running():
        task.refresh_from_db()
        return task.status == "running" and task.queue_id
    wait_for(is_running, timeout)
    return task


def worker_pid(task) -> int:
    """The pid of the worker that claimed ``task`` (``queue_id`` is ``host:pid``)."""
    return int(task.queue_id.rsplit(":", 1)[1])
