"""Fixtures of the deploy tests (the helpers they import are in chartlib.py)."""

from pathlib import Path

import pytest

# chartlib's asserts (one(), flag()) explain themselves as they did inside the test module
pytest.register_assert_rewrite("chartlib")

from chartlib import HELMS, tool  # noqa: E402 - after the rewrite hook


@pytest.fixture(params=HELMS)
def helm(request) -> Path:
    return tool(request.param)
