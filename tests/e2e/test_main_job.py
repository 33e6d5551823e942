"""The main job in a real browser: `atmpnet up` runs, the dashboard shows the network live."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import SCREENSHOTS
from tests.integration.up_process import UpProcess, get_json

pytestmark = pytest.mark.integration


@pytest.fixture
def running_network(tmp_path: Path) -> Iterator[UpProcess]:
    """Two sites for ten simulated days: one day at full speed, then 8 simulated hours a second."""
    up = UpProcess(
        tmp_path,
        *("--sites", "2", "--days", "10", "--seed", "3", "--warmup-days", "1", "--speed", "8"),
        *("--port", "0", "--progress-s", "2"),
    )
    try:
        yield up
    finally:
        up.kill()


def _wait_views(up: UpProcess, url: str, token: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        capacity = get_json(f"{url}/api/v1/capacity", token)
        if capacity["totals"] and capacity["totals"]["busy"] > 0:
            return dict(capacity)
        time.sleep(0.5)
    raise AssertionError(f"the views stayed empty for {timeout_s}s:\n{up.output}")


def test_the_dashboard_shows_the_running_network_live(browser: Any, running_network: UpProcess) -> None:
    up = running_network
    url = up.url()
    token_line = up.wait_for("sign in with the operations token:", 5)
    token = up.token("operations")
    assert token_line.split()[-1] == token  # the printed token is the one in the file
    _wait_views(up, url, token)

    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{url}/login")
        page.fill("#token", up.token("quality"))
        page.click("button[type=submit]")
        page.wait_for_url("**/overview")
        page.wait_for_selector("body[data-ready='1']")
        busy = int(page.inner_text("[data-kpi='busy']").replace(",", ""))
        lanes = int(page.inner_text("[data-kpi='lanes']").replace(",", ""))
        assert busy > 0
        assert lanes > 0
        assert page.locator("#lane-map .lane").count() == lanes
        first_as_of = page.inner_text("#as-of")
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "main-job-overview.png"), full_page=True)

        page.click("nav >> text=Deviation triage")
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_selector("#live.on")
        rows = page.locator("#queue tbody tr")
        first = rows.count()
        first_ids = {rows.nth(i).get_attribute("data-id") for i in range(first)}
        # the network keeps raising deviations: new rows arrive through the live stream, no reload
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and rows.count() <= first:
            page.wait_for_timeout(500)
        assert rows.count() > first, f"no new deviation in the live queue in 45s:\n{up.output}"
        new = {rows.nth(i).get_attribute("data-id") for i in range(rows.count())} - first_ids
        assert new
        page.screenshot(path=str(SCREENSHOTS / "main-job-triage-live.png"))

        # the overview follows the views as the simulated clock runs on
        page.click("nav >> text=Network overview")
        page.wait_for_selector("body[data-ready='1']")
        assert page.inner_text("#as-of") > first_as_of  # "as of YYYY-MM-DD HH:MM UTC" sorts by time
        assert not errors, errors
    finally:
        context.close()

    assert up.stop() == 0, up.output  # Ctrl-C
    assert "SIGINT: stopping" in up.output
    assert "Traceback" not in up.output
