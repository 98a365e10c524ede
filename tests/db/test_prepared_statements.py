"""The poller's connections prepare the hot statements on the server (Django turns that
off for every connection, for the sake of poolers), unless the project says otherwise."""

import pytest
from django.db import connection
from django.db.backends.signals import connection_created
from django.test import override_settings
from example_tasks.models import SumTask

from django_fullctl.models import Task
from django_fullctl.poller.database import use_prepared_statements

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_receiver_left_behind():
    """The receiver lives for the process (a poller's worker): not past one test here."""
    yield
    connection_created.disconnect(dispatch_uid="fullctl.prepare_threshold")
    connection.close()


def fresh_connection():
    connection.close()
    connection.ensure_connection()
    return connection.connection


def test_the_poller_turns_on_prepared_statements(postgresql_only):
    assert fresh_connection().prepare_threshold is None  # Django's default
    use_prepared_statements()
    raw = fresh_connection()
    assert raw.prepare_threshold == 2
    SumTask.create_task(1, 1)
    for _ in range(3):  # the claim is prepared after two executions
        Task.queue.claim("w", ["task_sum"])
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE"
                       " '%%FOR UPDATE SKIP LOCKED%%'")
        assert cursor.fetchone()[0] == 1


def test_zero_leaves_them_off_for_a_pooler(postgresql_only):
    connection_created.disconnect(dispatch_uid="fullctl.prepare_threshold")
    with override_settings(TASK_PREPARE_THRESHOLD=0):
        use_prepared_statements()  # connects no receiver at all
        assert fresh_connection().prepare_threshold is None
