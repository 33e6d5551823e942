"""The dashboard in a real browser: each page loads without console errors and shows what the API
returns; the live triage queue shows a new deviation within seconds; screenshots are saved.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from atmpnet.contract.events import DeviationTransition

from tests.e2e.conftest import SECRETS, Dashboard
from tests.integration.api_network import T0, NetworkBuilder, store

pytestmark = pytest.mark.integration


def _t(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


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


def check_headline_age_bars_and_detail(page: Any, dashboard: Dashboard, items: list[dict[str, Any]]) -> int:
    """The triage headline, age bars and a detail pane against the API; the critical count."""
    counts = api(dashboard, "/api/v1/deviations/summary")["counts"]
    critical = int(counts["not_closed"]["CRITICAL"])
    # the headline is the API's counts of every match, labelled by what it counts
    assert page.inner_text("[data-kpi='count']") == str(counts["total"])
    assert page.inner_text("[data-kpi='open_critical']") == str(critical)
    assert page.inner_text("[data-kpi='open_major']") == str(counts["not_closed"]["MAJOR"])
    assert page.inner_text("[data-kpi='overdue']") == str(counts["overdue"])
    assert "not closed" in page.inner_text("#kpis")
    assert "Raised (UTC)" in page.inner_text("#queue thead")
    # the age bar's allowance is the row's due_at - raised_at, from the API
    for item in items:
        allowed = (_t(item["due_at"]) - _t(item["raised_at"])).total_seconds() / 3600
        bar = page.locator(f"#queue tbody tr[data-id='{item['deviation_id']}'] .agebar")
        assert float(bar.get_attribute("data-allowed-hours") or "nan") == allowed
    # a deviation without a measured value shows a dash, not "null"
    unmeasured = next(i for i in items if i["observed_value"] is None)
    page.click(f"#queue tbody tr[data-id='{unmeasured['deviation_id']}']")
    page.wait_for_selector(f"#detail:not([hidden]) #detail-title:has-text('{unmeasured['deviation_id']}')")
    page.wait_for_selector("#detail-body table")
    observed = page.locator("#detail-body tr:has(th:text-is('observed')) td").inner_text()
    assert observed == DASH and "null" not in page.inner_text("#detail-body")
    return critical


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
    critical = check_headline_age_bars_and_detail(page, dashboard, items)
    # a new critical deviation arrives through the event store's write path
    b = NetworkBuilder()
    at = T0 + timedelta(days=11, hours=14)
    b.formulation_excursion("LIVE-E2E", DeviationTransition.RAISED, at)
    published = time.monotonic()
    store(dashboard.client, dashboard.codec, b.events, datetime.now(UTC))
    page.wait_for_selector("#queue tbody tr[data-id='LIVE-E2E']", timeout=5000)
    seen_after = time.monotonic() - published
    assert seen_after < 5
    row = page.locator("#queue tbody tr[data-id='LIVE-E2E']")
    assert row.get_attribute("data-severity") == "CRITICAL"
    assert rows.first.get_attribute("data-id") == "LIVE-E2E"  # newest first
    kpi_is = "(v) => document.querySelector(\"[data-kpi='open_critical']\").textContent === v"
    page.wait_for_function(kpi_is, arg=str(critical + 1), timeout=5000)  # counts asked again
    row.click()
    page.wait_for_selector("#detail:not([hidden]) #detail-title:has-text('LIVE-E2E')")
    page.wait_for_function(
        "() => document.querySelector('#detail-body').textContent.includes('LIVE-E2E raised')", timeout=5000
    )
    assert "confidential detail" in page.inner_text("#detail-body")
    view.screenshot("triage")
    print(f"new deviation visible in the browser {seen_after:.2f}s after its write")
    # its closure re-sends the row from the triage view: the queue shows the list's state
    b = NetworkBuilder()
    b.formulation_excursion("LIVE-E2E", DeviationTransition.CLOSED, at + timedelta(minutes=30))
    store(dashboard.client, dashboard.codec, b.events, datetime.now(UTC))
    status = page.locator("#queue tbody tr[data-id='LIVE-E2E'] td").nth(8)
    page.wait_for_function(
        "() => document.querySelector(\"#queue tbody tr[data-id='LIVE-E2E'] td:nth-child(9)\")"
        "?.textContent === 'CLOSED'",
        timeout=5000,
    )
    assert status.inner_text() == "CLOSED"
    page.wait_for_function(kpi_is, arg=str(critical), timeout=5000)
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


def test_operations_is_offered_no_digest_and_no_detail_it_may_not_open(
    signed_in: Any, dashboard: Dashboard
) -> None:
    ops = signed_in("operations")
    page = ops.page
    page.click("nav >> text=Deviation triage")
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#queue tbody tr").count() > 0
    assert page.locator("a.digest-link").count() == 0
    links = page.locator("#queue a.batch-link")
    assert links.count() > 0
    assert all(
        (links.nth(i).get_attribute("href") or "").startswith("/triage?batch=") for i in range(links.count())
    )
    assert page.locator("#detail-note").is_visible()
    page.locator("#queue tbody tr").first.click()
    page.wait_for_timeout(300)
    assert page.locator("#detail").is_hidden()  # no pane that would only show a 403
    batch = links.first.get_attribute("href")
    links.first.click()  # a batch opens this queue filtered to it
    page.wait_for_url(f"**{batch}")
    page.wait_for_selector("body[data-ready='1']")
    batch_id = (batch or "").split("=", 1)[1]
    rows = api(dashboard, f"/api/v1/deviations?batch={batch_id}", "operations")["items"]
    assert page.locator("#queue tbody tr").count() == len(rows)
    # the drift cells list batches without digest links
    page.click("nav >> text=Configuration drift")
    page.wait_for_selector("body[data-ready='1']")
    page.click("#matrix td.drifted")
    page.wait_for_selector("#cell-detail:not([hidden])")
    assert page.locator("#cell-body a.batch-link").count() > 0
    assert page.locator("#cell-body a.digest-link").count() == 0
    # leaving the live queue aborts its stream (and a recount in flight): not errors of the page
    ops.errors[:] = [
        e for e in ops.errors if "/deviations/stream" not in e and "/deviations/summary" not in e
    ]
    assert ops.errors == []


def test_quality_keeps_its_digest_links_and_version_skew_is_worded_by_count(
    signed_in: Any, dashboard: Dashboard
) -> None:
    view = signed_in("quality")
    page = view.page
    page.click("nav >> text=Configuration drift")
    page.wait_for_selector("body[data-ready='1']")
    page.click("#matrix td.drifted")
    page.wait_for_selector("#cell-detail:not([hidden])")
    assert (
        page.locator("#cell-body a.digest-link").count()
        == page.locator("#cell-body a.batch-link").count()
        > 0
    )
    skew = page.inner_text("#skew tbody")
    assert "1 sites" not in skew and "1 modules" not in skew
    drift = api(dashboard, "/api/v1/drift")
    for row in drift["version_skew"]:
        for version, n in row["versions"].items():
            site_word = "site" if n["sites"] == 1 else "sites"
            assert f"{version} ({n['sites']} {site_word}," in skew
    assert "opened (UTC)" in page.inner_text("#intervals thead")
    assert view.errors == []


def test_charts_pass_full_step_names_keep_edge_labels_inside_and_say_when_empty(
    signed_in: Any, dashboard: Dashboard
) -> None:
    view = signed_in("quality")
    page = view.page
    # overview: the last x label of a line chart is anchored at its end, inside the drawing
    last = page.locator("#forecast svg > text").last
    assert last.get_attribute("text-anchor") == "end"
    box, frame = last.bounding_box(), page.locator("#forecast svg").bounding_box()
    assert (
        box is not None and frame is not None and box["x"] + box["width"] <= frame["x"] + frame["width"] + 0.5
    )
    page.click("nav >> text=Comparative performance")
    page.wait_for_selector("body[data-ready='1']")
    categories = {
        page.locator("#steps rect").nth(i).get_attribute("data-category")
        for i in range(page.locator("#steps rect").count())
    }
    perf = api(dashboard, "/api/v1/performance")
    assert categories == {r["step"].replace("_", " ").lower() for r in perf["steps"]}  # not cut to 8
    # a chart without data says so instead of drawing empty axes (each page passes its message)
    page.evaluate(
        """() => { const d = document.createElement("div"); d.id = "probe"; document.body.append(d);
        charts.bars(d, { categories: ["site-a"], series: [{ name: "x", color: "#000", values: [0] }],
                         empty: "No completed batches yet" }); }"""
    )
    assert page.inner_text("#probe .chart-empty") == "No completed batches yet"
    assert page.locator("#probe svg").count() == 0
    assert view.errors == []
