"""The one check that a value can be stored in a JSON column (task arguments, results)."""

import json
from typing import Any


def json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be stored as JSON (None when it can): the type and the reason."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"{type(value).__name__}: {exc}"
    return None
