"""Facts about the database connection that several layers need, and the one way to
say what went wrong with it."""

from django.db import ProgrammingError, connection


def is_postgresql() -> bool:
    """PostgreSQL gets the one-statement claim, advisory locks and LISTEN/NOTIFY; other
    databases (SQLite for projects that test on it) the portable paths."""
    return connection.vendor == "postgresql"


def describe_error(exc: BaseException) -> str:
    """What a person needs to read about a database error, in one line.

    The server's own message (``database "x" does not exist``), a missing table as the
    hint to migrate, and never the configured password.
    """
    cause = exc.__cause__ or exc
    sqlstate = getattr(cause, "sqlstate", None)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if sqlstate == "42P01" or (
        isinstance(exc, ProgrammingError) and "does not exist" in text and "relation" in text
    ):
        table = _missing_table(text)
        return f"table {table} does not exist: run manage.py migrate"
    password = connection.settings_dict.get("PASSWORD")
    if password:
        text = text.replace(str(password), "***")
    return text[:300]


def _missing_table(text: str) -> str:
    """``relation "django_fullctl_task" does not exist`` -> ``django_fullctl_task``."""
    if '"' in text:
        return text.split('"')[1]
    return "of fullctl"

