"""The one place that reads fullctl's settings, with safe defaults.

Every ``TASK_*`` knob has a code default, so a project only sets what it wants to change.
A few of them may be overridden from the environment (named in ``ENV_OVERRIDES``), which
is how a pod tunes a poller without a new settings module.
"""

import os
import socket
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # who is creating or processing tasks; None means "{hostname}:{pid}"
    "TASK_ORM_WORKER_ID": None,
    # seconds between two heartbeats of a running task
    "TASK_TRACK_INTERVAL_SECONDS": 5,
    # seconds without a heartbeat before a running task counts as orphaned
    "TASK_ORPHANED_HEARTBEAT_TIMEOUT": 30,
    # heartbeat age that the /health view reports as stale
    "HEALTH_CHECK_TASK_INTERVAL_SECONDS": 20,
    # pending tasks that make the /health backlog check fail (0 disables it)
    "TASK_BACKLOG_MAX_PENDING": 10000,
    # age in seconds of the oldest runnable pending task that fails the backlog check (0 disables)
    "TASK_BACKLOG_MAX_AGE_SECONDS": 0,
    # how many times a task may be started before a crash fails it for good
    "TASK_DEFAULT_MAX_ATTEMPTS": 2,
    # backstop poll interval of wait() and of the poller, in seconds
    "TASK_WAIT_POLL_INTERVAL_SECONDS": 1.0,
    "TASK_POLL_INTERVAL_SECONDS": 5.0,
    # seconds between the soft timeout signal and the hard kill of a worker
    "TASK_TIMEOUT_KILL_GRACE_SECONDS": 5.0,
    # the operator's tick, in seconds
    "TASK_OPERATOR_INTERVAL_SECONDS": 10.0,
}

ENV_OVERRIDES = {
    "TASK_TRACK_INTERVAL_SECONDS",
    "TASK_ORPHANED_HEARTBEAT_TIMEOUT",
    "TASK_TIMEOUT_KILL_GRACE_SECONDS",
}


def get(name: str) -> Any:
    """Return setting ``name``: environment (where allowed), then Django settings, then default."""
    default = DEFAULTS[name]
    if name in ENV_OVERRIDES and os.environ.get(name):
        return float(os.environ[name])
    return getattr(settings, name, default)


def worker_id(pid: int | None = None) -> str:
    """Identify a process in ``source`` and ``queue_id``; the hostname is the pod name.

    With ``pid`` (the poller's worker processes) the id always ends in ``:{pid}``, even
    when ``TASK_ORM_WORKER_ID`` is set, so sibling workers never share an identity.
    """
    configured = get("TASK_ORM_WORKER_ID")
    if configured and pid is None:
        return configured
    return f"{configured or socket.gethostname()}:{pid or os.getpid()}"
