"""docs/kubernetes.md and the README against the chart, and the Dockerfile."""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import yaml
from chartlib import (
    DOCS,
    K8S,
    ROOT,
    WORKLOAD_KINDS,
    by_kind,
    containers,
    pod_spec,
    render,
    run,
    tool,
)


def docs() -> tuple[list[str], dict[str, str]]:
    """docs/kubernetes.md: the shell commands of its ```sh blocks, and the files it spells out
    (a fenced block right after an `<!-- file: NAME -->` comment)."""
    commands: list[str] = []
    files: dict[str, str] = {}
    lines = DOCS.read_text().splitlines()
    pending_file = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = re.fullmatch(r"<!-- file: (\S+) -->", line.strip())
        if marker:
            pending_file = marker.group(1)
        elif line.startswith("```") and line.strip() != "```":
            info = line[3:].strip()
            body = []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if pending_file:
                files[pending_file] = "\n".join(body) + "\n"
                pending_file = None
            elif info == "sh":
                commands += [ln for ln in body if ln.strip() and not ln.startswith("#")]
        i += 1
    return commands, files


def test_docs_helm_commands_render(helm, tmp_path):
    """Every helm command of the guide, as `helm template` (install and upgrade need a cluster),
    with the values files the guide spells out."""
    commands, files = docs()
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    helm_commands = [shlex.split(c) for c in commands if c.startswith("helm ")]
    assert len(helm_commands) >= 6
    for tokens in helm_commands:
        if "|" in tokens:
            tokens = tokens[: tokens.index("|")]
        verb, rest = tokens[1], tokens[2:]
        if verb in {"test", "uninstall"}:
            assert rest[0] == "fullctl-tasks", tokens
            continue
        if verb == "install":
            argv = ["template", *rest]
        elif verb == "upgrade":
            argv = ["template", *[t for t in rest if t != "--install"], "--is-upgrade"]
        else:
            assert verb in {"lint", "template"}, tokens
            argv = [verb, *rest]
        for i, token in enumerate(argv):
            if argv[i - 1] in {"-f", "--values"}:
                assert token in files, f"{token} is not spelled out in the guide"
                argv[i] = str(tmp_path / token)
        run([helm, *argv])


def test_docs_secrets_match_the_values():
    """`kubectl create secret generic NAME --from-literal=KEY=...` in the guide: the production
    values refer to exactly those names and keys."""
    commands, files = docs()
    created = set()
    for command in commands:
        m = re.match(r"kubectl .*create secret generic (\S+) --from-literal=([A-Za-z_]+)=", command)
        if m:
            created.add((m.group(1), m.group(2)))
    assert len(created) == 2
    prod = yaml.safe_load(files["production-values.yaml"])
    assert created == {
        (prod["database"]["existingSecret"], prod["database"]["key"]),
        (prod["secretKey"]["existingSecret"], prod["secretKey"]["key"]),
    }


def test_docs_name_only_rendered_objects():
    """Every `kind/name`, object name and `-l selector` the guide uses exists in the chart's
    rendering with the guide's values."""
    text = DOCS.read_text()
    _, files = docs()
    objs = render("helm4", "defaults")
    pools = yaml.safe_load(files["pools.yaml"])
    objs += render("helm4", "defaults", ("--set-json", f"pollers={json.dumps(pools['pollers'])}"))
    names = {(o["kind"].lower(), o["metadata"]["name"]) for o in objs}
    names.add(("persistentvolumeclaim", "data-fullctl-tasks-postgresql-0"))  # the StatefulSet's
    aliases = {
        "deploy": "deployment",
        "svc": "service",
        "sts": "statefulset",
        "tp": "taskpool",
        "pvc": "persistentvolumeclaim",
        "crd": "customresourcedefinition",
    }
    kinds = "deployment|deploy|service|svc|statefulset|sts|job|secret|taskpool|tp|pvc|crd"
    refs = re.findall(rf"\b({kinds})/((?:fullctl-tasks|taskpools)[-.a-z0-9]*[a-z0-9])", text)
    refs += re.findall(
        r"\b(?:get|describe|patch|scale) (deployment|taskpool|tp|job|secret) "
        r"(fullctl-tasks[-a-z0-9]*)",
        text,
    )
    assert len(refs) >= 10, refs
    for kind, name in refs:
        assert (aliases.get(kind, kind), name) in names, f"the guide names {kind}/{name}"
    labels = [o["metadata"].get("labels", {}) for o in objs]
    selectors = re.findall(r"-l ([a-z0-9./-]+=[-a-z0-9]+(?:,[a-z0-9./-]+=[-a-z0-9]+)*)", text)
    assert selectors
    for selector in selectors:
        wanted = dict(pair.split("=", 1) for pair in selector.split(","))
        assert any(wanted.items() <= lab.items() for lab in labels), f"nothing has {selector}"
    for path in re.findall(r"(?:-f|-k) ((?:k8s|charts)/[^\s`]*)", text):
        assert (ROOT / path).exists(), path


def test_docs_kustomize_overlay(tmp_path):
    """The guide's overlay of k8s/ (namespace, image, secrets) builds as it says."""
    import base64
    import shutil

    _, files = docs()
    shutil.copytree(K8S, tmp_path / "k8s")
    for name, text in files.items():
        if name.startswith("k8s-tasks/"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
    proc = subprocess.run(
        [str(tool("kubectl")), "kustomize", "k8s-tasks/"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    built = [d for d in yaml.safe_load_all(proc.stdout) if d]
    for obj in built:
        if obj["kind"] != "CustomResourceDefinition":
            assert obj["metadata"]["namespace"] == "tasks", obj["metadata"]
    (binding,) = by_kind(built, "RoleBinding")
    assert binding["subjects"][0]["namespace"] == "tasks"
    images = {
        c["image"] for o in built if o["kind"] in WORKLOAD_KINDS for c in containers(pod_spec(o))
    }
    assert images == {"your-registry/fullctl-tasks:0.1.0", "postgres:18.6-bookworm"}
    (secret,) = by_kind(built, "Secret")
    assert secret["metadata"]["name"] == "fullctl-tasks"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == {"DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "DATABASE_URL"}
    assert data["POSTGRES_PASSWORD"] in data["DATABASE_URL"]


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M | re.I)
    assert len(stages) == 2 and stages[0][1] == "builder"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, flags=re.M).group(1)
    assert re.fullmatch(r"python:3\.11[-.\w]*-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    final = text[text.rindex("\nFROM ") :]
    assert 'pip install ".[web,operator' in text
    for needle in (
        "COPY --from=builder /opt/venv /opt/venv",
        "COPY example /app/example",
        "WORKDIR /app/example",
        "USER 10001:10001",
        "PYTHONUNBUFFERED=1",
        "PYTHONDONTWRITEBYTECODE=1",
        "DJANGO_SETTINGS_MODULE=example_project.settings",
    ):
        assert needle in final, needle
    for build_tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert build_tool not in final, f"{build_tool} in the final stage"
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", final, flags=re.M).group(1))
    assert cmd == [
        "gunicorn",
        "example_project.wsgi",
        "--bind",
        "0.0.0.0:8000",
        "--worker-tmp-dir",
        "/tmp",
    ]
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 :][:1], ".dockerignore: allow-list after '*'"
    for needed in ("!pyproject.toml", "!django_fullctl/", "!fullctl/", "!operator/", "!example/"):
        assert needed in ignore, needed


def test_readme_kubernetes_commands_are_the_guides():
    """The README's Kubernetes section only uses commands that the guide has (and that the
    tests above render and check)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## On Kubernetes"):].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands = [line for block in blocks for line in block.splitlines() if line.strip()]
    assert commands
    guide, _ = docs()
    for command in commands:
        assert command in guide, f"README command not in docs/kubernetes.md: {command}"
