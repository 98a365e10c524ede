"""docs/install.md, followed step by step in a brand-new Django project.

The doc marks each block a reader acts on with ``<!-- step: ... -->``; this test reads
those blocks and applies them exactly as written:

* ``run``: shell commands, run one by one (``cd`` changes the directory, ``python`` and
  ``django-admin`` are the venv's);
* ``edit FILE``: Python applied to a file that ``startproject``/``startapp`` generated, as
  a reader would: each top-level assignment, class or function replaces the file's one of
  the same name or is appended, and the imports join the file's;
* ``poller``: the poller command, started as a real process (with one worker process
  instead of the doc's count, to keep the test quick);
* ``shell`` and ``shell-output``: code typed into ``manage.py shell`` and what it prints;
* ``health-output``: what ``GET /health`` answers.

The project gets its own PostgreSQL database on the test server (``DATABASE_URL``) and
imports ``django_fullctl`` from this checkout (installed editable in the venv); nothing
of the example project is on its path.
"""

import ast
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "install.md"
BIN = Path(sys.executable).parent
# a marker comment, then the fenced block right under it
STEP = re.compile(
    r"^<!-- step: (?P<step>[^>]+?) -->[ \t]*\n```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^```",
    re.M | re.S,
)
# the steps the doc must keep marking, in this order
EXPECTED_STEPS = [
    "run",
    "edit mysite/settings.py",
    "edit mysite/urls.py",
    "edit jobs/models.py",
    "run",
    "poller",
    "shell",
    "shell-output",
    "health-output",
]
# everything the test itself runs in the project: a deadline for each
COMMAND_TIMEOUT = 60.0

HEALTH_PROBE = """
import json

import django_fullctl
from django.conf import settings
from django.test import Client

response = Client().get("/health", HTTP_HOST="localhost")
print(json.dumps({
    "settings": settings.SETTINGS_MODULE,
    "django_fullctl": django_fullctl.__file__,
    "status": response.status_code,
    "content_type": response["Content-Type"],
    "body": response.json(),
}))
"""


def doc_steps() -> list[tuple[str, str]]:
    """(step, block text) for every marked block of docs/install.md, in order."""
    return [(m["step"].strip(), m["body"]) for m in STEP.finditer(DOC.read_text())]


def test_install_doc_marks_its_steps():
    """Cheap half of the check: the markers are all there and the Python blocks parse."""
    steps = doc_steps()
    assert [name for name, _ in steps] == EXPECTED_STEPS
    for name, body in steps:
        if name.startswith("edit ") or name == "shell":
            ast.parse(body, filename=f"docs/install.md [{name}]")
        if name == "health-output":
            json.loads(body)


# -- applying an "edit" step ----------------------------------------------------------


def _key(node: ast.stmt) -> tuple | None:
    """What a top-level statement defines, to find the generated file's counterpart."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
        return ("name", target.id) if isinstance(target, ast.Name) else None
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return ("name", node.target.id)
    if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return ("name", node.name)
    if isinstance(node, ast.ImportFrom):
        return ("from", node.module, node.level)
    if isinstance(node, ast.Import):
        return ("import", tuple(sorted(alias.name for alias in node.names)))
    return None


def _span(node: ast.stmt) -> tuple[int, int]:
    """0-based [start, end) line range of a statement, decorators included."""
    decorators = getattr(node, "decorator_list", [])
    start = min([node.lineno, *(d.lineno for d in decorators)])
    return start - 1, node.end_lineno


def _alias(alias: ast.alias) -> str:
    return f"{alias.name} as {alias.asname}" if alias.asname else alias.name


def apply_python_step(path: Path, snippet: str) -> None:
    """Edit ``path`` as the doc tells a reader to (see the module docstring)."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    tree = ast.parse(text)
    existing = {key: node for node in tree.body if (key := _key(node))}
    snippet_lines = snippet.splitlines(keepends=True)

    def source(node: ast.stmt) -> str:
        start, end = _span(node)
        return "".join(snippet_lines[start:end])

    imports_end = max(
        (node.end_lineno for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)),
        default=0,
    )
    edits: list[tuple[int, int, str]] = []  # replace lines[start:end] with text
    new_imports: list[str] = []
    appended: list[str] = []
    for node in ast.parse(snippet).body:
        key = _key(node)
        old = existing.get(key) if key else None
        if isinstance(node, ast.Import):
            if old is None:
                new_imports.append(source(node))
        elif isinstance(node, ast.ImportFrom):
            if old is None:
                new_imports.append(source(node))
            else:
                names = list(dict.fromkeys(_alias(a) for a in [*old.names, *node.names]))
                module = "." * node.level + (node.module or "")
                edits.append((*_span(old), f"from {module} import {', '.join(sorted(names))}\n"))
        elif old is not None:
            edits.append((*_span(old), source(node)))
        else:
            appended.append(source(node))
    if new_imports:
        edits.append((imports_end, imports_end, "".join(new_imports)))
    for start, end, replacement in sorted(edits, reverse=True):
        lines[start:end] = [replacement]
    result = "".join(lines).rstrip("\n") + "\n"
    if appended:
        result += "\n\n" + "\n\n".join(block.rstrip("\n") + "\n" for block in appended)
    ast.parse(result, filename=str(path))
    path.write_text(result)


# -- running the project's commands ---------------------------------------------------


def command(words: list[str]) -> list[str]:
    """A doc command line with the venv's tools."""
    tools = {"python": [sys.executable], "django-admin": [str(BIN / "django-admin")]}
    if words[0] not in tools:
        raise AssertionError(f"docs/install.md runs {words[0]!r}, which this test cannot map")
    return [*tools[words[0]], *words[1:]]


def run(words: list[str], cwd: Path, env: dict[str, str], stdin: str | None = None) -> str:
    done = subprocess.run(
        command(words), cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert done.returncode == 0, (
        f"{shlex.join(words)} (in {cwd}) exited {done.returncode}\n"
        f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    return done.stdout


def run_block(body: str, cwd: Path, env: dict[str, str]) -> Path:
    """Run a ``run`` block line by line; return the directory it ends in."""
    for line in body.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "cd":
            cwd = cwd / words[1]
            assert cwd.is_dir(), f"docs/install.md: cd {words[1]}: no such directory"
            continue
        run(words, cwd, env)
    return cwd


def with_one_process(words: list[str]) -> list[str]:
    """The doc's poller command with ``-p/--processes`` set to 1."""
    words = list(words)
    for flag in ("-p", "--processes"):
        if flag in words:
            words[words.index(flag) + 1] = "1"
            return words
    raise AssertionError(f"docs/install.md's poller command has no -p: {shlex.join(words)}")


# -- the database -----------------------------------------------------------------------


@pytest.fixture
def fresh_database():
    """A new, uniquely named database on the test server; dropped afterwards.

    Yields the connection settings as the doc's environment variables.
    """
    import psycopg
    from django.db import connection
    from psycopg import sql

    if connection.vendor != "postgresql":
        pytest.skip("the doc sets the project up on PostgreSQL")
    settings = connection.settings_dict
    server = {
        "host": settings["HOST"] or None,
        "port": settings["PORT"] or None,
        "user": settings["USER"] or None,
        "password": settings["PASSWORD"] or None,
    }

    def admin_connection() -> psycopg.Connection:
        try:
            return psycopg.connect(dbname="postgres", autocommit=True, **server)
        except psycopg.OperationalError:
            return psycopg.connect(dbname="template1", autocommit=True, **server)

    name = f"fullctl_newproject_{uuid.uuid4().hex[:12]}"
    with admin_connection() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield {
            "DATABASE_NAME": name,
            "DATABASE_USER": settings["USER"] or "",
            "DATABASE_PASSWORD": settings["PASSWORD"] or "",
            "DATABASE_HOST": settings["HOST"] or "",
            "DATABASE_PORT": str(settings["PORT"] or ""),
        }
    finally:
        with admin_connection() as conn:
            # FORCE: a poller that failed to stop must not keep the database alive
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def project_environment(database: dict[str, str]) -> dict[str, str]:
    """This process's environment without what points at the example project or tunes
    the queue, plus the database settings the doc's DATABASES reads."""
    dropped = {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "DATABASE_URL", "FULLCTL_POOL_SETTINGS"}
    env = {
        key: value for key, value in os.environ.items()
        if key not in dropped and not key.startswith("TASK_")
    }
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return {**env, **database}


# -- the walk-through ----------------------------------------------------------------


@pytest.mark.slow
def test_new_project_follows_install_doc(tmp_path, fresh_database):
    steps = doc_steps()
    assert [name for name, _ in steps] == EXPECTED_STEPS
    blocks = iter(steps)
    env = project_environment(fresh_database)
    workdir = tmp_path / "work"
    workdir.mkdir()

    # startproject, startapp
    project = run_block(next(blocks)[1], workdir, env)
    assert (project / "manage.py").is_file()

    # settings, urls, the first task class
    task_classes = []
    for _ in range(3):
        name, body = next(blocks)
        target = project / name.removeprefix("edit ")
        assert target.is_file(), f"docs/install.md edits {target.name}, which was not generated"
        apply_python_step(target, body)
        task_classes += [
            node.name for node in ast.parse(body).body
            if isinstance(node, ast.ClassDef) and name.endswith("models.py")
        ]
    assert task_classes, "the models step defines no task class"
    assert "no issues" in run(["python", "manage.py", "check"], project, env)

    # makemigrations, migrate
    run_block(next(blocks)[1], project, env)
    migrations = "".join(p.read_text() for p in (project / "jobs" / "migrations").glob("0*.py"))
    for task_class in task_classes:
        assert f"name='{task_class}'" in migrations, f"no migration for {task_class}"
    assert "'proxy': True" in migrations

    # the poller, as a real process
    poller_words = shlex.split(next(blocks)[1], comments=True)
    assert poller_words[:3] == ["python", "manage.py", "fullctl_poll_tasks"], poller_words
    log_path = tmp_path / "poller.log"
    with open(log_path, "wb") as log:
        poller = subprocess.Popen(
            command(with_one_process(poller_words)), cwd=project, env=env, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def poller_log() -> str:
        return log_path.read_text(errors="replace")

    try:
        # the poller's worker started, or the poller exited (checked next)
        wait_for(lambda: "worker started" in poller_log() or poller.poll() is not None, 30)
        assert poller.poll() is None, f"the poller exited early:\n{poller_log()}"

        # create_task + wait, typed into manage.py shell
        code = next(blocks)[1]
        expected = next(blocks)[1].strip().splitlines()
        printed = run(["python", "manage.py", "shell", "-c", code], project, env)
        # (the shell may print a line about its automatic imports first)
        assert printed.strip().splitlines()[-len(expected):] == expected, (
            f"shell printed:\n{printed}\npoller log:\n{poller_log()}"
        )

        # GET /health through Django's test client, inside the project
        answer = json.loads(
            run(["python", "manage.py", "shell", "-c", HEALTH_PROBE], project, env)
            .strip().splitlines()[-1]
        )
        assert answer["settings"] == "mysite.settings"
        assert Path(answer["django_fullctl"]).is_relative_to(ROOT), answer["django_fullctl"]
        assert answer["status"] == 200, answer
        assert answer["content_type"] == "application/json"
        assert answer["body"] == json.loads(next(blocks)[1])

        # SIGTERM drains and exits 0
        poller.send_signal(signal.SIGTERM)
        assert poller.wait(30) == 0, poller_log()
    finally:
        if poller.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(poller.pid, signal.SIGKILL)
            poller.wait()
    assert "poller started" in poller_log()
