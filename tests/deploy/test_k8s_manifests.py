"""k8s/: the plain manifests are the chart's rendering, and kustomize builds them."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pytest
import yaml
from chartlib import (
    HELMS,
    K8S,
    ROOT,
    render,
    run,
    tool,
)


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("helm_name", HELMS)
def test_k8s_is_in_sync_with_the_chart(helm_name, tmp_path):
    env = {**os.environ, "HELM": str(tool(helm_name))}
    run([ROOT / "tools" / "render-k8s.sh", tmp_path / "k8s"], env=env)
    fresh, committed = read_tree(tmp_path / "k8s"), read_tree(K8S)
    assert sorted(fresh) == sorted(committed), "run tools/render-k8s.sh"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"k8s/ out of date ({stale}): run tools/render-k8s.sh"
    assert filecmp.dircmp(tmp_path / "k8s", K8S).diff_files == []


def test_kustomize_builds_the_chart_defaults():
    out = run([tool("kubectl"), "kustomize", K8S]).stdout
    built = [d for d in yaml.safe_load_all(out) if d]
    chart = [o for o in render("helm4", "defaults") if o["kind"] != "Pod"]  # no helm test pod

    def key(o):
        return (o["kind"], o["metadata"]["name"])

    assert sorted(map(key, built)) == sorted(map(key, chart))
    chart_by_key = {key(o): o for o in chart}
    for obj in built:
        assert obj == chart_by_key[key(obj)], key(obj)
