"""``@task`` functions of Django's Tasks API for tests/tasks_backend. The pollers import
this module by the path stored in each row, and then its signal receivers too: with
``FULLCTL_TEST_SIGNAL_LOG`` set, every process appends one line per signal to that file."""

import asyncio
import os
import signal
import time
from pathlib import Path

from tests.testapp.tasks_framework import signals, task


class Boom(Exception):
    """What ``fail`` raises: a class of this module, so its dotted path is not builtins."""


@task()
def add(a, b):
    return a + b


@task(queue_name="emails", priority=10)
def send_welcome(user_id):
    return f"welcome {user_id}"


@task()
def slow_add(a, b, seconds=1.0):
    time.sleep(seconds)
    return a + b


@task()
def fail(message):
    raise Boom(message)


@task(takes_context=True)
def die_on_first_attempt(context, marker):
    """SIGKILLs its own worker on attempt 1; returns the attempt it ran as otherwise."""
    with open(marker, "a") as file:
        file.write(f"{context.attempt}\n")
    if context.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return context.attempt


@task()
async def async_add(a, b):
    await asyncio.sleep(0.01)
    return a + b


@task(queue_name="ordered")
def stamp(label):
    return label


def _log(kind: str, task_result, extra: str = "") -> None:
    path = os.environ.get("FULLCTL_TEST_SIGNAL_LOG")
    if path:
        with Path(path).open("a") as file:
            file.write(f"{kind} {task_result.id} {task_result.status} {extra}\n".rstrip() + "\n")


def _on_started(sender, task_result, **kwargs):
    _log("started", task_result)


def _on_finished(sender, task_result, **kwargs):
    # what the store says when the signal arrives: the outcome must be written by then
    stored = task_result.task.get_result(task_result.id).status
    _log("finished", task_result, f"stored={stored}")


signals.task_started.connect(_on_started, weak=False, dispatch_uid="fullctl-test-started")
signals.task_finished.connect(_on_finished, weak=False, dispatch_uid="fullctl-test-finished")
