"""Issue 7 through the API: completeness, findings, attribution of view rows, the batch digest.

A small simulated network (chained as the publisher chains it) with two injected faults, a run of
lost sensor summaries and a lane mix-up, written through the ingest core; then the integrity
deviations the derived publisher would raise are ingested too, and triaged like any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from atmpnet.api.app import create_api
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import BatchStep, Deviation, Event
from atmpnet.settings import Settings
from atmpnet.site.simulator import NetworkConfig, Simulation
from atmpnet.streams.derived import integrity_deviations, integrity_event_id
from atmpnet.streams.ingest import IngestCore
from atmpnet.warehouse.views import read_views, refresh_views
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient

from tests.integration.api_network import api_tokens, scratch_database
from tests.integration.integrity_support import (
    chained,
    drop_sensor_run,
    ingest,
    move_one_step_to_another_lane,
)

pytestmark = pytest.mark.integration

SECRETS = {"ops": "ops-i-1", "quality": "quality-i-1", "site-a": "site-a-i-1"}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


class Network:
    """What the test network holds and what was injected into it."""

    def __init__(self, codec: AvroCodec) -> None:
        events = list(Simulation(NetworkConfig(sites=2, days=4, seed=3, sensor_window_minutes=60)).events())
        mixed, self.moved = move_one_step_to_another_lane(events)
        self.kept, self.lost = drop_sensor_run(chained(mixed, codec), 3)
        self.codec = codec


@pytest.fixture(scope="module")
def network(codec: AvroCodec) -> Network:
    return Network(codec)


@pytest.fixture(scope="module")
def db(clickhouse_settings: Settings, codec: AvroCodec, network: Network) -> Iterator[Client]:
    with scratch_database(clickhouse_settings, "test_apii_") as client:
        core = IngestCore(client, codec)
        ingest(core, codec, network.kept)
        result = refresh_views(client)
        assert result is not None
        # what the derived publisher raises for the findings, through the same write path
        ingest(core, codec, integrity_deviations(result.views.findings))
        refresh_views(client)
        yield client


@pytest.fixture(scope="module")
def api(db: Client, clickhouse_settings: Settings) -> TestClient:
    tokens = api_tokens(SECRETS["ops"], SECRETS["quality"], SECRETS["site-a"])
    return TestClient(create_api(clickhouse_settings, db, tokens=tokens))


def get(api: TestClient, path: str, who: str = "quality", **params: Any) -> Any:
    r = api.get(path, headers=auth(who), params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_findings_are_exactly_the_injected_faults_and_raise_triaged_deviations(
    api: TestClient, db: Client, network: Network
) -> None:
    found = get(api, "/api/v1/integrity/findings")["findings"]
    assert sorted(f["kind"] for f in found) == ["BATCH_ON_TWO_LANES", "SEQUENCE_GAP"], [
        f["message"] for f in found
    ]
    assert sorted(f["kind"] for f in found) == ["BATCH_ON_TWO_LANES", "SEQUENCE_GAP"]
    gap = next(f for f in found if f["kind"] == "SEQUENCE_GAP")
    seqs = sorted(e.envelope.sequence for e in network.lost)
    assert gap["sequences"] == [seqs[0], seqs[-1]]
    assert gap["module_id"] == network.lost[0].envelope.module_id
    mix = next(f for f in found if f["kind"] == "BATCH_ON_TWO_LANES")
    assert mix["batch_id"] == network.moved.envelope.batch_id
    assert str(network.moved.envelope.event_id) in mix["evidence"]
    # the raised deviations: deterministic ids, DATA_INTEGRITY, segregation CRITICAL; no new finding
    triage = {r[0]: r for r in read_views(db)["deviation_triage"]}
    for f in found:
        row = triage[f["finding_id"]]
        assert row[12:14] == ("DATA_INTEGRITY", "CRITICAL" if f["kind"] == "BATCH_ON_TWO_LANES" else "MAJOR")
        assert row[8] == f["alarm_code"]
    again = get(api, "/api/v1/integrity/findings")["findings"]
    assert again == found
    assert integrity_event_id(gap["finding_id"]) == integrity_event_id(gap["finding_id"])


def test_integrity_deviation_names_module_sequences_and_evidence(db: Client, network: Network) -> None:
    result = refresh_views(db)
    assert result is not None
    events = integrity_deviations(result.views.findings)
    assert len(events) == 2
    gap = next(e for e in events if e.alarm_code == "DAT-SEQUENCE-GAP")
    module = network.lost[0].envelope.module_id
    seqs = sorted(e.envelope.sequence for e in network.lost)
    assert gap.envelope.module_id == module and gap.envelope.producer.kind == "PROCESSOR"
    assert (
        f"module {module}" in gap.description
        and f"sequence {seqs[0]} to {seqs[-1]} missing" in gap.description
    )
    assert gap.envelope.event_id == integrity_event_id(gap.deviation_id)
    assert [e.envelope.event_id for e in integrity_deviations(result.views.findings)] == [
        e.envelope.event_id for e in events
    ]


def test_completeness_per_site_and_role_scope(api: TestClient, network: Network) -> None:
    data = get(api, "/api/v1/completeness")
    by_site = {s["site_id"]: s for s in data["sites"]}
    lost_site = network.lost[0].envelope.site_id
    assert by_site[lost_site]["missing"] == 3
    assert by_site[lost_site]["received"] == by_site[lost_site]["expected"] - 3
    assert by_site[lost_site]["received_share"] < 1.0
    assert by_site[lost_site]["findings"]["SEQUENCE_GAP"] == 1
    assert all(s["on_time"] == s["received"] for s in data["sites"])  # nothing arrived late
    site = get(api, "/api/v1/completeness", "site-a")
    assert [s["site_id"] for s in site["sites"]] == ["site-a"]
    assert api.get("/api/v1/completeness?site=site-b", headers=auth("site-a")).status_code == 403
    assert api.get("/api/v1/completeness").status_code == 401


def _steps_of(events: list[Event], batch: str) -> set[str]:
    return {
        str(e.envelope.event_id) for e in events if isinstance(e, BatchStep) and e.envelope.batch_id == batch
    }


def test_every_view_row_is_traceable_to_its_events(api: TestClient, db: Client, network: Network) -> None:
    views = read_views(db)
    batch = network.moved.envelope.batch_id
    assert batch is not None
    a = get(api, "/api/v1/attribution", view="batch_status", key=batch)
    assert set(a["event_ids"]) == _steps_of(network.kept, batch) and a["count"] == len(a["event_ids"])
    busy = next(r for r in views["capacity_lanes"] if r[3] == "BUSY")
    a = get(api, "/api/v1/attribution", view="capacity_lanes", key=f"{busy[1]}/{busy[2]}")
    assert set(a["event_ids"]) == _steps_of(network.kept, busy[4])
    dev = next(e for e in network.kept if isinstance(e, Deviation))
    a = get(api, "/api/v1/attribution", view="deviation_triage", key=dev.deviation_id)
    assert set(a["event_ids"]) == {
        str(e.envelope.event_id)
        for e in network.kept
        if isinstance(e, Deviation) and e.deviation_id == dev.deviation_id
    }
    interval = views["drift_intervals"][0]
    a = get(
        api, "/api/v1/attribution", view="drift_intervals", key=f"{interval[1]}@{interval[3].isoformat()}"
    )
    assert a["count"] >= 2  # the configuration in force and the baseline it was compared with
    perf = get(
        api, "/api/v1/attribution", view="performance", key=f"{busy[0]}/EXPANSION/cycle_time_p50_hours"
    )
    assert perf["count"] > 0
    finding = views["integrity_findings"][0]
    a = get(api, "/api/v1/attribution", view="integrity_findings", key=finding[0])
    assert a["event_ids"] == list(finding[12])
    # roles and errors: another site's row answers as a row that does not exist (no existence oracle)
    other = next(r for r in views["batch_status"] if r[0] != "site-a")
    r = api.get(
        "/api/v1/attribution", headers=auth("site-a"), params={"view": "batch_status", "key": other[3]}
    )
    assert r.status_code == 404 and r.json()["detail"] == f"no batch_status row {other[3]}"
    r = api.get(
        "/api/v1/attribution", headers=auth("site-a"), params={"view": "batch_status", "key": "NO-SUCH"}
    )
    assert r.status_code == 404 and r.json()["detail"] == "no batch_status row NO-SUCH"
    other_site = other[0]
    r = api.get(
        "/api/v1/attribution", headers=auth("site-a"), params={"view": "completeness", "key": other_site}
    )
    assert r.status_code == 404
    r = api.get("/api/v1/attribution", headers=auth("ops"), params={"view": "nope", "key": "x"})
    assert r.status_code == 422
    r = api.get("/api/v1/attribution", headers=auth("ops"), params={"view": "batch_status", "key": "NO-SUCH"})
    assert r.status_code == 404


def test_the_digest_of_a_batch_with_exceptions_lists_every_one(api: TestClient, network: Network) -> None:
    batch = network.moved.envelope.batch_id
    d = get(api, f"/api/v1/batches/{batch}/digest")
    assert d["batch_id"] == batch and d["steps"]
    kinds = [x["kind"] for x in d["exceptions"]]
    assert "INTEGRITY" in kinds
    assert any(f["kind"] == "BATCH_ON_TWO_LANES" for f in d["findings"])
    # every deviation, failed step, drift interval and finding of the batch is an exception
    expected = (
        len(d["deviations"])
        + len(d["drift"])
        + len(d["findings"])
        + sum(1 for s in d["steps"] if s["outcome"] in ("FAILED", "ABORTED"))
    )
    assert len(d["exceptions"]) == expected
    assert d["verdict"] == f"{expected} exception{'s' if expected != 1 else ''} to review"
    html = api.get(f"/api/v1/batches/{batch}/digest.html", headers=auth("quality"))
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert batch in html.text and "BATCH_ON_TWO_LANES" in html.text and "<script" not in html.text
    assert "default-src 'none'" in html.headers["content-security-policy"]
    assert api.get(f"/api/v1/batches/{batch}/digest", headers=auth("ops")).status_code == 403
    assert api.get("/api/v1/batches/NO-SUCH/digest", headers=auth("quality")).status_code == 404
    # another site's batch is a 404 for a site token, as a batch that does not exist
    site_a = api.get("/api/v1/batches/NO-SUCH/digest", headers=auth("site-a"))
    assert site_a.status_code == 404 and site_a.json() == {"detail": "no batch NO-SUCH"}
    if network.moved.envelope.site_id != "site-a":
        foreign = api.get(f"/api/v1/batches/{batch}/digest", headers=auth("site-a"))
        assert foreign.status_code == 404 and foreign.json() == {"detail": f"no batch {batch}"}
