"""The pinned tools the deploy tests use: Helm 3, Helm 4 and kubectl."""

from __future__ import annotations

import json

from chartlib import (
    run,
    tool,
)


def test_tools_are_the_pinned_major_versions():
    assert run([tool("helm3"), "version", "--short"]).stdout.startswith("v3.")
    assert run([tool("helm4"), "version", "--short"]).stdout.startswith("v4.")
    out = run([tool("kubectl"), "version", "--client", "-o", "json"]).stdout
    assert json.loads(out)["clientVersion"]["minor"].startswith("35")
