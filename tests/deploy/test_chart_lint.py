"""helm lint --strict, Helm 3 and Helm 4 rendering the same, and the values schema refusing
what it should."""

from __future__ import annotations

import pytest
from chartlib import (
    CHART,
    SCENARIOS,
    render_text,
    run,
)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict(helm, scenario):
    argv = [helm, "lint", "--strict", CHART]
    for f in SCENARIOS[scenario][2]:
        argv += ["--values", f]
    out = run(argv).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm3_and_helm4_render_the_same(scenario):
    assert render_text("helm3", scenario) == render_text("helm4", scenario)


BAD_VALUES = {
    "typo top-level key": ("operater:\n  enabled: false\n", "operater"),
    "typo nested key": ("web:\n  replica: 3\n", "replica"),
    "typo in a pool": ("pollers:\n  - name: default\n    gracePeriod: 30\n", "gracePeriod"),
    "typo in pool defaults": ("pollerDefaults:\n  autoscale:\n    maxReplica: 3\n", "maxReplica"),
    "negative count": ("web:\n  replicas: -1\n", "replicas"),
    "negative processes": ("pollers:\n  - name: default\n    processes: -2\n", "processes"),
    "pool without a name": ("pollers:\n  - processes: 2\n", "name"),
    "bad pool name": ("pollers:\n  - name: Not_A_Label\n", "name"),
    "wrong type": ("web:\n  workers: two\n", "workers"),
    "wrong type bool": ("operator:\n  enabled: 'yes'\n", "enabled"),
    "root user": ("securityContext:\n  runAsUser: 0\n", "runAsUser"),
    "bad quantity": ("web:\n  resources:\n    limits:\n      memory: lots\n", "memory"),
    # refused by the templates (the schema cannot express these)
    "two databases": ("database:\n  existingSecret: mydb\n", "not both"),
    "no database": ("database:\n  postgresql:\n    enabled: false\n", "existingSecret"),
    "duplicate pools": ("pollers:\n  - name: twin\n  - name: twin\n", "used twice"),
    "min above max": (
        "pollers:\n  - name: default\n    autoscale: {minReplicas: 5, maxReplicas: 2}\n",
        "above maxReplicas",
    ),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_values_are_refused(helm, case, tmp_path):
    text, needle = BAD_VALUES[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = run([helm, "template", "x", CHART, "--values", bad], check=False)
    assert proc.returncode != 0, f"{case}: accepted\n{proc.stdout[:500]}"
    assert needle in proc.stderr, proc.stderr
