"""Facts about the database connection that several layers need."""

from django.db import connection


def is_postgresql() -> bool:
    """PostgreSQL gets the one-statement claim, advisory locks and LISTEN/NOTIFY; other
    databases (SQLite for projects that test on it) the portable paths."""
    return connection.vendor == "postgresql"
