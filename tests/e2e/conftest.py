"""Real-browser fixtures: Debian's chromium driven by Playwright, against a live API server.

The browser is /usr/bin/chromium (``apt-get install -y chromium``); Playwright's own browser
download is not used. Without that binary or the playwright package every test here is skipped
with the reason. Screenshots go to tests/e2e/screenshots/ (git-ignored).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from atmpnet.api.app import ApiServer, create_api
from atmpnet.contract.codec import AvroCodec
from atmpnet.settings import Settings
from clickhouse_connect.driver.client import Client

from tests.integration.api_network import api_tokens, build_network, scratch_database, store

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).with_name("screenshots")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SECRETS = {"operations": "e2e-ops-token", "quality": "e2e-quality-token", "site": "e2e-site-a-token"}


@dataclass
class Dashboard:
    """A running API + dashboard on a seeded database."""

    url: str
    client: Client
    codec: AvroCodec


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (/usr/bin/chromium): apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def dashboard(clickhouse_settings: Settings, codec: AvroCodec) -> Iterator[Dashboard]:
    with scratch_database(clickhouse_settings, "test_e2e_") as client:
        store(client, codec, build_network())
        tokens = api_tokens(SECRETS["operations"], SECRETS["quality"], SECRETS["site"])
        app = create_api(clickhouse_settings, client, tokens=tokens, stream_poll_s=0.2)
        with ApiServer(app) as server:
            yield Dashboard(server.url, client, codec)


@dataclass
class BrowserPage:
    """A page with its console errors collected."""

    page: Any
    errors: list[str]

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path


@pytest.fixture
def signed_in(browser: Any, dashboard: Dashboard) -> Iterator[Any]:
    """A factory: a fresh browser context signed in with a role's token through the login form."""
    contexts: list[Any] = []

    def open_as(role: str) -> BrowserPage:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} {r.failure}"))
        page.goto(f"{dashboard.url}/login")
        page.fill("#token", SECRETS[role])
        page.click("button[type=submit]")
        page.wait_for_url("**/overview")
        page.wait_for_selector("body[data-ready='1']")
        return BrowserPage(page, errors)

    yield open_as
    for context in contexts:
        context.close()
