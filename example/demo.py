"""The demo: migrate, queue a burst of sample tasks, process them, print where each ended.

Run it with ``make demo`` (which provides a PostgreSQL database in DATABASE_URL).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from example_tasks.models import EchoTask, FailTask, SumTask  # noqa: E402

from django_fullctl import runner  # noqa: E402


def main() -> int:
    call_command("migrate", verbosity=0)
    sums = [SumTask.create_task(i, i * 10) for i in range(5)]
    first = EchoTask.create_task("first link")
    second = EchoTask.create_task("second link", parent=first)
    broken = FailTask.create_task("this one fails on purpose")
    orphan = EchoTask.create_task("never runs", parent=broken)
    expected = [(t, "completed") for t in sums + [first, second]]
    expected += [(broken, "failed"), (orphan, "cancelled")]

    while runner.run_next():
        pass

    ok = True
    print(f"{'task':<24}{'status':<12}{'expected':<12}result / error")
    for task, want in expected:
        task.refresh_from_db()
        outcome = task.result if task.status == "completed" else (task.error or "").splitlines()[-1]
        print(f"{str(task.op) + '#' + str(task.pk):<24}{task.status:<12}{want:<12}{outcome}")
        ok &= task.status == want
    print("every task ended as expected" if ok else "SOME TASKS DID NOT END AS EXPECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
