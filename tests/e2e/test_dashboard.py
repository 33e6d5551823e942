"""The dashboard in a real browser: each page loads without console errors and shows what the API
returns; the live triage queue shows a new deviation within seconds; screenshots are saved.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from atmpnet.contract.events import DeviationTransition, ProcessStep

from tests.e2e.conftest import SECRETS, Dashboard
from tests.integration.api_network import T0, NetworkBuilder, store

pytestmark = pytest.mark.integration


def api(dashboard: Dashboard, path: str, role: str = "quality") -> Any:
    r = httpx.get(dashboard.url + path, headers={"Authorization": f"Bearer {SECRETS[role]}"}, timeout=10)
    r.raise_for_status()
    return r.json()


DASH = "\u2013"  # the dashboard's en dash for "no value" and ranges


def pct(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{100 * value:.{digits}f}%"


def test_login_refuses_a_bad_token_and_pages_without_one_send_you_to_login(
    browser: Any, dashboard: Dashboard
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{dashboard.url}/overview")
    page.wait_for_url("**/login")
    page.fill("#token", "not-a-token")
    page.click("button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "not valid" in page.inner_text("#login-error")
    context.close()


def test_overview_shows_the_capacity_the_api_returns(signed_in: Any, dashboard: Dashboard) -> None:
    view = signed_in("operations")
    page = view.page
    cap = api(dashboard, "/api/v1/capacity", "operations")
    for key in ("lanes", "busy", "idle", "down", "in_progress"):
        assert page.inner_text(f"[data-kpi='{key}']") == str(cap["totals"][key])
    for site in cap["sites"]:
        cell = f"#site-table [data-site='{site['site_id']}']"
        assert page.inner_text(f"{cell}[data-metric='busy']") == str(site["busy"])
        assert page.inner_text(f"{cell}[data-metric='down']") == str(site["down"])
        assert page.inner_text(f"{cell}[data-metric='utilization_7d']") == pct(site["utilization_7d"])
        day7 = next(f for f in cap["forecast"] if f["site_id"] == site["site_id"] and f["day"] == 7)
        assert page.inner_text(f"{cell}[data-metric='free_lanes_day7']") == str(day7["free_lanes"])
    # charts drawn from the same numbers: one bar per site and lane state, one lane square per lane
    busy_bars = page.locator("#lane-states rect[data-series='busy']")
    assert busy_bars.count() == len(cap["sites"])
    assert [busy_bars.nth(i).get_attribute("data-value") for i in range(busy_bars.count())] == [
        str(s["busy"]) for s in cap["sites"]
    ]
    assert page.locator("#lane-map .lane").count() == len(cap["lanes"])
    assert page.locator("#lane-map .lane.down").count() == cap["totals"]["down"]
    assert page.locator("#forecast path").count() == len(cap["sites"])
    view.screenshot("overview")
    assert view.errors == []


def test_drift_matrix_links_drifted_cells_to_their_batches(signed_in: Any, dashboard: Dashboard) -> None:
    view = signed_in("operations")
    page = view.page
    page.click("nav >> text=Configuration drift")
    page.wait_for_selector("body[data-ready='1']")
    drift = api(dashboard, "/api/v1/drift", "operations")
    drifted_now = sum(1 for m in drift["modules"] if m["state"] == "DRIFTED")
    assert page.inner_text("[data-kpi='drifted']") == str(drifted_now)
    assert page.inner_text("[data-kpi='intervals']") == str(len(drift["intervals"]))
    for cell in drift["matrix"]:
        key = f"{cell['module_type']}|{cell['component']}"
        node = page.locator(f"#matrix td[data-site='{cell['site_id']}'][data-cell='{key}']")
        assert node.get_attribute("data-drifted") == str(cell["drifted"])
    page.click("#matrix td.drifted")
    page.wait_for_selector("#cell-detail:not([hidden])")
    links = page.locator("#cell-body a.batch-link")
    expected = next(c for c in drift["matrix"] if c["drifted"])["batches"]
    assert [links.nth(i).inner_text() for i in range(links.count())] == expected
    view.screenshot("drift")
    links.first.click()  # a drifted cell's batch opens the triage queue filtered to that batch
    page.wait_for_url(f"**/triage?batch={expected[0]}")
    page.wait_for_selector("body[data-ready='1']")
    rows = api(dashboard, f"/api/v1/deviations?batch={expected[0]}", "operations")["items"]
    assert page.locator("#queue tbody tr").count() == len(rows)
    assert view.errors == []


def test_performance_shows_each_site_against_the_network_median(signed_in: Any, dashboard: Dashboard) -> None:
    view = signed_in("quality")
    page = view.page
    page.click("nav >> text=Comparative performance")
    page.wait_for_selector("body[data-ready='1']")
    perf = api(dashboard, "/api/v1/performance")
    for site in perf["sites"]:
        cell = f"#site-table [data-site='{site['site_id']}']"
        assert page.inner_text(f"{cell}[data-metric='batches_started']") == str(site["batches_started"])
        assert page.inner_text(f"{cell}[data-metric='success_rate']") == pct(site["success_rate"])
        low, high = site["success_interval"]
        assert page.inner_text(f"{cell}[data-metric='success_interval']") == f"{pct(low)}{DASH}{pct(high)}"
        assert (
            page.inner_text(f"{cell}[data-metric='deviations_per_batch']")
            == f"{site['deviations_per_batch']:.2f}"
        )
    dots = page.locator("#success circle[data-site]")
    assert dots.count() == len(perf["sites"])
    assert float(dots.first.get_attribute("data-value")) == perf["sites"][0]["success_rate"]
    assert page.locator("#steps rect[data-series='network median']").count() > 0
    view.screenshot("performance")
    assert view.errors == []


def test_triage_queue_lists_the_api_and_shows_a_new_deviation_live(
    signed_in: Any, dashboard: Dashboard
) -> None:
    view = signed_in("quality")
    page = view.page
    page.click("nav >> text=Deviation triage")
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("#live.on")
    items = api(dashboard, "/api/v1/deviations?limit=200")["items"]
    rows = page.locator("#queue tbody tr")
    assert rows.count() == len(items)
    assert [rows.nth(i).get_attribute("data-id") for i in range(rows.count())] == [
        i["deviation_id"] for i in items
    ]
    critical = sum(1 for i in items if i["severity"] == "CRITICAL" and i["status"] != "CLOSED")
    assert page.inner_text("[data-kpi='open_critical']") == str(critical)
    # a new critical deviation arrives through the event store's write path
    b = NetworkBuilder()
    at = T0 + timedelta(days=11, hours=14)
    b.deviation(
        "LIVE-E2E",
        DeviationTransition.RAISED,
        at,
        site="site-a",
        module="a-m2",
        lane=1,
        batch="A3",
        step=ProcessStep.FORMULATION,
        parameter="temperature",
        alarm_code="PRC-T9",
        duration=3600,
    )
    published = time.monotonic()
    store(dashboard.client, dashboard.codec, b.events, datetime.now(UTC))
    page.wait_for_selector("#queue tbody tr[data-id='LIVE-E2E']", timeout=5000)
    seen_after = time.monotonic() - published
    assert seen_after < 5
    row = page.locator("#queue tbody tr[data-id='LIVE-E2E']")
    assert row.get_attribute("data-severity") == "CRITICAL"
    assert rows.first.get_attribute("data-id") == "LIVE-E2E"  # newest first
    assert page.inner_text("[data-kpi='open_critical']") == str(critical + 1)
    row.click()
    page.wait_for_selector("#detail:not([hidden]) table")
    assert "confidential detail" in page.inner_text("#detail-body")
    view.screenshot("triage")
    print(f"new deviation visible in the browser {seen_after:.2f}s after its write")
    # its closure re-sends the row from the triage view: the queue shows the list's state
    b = NetworkBuilder()
    b.deviation(
        "LIVE-E2E",
        DeviationTransition.CLOSED,
        at + timedelta(minutes=30),
        site="site-a",
        module="a-m2",
        lane=1,
        batch="A3",
        step=ProcessStep.FORMULATION,
        parameter="temperature",
        alarm_code="PRC-T9",
        duration=3600,
    )
    store(dashboard.client, dashboard.codec, b.events, datetime.now(UTC))
    status = page.locator("#queue tbody tr[data-id='LIVE-E2E'] td").nth(8)
    page.wait_for_function(
        "() => document.querySelector(\"#queue tbody tr[data-id='LIVE-E2E'] td:nth-child(9)\")"
        "?.textContent === 'CLOSED'",
        timeout=5000,
    )
    assert status.inner_text() == "CLOSED"
    assert page.inner_text("[data-kpi='open_critical']") == str(critical)
    listed = next(
        i for i in api(dashboard, "/api/v1/deviations?limit=200")["items"] if i["deviation_id"] == "LIVE-E2E"
    )
    assert listed["status"] == "CLOSED" and listed["severity"] == "CRITICAL"
    assert view.errors == []


def test_a_site_token_sees_only_its_site_and_operations_has_no_export(
    signed_in: Any, dashboard: Dashboard
) -> None:
    view = signed_in("site")
    page = view.page
    assert page.locator("#site-table tbody tr").count() == 1
    assert page.inner_text("#who").startswith("site-a")
    page.click("nav >> text=Deviation triage")
    page.wait_for_selector("body[data-ready='1']")
    sites = {page.locator("#queue tbody tr td").nth(3).inner_text()}
    assert sites == {"site-a"}
    assert view.errors == []
    ops = signed_in("operations")
    ops.page.click("nav >> text=Deviation triage")
    ops.page.wait_for_selector("body[data-ready='1']")
    assert ops.page.locator("#csv").is_hidden()
    assert ops.errors == []
