"""Shared fixtures; the helpers that tests import are in helpers.py. The database is real:
PostgreSQL from ``DATABASE_URL`` (``make test`` starts a throwaway embedded server when
it is unset), or SQLite for the portable subset."""

import json

import pytest
from django.db import connection
from helpers import PollerProcess, process_env, test_database_url


@pytest.fixture
def postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL behaviour")


@pytest.fixture
def start_poller(tmp_path):
    """Start pollers against the test database; each is stopped (and its group killed) after."""
    started: list[PollerProcess] = []

    def start(*args: str, settings: dict | None = None, env: dict | None = None):
        # this run's settings module (tests.testapp.settings) and the repository root on
        # PYTHONPATH, so the poller knows the test-only task classes
        environment = process_env(**{
            "DATABASE_URL": test_database_url(),
            "PYTHONUNBUFFERED": "1",
            "TASK_TRACK_INTERVAL_SECONDS": "0.5",
            "FULLCTL_POOL_SETTINGS": json.dumps(settings or {}),
            **(env or {}),
        })
        poller = PollerProcess(list(args), environment, tmp_path / f"poller-{len(started)}.log")
        started.append(poller)
        return poller

    yield start
    for poller in started:
        poller.stop()


@pytest.fixture
def db_proxy():
    """A cuttable TCP path to the test database, and the DATABASE_URL that goes through it."""
    from urllib.parse import urlsplit, urlunsplit

    from netproxy import CuttableProxy

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL behaviour")
    settings = connection.settings_dict
    host = settings["HOST"] or "/var/run/postgresql"
    port = int(settings["PORT"] or 5432)
    target = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
    proxy = CuttableProxy(target)
    parts = urlsplit(test_database_url())
    auth = parts.netloc.rsplit("@", 1)[0]
    proxy.url = urlunsplit(
        (parts.scheme, f"{auth}@127.0.0.1:{proxy.port}", parts.path, "", "")
    )
    yield proxy
    proxy.close()
