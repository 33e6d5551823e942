"""The batch review digest page and the completeness figures in a real browser (issue 7)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import SECRETS, Dashboard

pytestmark = pytest.mark.integration


def api(dashboard: Dashboard, path: str, role: str) -> Any:
    r = httpx.get(dashboard.url + path, headers={"Authorization": f"Bearer {SECRETS[role]}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_digest_page_renders_the_api_digest_without_console_errors(
    signed_in: Any, dashboard: Dashboard
) -> None:
    view = signed_in("quality")
    page = view.page
    # reached from the triage queue: the batch of a deviation links to its digest
    page.goto(f"{dashboard.url}/triage")
    page.wait_for_selector("body[data-ready='1']")
    link = page.locator("a.digest-link").first
    href = link.get_attribute("href")
    assert href is not None and href.startswith("/digest?batch=")
    batch = href.split("=", 1)[1]
    link.click()
    page.wait_for_url("**/digest?batch=*")
    # leaving the queue aborts its live stream (not an error of this page)
    view.errors[:] = [e for e in view.errors if "/deviations/stream" not in e]
    page.wait_for_selector("body[data-ready='1']")
    digest = api(dashboard, f"/api/v1/batches/{batch}/digest", "quality")
    assert page.inner_text("#verdict") == digest["verdict"]
    assert page.locator("#steps tbody tr").count() == len(digest["steps"])
    assert page.locator("#exceptions tbody tr[data-kind]").count() == len(digest["exceptions"])
    assert page.locator("#deviations tbody tr").count() == max(1, len(digest["deviations"]))
    with page.expect_download() as download:
        page.click("#printable")
    assert download.value.suggested_filename == f"digest-{batch}.html"
    view.screenshot("digest")
    assert view.errors == []


def test_overview_shows_completeness_beside_capacity(signed_in: Any, dashboard: Dashboard) -> None:
    view = signed_in("operations")
    page = view.page
    comp = api(dashboard, "/api/v1/completeness", "operations")
    assert comp["sites"]
    for site in comp["sites"]:
        cell = f"#completeness-table [data-site='{site['site_id']}']"
        assert page.inner_text(f"{cell}[data-metric='expected']") == str(site["expected"])
        assert page.inner_text(f"{cell}[data-metric='received']") == str(site["received"])
    assert view.errors == []


@pytest.mark.parametrize(
    ("role", "query", "message"), [("quality", "", "no batch given"), ("operations", "?batch=A1", "403")]
)
def test_a_digest_that_cannot_be_shown_draws_no_empty_digest(
    signed_in: Any, dashboard: Dashboard, role: str, query: str, message: str
) -> None:
    view = signed_in(role)
    page = view.page
    page.goto(f"{dashboard.url}/digest{query}")
    page.wait_for_selector("#error:not([hidden])")
    assert message in page.inner_text("#error")
    # no verdict box, no export button, no section titles: the error alone
    assert page.locator("#digest-body").is_hidden()
    assert page.locator("#printable").is_hidden()
    assert page.locator("h2:visible").count() == 0
