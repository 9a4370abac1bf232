"""Browser tests: Playwright driving the system's Chromium (/usr/bin/chromium, never a downloaded browser) against
pytest-django's live server. Skipped, with the reason, where that Chromium or Playwright is missing; CI installs
both (``.ci/run``, ``pyproject.toml``'s dev extra).

The browser may talk to the live server only: every other request is refused and fails the test. Screenshots go
to ``var/test-artifacts/`` (kept out of git) for a person to look at.
"""

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connections

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(settings.BASE_DIR) / "var" / "test-artifacts"
PASSWORD = "correct horse battery staple"  # tests.factories.UserFactory's


@pytest.fixture
def chromium_context(tmp_path, monkeypatch):
    if not CHROMIUM.exists():
        pytest.skip(f"browser test: no Chromium at {CHROMIUM} (apt-get install chromium; CI installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="browser test: Playwright is not installed")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes between page actions
    # are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile for every test
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        context.set_default_timeout(10_000)
        yield context
        context.close()
        # The test's own database work ran while Playwright's event loop was current, on a connection of its own:
        # close it here, or PostgreSQL refuses to drop the test database at the end of the run.
        connections.close_all()


@pytest.fixture
def page(chromium_context, live_server):
    """A page that may load from the live server only, and fails the test on a script error."""
    allowed = urlsplit(live_server.url).netloc
    outside: list[str] = []
    errors: list[str] = []

    def only_the_live_server(route):
        if urlsplit(route.request.url).netloc == allowed:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    chromium_context.route("**/*", only_the_live_server)
    page = chromium_context.pages[0] if chromium_context.pages else chromium_context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    assert outside == [], f"the page tried to load from outside the server: {outside}"
    assert errors == [], f"script errors on the page: {errors}"


@pytest.fixture
def logged_in(page, live_server, superuser):
    """The page, logged in to the admin as a superuser (through the login form)."""
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", superuser.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    return page


@pytest.fixture
def save_screenshot():
    """``save_screenshot(page, "fleet-page")`` writes var/test-artifacts/fleet-page.png (the whole page)."""

    def save(page, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
