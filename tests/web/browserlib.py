"""What the browser tests share besides their fixtures (``conftest.py``): where chromium
is, how it starts, where screenshots go, and logging in through the admin's form."""

from pathlib import Path

import pytest
from django.contrib.auth.models import User

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "example"
SCREENSHOTS = ROOT / "tests" / "artifacts" / "screenshots"
PASSWORD = "browser-test-pw"


def require_browser() -> None:
    """Skip the calling test module when Debian's chromium or Playwright is missing."""
    if not CHROMIUM.exists():
        pytest.skip(
            "browser tests need /usr/bin/chromium: run `make browser` or, as root, "
            "`apt-get install chromium`",
            allow_module_level=True,
        )
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(page) -> None:
    User.objects.create_superuser("admin", "admin@example.com", PASSWORD)
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
