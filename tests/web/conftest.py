"""The browser tests' server and browser: gunicorn serving ``example_project.wsgi`` as the
image does (``DEBUG`` off, static files collected into a temporary ``DJANGO_STATIC_ROOT``
and served by WhiteNoise, the test database), and Debian's chromium through Playwright.
The browser fixtures skip when ``/usr/bin/chromium`` is missing."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from browserlib import CHROMIUM, CHROMIUM_ARGS, EXAMPLE_DIR
from helpers import test_database_url, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(static_root: Path, home: Path) -> dict[str, str]:
    """The image's environment (Dockerfile ENV, chart env), on the test database."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_DEBUG"}
    env.update(
        DATABASE_URL=test_database_url(),
        DJANGO_SETTINGS_MODULE="example_project.settings",
        DJANGO_STATIC_ROOT=str(static_root),
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        PYTHONPATH=str(EXAMPLE_DIR),
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
        HOME=str(home),
    )
    return env


@pytest.fixture(scope="module")
def live_server_url(django_db_setup, tmp_path_factory):
    """gunicorn serving example_project.wsgi, as the chart's web pods run it."""
    tmp = tmp_path_factory.mktemp("web")
    env = server_env(tmp / "static", tmp)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=EXAMPLE_DIR, env=env, check=True,
    )
    assert (tmp / "static" / "staticfiles.json").is_file()
    port = free_port()
    log_path = tmp / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "example_project.wsgi",
                "--bind", f"127.0.0.1:{port}", "--worker-tmp-dir", str(tmp), "--workers", "2",
            ],
            cwd=EXAMPLE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health?exclude=database,heartbeats,backlog"):
                return True
        except OSError:
            return False

    try:
        wait_for(answers, timeout=30, interval=0.1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("browser tests need /usr/bin/chromium: run `make browser` or, as root,"
                    " `apt-get install chromium`")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    # Playwright's sync API leaves its event loop set as running in this thread, which Django
    # takes for an async context; the ORM calls of these tests and of the database flush
    # between them are plain synchronous code in one thread all the same
    with pytest.MonkeyPatch.context() as patch, sync_api.sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server_url):
    context = browser.new_context(
        base_url=live_server_url, viewport={"width": 1400, "height": 900}, color_scheme="light"
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
