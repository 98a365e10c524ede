"""The demo: a burst of sample tasks processed by a real poller, then a summary.

``make demo`` runs it with a PostgreSQL database in DATABASE_URL (a throwaway embedded
server unless you set one). It migrates, queues sums, a chain, a qualified task, a slow
task that times out, a failing task and a queued management command, starts
``manage.py fullctl_poll_tasks --processes 2`` (with the settings that qualify the
qualified task), shows a progress line while the queue drains (redrawn in place on a
terminal, one plain line per change when stdout is a pipe or a file), prints where every
task ended, and stops the poller with SIGTERM as Kubernetes would.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

EXAMPLE_DIR = Path(__file__).resolve().parent


def setup_django() -> None:
    """The example project's settings (run by main(): importing this module sets nothing up)."""
    if str(EXAMPLE_DIR) not in sys.path:
        sys.path.insert(0, str(EXAMPLE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    import django

    django.setup()


POOL_SETTINGS = {"IMPORTANT_SETTING": True, "IMPORTANT_LIST": ["xyz"]}


def manage(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "FULLCTL_POOL_SETTINGS": json.dumps(POOL_SETTINGS)}
    return subprocess.Popen([sys.executable, "manage.py", *args], cwd=EXAMPLE_DIR, env=env,
                            **popen)


def queue_samples() -> list[tuple]:
    """Create the burst; return each task with the status it should end in."""
    from django.contrib.auth.models import User
    from example_tasks.models import EchoTask, FailTask, ImportantTask, SleepTask, SumTask

    from django_fullctl.models import Task

    expected = [(SumTask.create_task(i, i * 10), "completed") for i in range(20)]
    first = EchoTask.create_task("first link")
    second = EchoTask.create_task("second link", parent=first)
    third = SumTask.create_task(1, 2, parent=second)
    expected += [(first, "completed"), (second, "completed"), (third, "completed")]
    expected.append((ImportantTask.create_task(), "completed"))
    expected.append((SleepTask.create_task(30, timeout=2), "failed"))
    broken = FailTask.create_task("this one fails on purpose")
    expected += [(broken, "failed"), (EchoTask.create_task("never", parent=broken), "cancelled")]
    User.objects.get_or_create(username="demo")
    queued = manage("fullctl_promote_user", "demo", "-Q", stdout=subprocess.PIPE, text=True)
    output, _ = queued.communicate(timeout=60)
    task_id = int(re.search(r"task (\d+)", output).group(1))
    expected.append((Task.objects.get(pk=task_id), "completed"))
    return expected


class ProgressLine:
    """The "N/M tasks finished" line. On a terminal it is redrawn in place (a carriage
    return, no newline until the end); anywhere else (a pipe, a file, a CI log) each new
    count is a plain line of its own, so the output has no ``\\r`` in it."""

    def __init__(self, total: int, stream: TextIO | None = None):
        self.total = total
        self.stream = stream if stream is not None else sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.redraw = bool(isatty and isatty())
        self.shown: int | None = None

    def update(self, done: int) -> None:
        if done == self.shown:
            return
        self.shown = done
        text = f"{done}/{self.total} tasks finished"
        self.stream.write(f"\r{text}" if self.redraw else f"{text}\n")
        self.stream.flush()

    def close(self) -> None:
        """End the redrawn line (plain lines are already ended)."""
        if self.redraw and self.shown is not None:
            self.stream.write("\n")
            self.stream.flush()


def progress(tasks: list, deadline: float, stream: TextIO | None = None) -> None:
    """Show the progress line until every task is final or the deadline passes."""
    from django_fullctl.models import FINAL_STATUSES, Task

    ids = [t.pk for t in tasks]
    line = ProgressLine(len(ids), stream)
    try:
        while time.monotonic() < deadline:
            done = Task.objects.filter(pk__in=ids, status__in=FINAL_STATUSES).count()
            line.update(done)
            if done == len(ids):
                break
            time.sleep(0.2)
    finally:
        line.close()


def outcome(task) -> str:
    if task.status == "completed":
        return repr(task.result)[:50]
    return (task.error or "").strip().splitlines()[-1][:70]


def main() -> int:
    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    expected = queue_samples()
    print(f"queued {len(expected)} tasks; starting fullctl_poll_tasks --processes 2")
    log_path = EXAMPLE_DIR / "demo-poller.log"
    with open(log_path, "w") as log:
        poller = manage("fullctl_poll_tasks", "--processes", "2", "--poll-interval", "1",
                        stdout=log, stderr=subprocess.STDOUT)
        try:
            progress([t for t, _ in expected], time.monotonic() + 120)
        finally:
            poller.send_signal(signal.SIGTERM)
            code = poller.wait(60)
    print(f"poller stopped with exit code {code} (its log: {log_path.name})\n")

    ok = code == 0
    print(f"{'task':<22}{'status':<11}{'expected':<11}result / error")
    for task, want in expected:
        task.refresh_from_db()
        print(f"{task.op + '#' + str(task.pk):<22}{task.status:<11}{want:<11}{outcome(task)}")
        ok &= task.status == want
    print("\nevery task ended as expected" if ok else "\nSOME TASKS DID NOT END AS EXPECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
