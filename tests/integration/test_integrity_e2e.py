"""Issue 7 done-when: the simulator's injected integrity faults are each found exactly, end to end.

Simulated network with every kind of fault on -> the ingest core's write path -> event store ->
views: ``integrity_findings`` holds one finding per injected fault (kind, stream, sequences,
evidence) and nothing else; the same network without faults has no finding at all. The
findings' deviations go back through the ingest and are triaged (segregation CRITICAL) without
causing findings of their own; an altered stored event is found by ``verify``; the digest of
each batch with an injected fault lists every exception of the batch.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from atmpnet.api.app import create_api
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Deviation, Event, SensorSummary
from atmpnet.settings import ApiToken, Settings
from atmpnet.site.simulation.network import IntegrityFaults
from atmpnet.site.simulator import GroundTruth, NetworkConfig, Simulation
from atmpnet.streams.derived import derived_events, integrity_deviations
from atmpnet.streams.ingest import IngestCore
from atmpnet.warehouse.connection import connect
from atmpnet.warehouse.migrations import apply_migrations
from atmpnet.warehouse.verify import verify_store
from atmpnet.warehouse.views import read_views, refresh_views
from clickhouse_connect.driver.client import Client
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.integration.integrity_support import continue_offsets, ingest, stream_of

pytestmark = pytest.mark.integration

SITES, DAYS, WINDOW = 2, 10, 60


def simulate(faults: IntegrityFaults | None) -> tuple[list[Event], GroundTruth]:
    sim = Simulation(
        NetworkConfig(sites=SITES, days=DAYS, seed=1, sensor_window_minutes=WINDOW, integrity_faults=faults)
    )
    events = list(sim.events())
    return events, sim.ground_truth


@pytest.fixture(scope="module")
def faulty(
    clickhouse_settings: Settings, codec: AvroCodec
) -> Iterator[tuple[Client, list[Event], GroundTruth]]:
    events, truth = simulate(IntegrityFaults())
    client = connect(clickhouse_settings, f"test_int_{uuid.uuid4().hex[:10]}")
    apply_migrations(client)
    ingest(IngestCore(client, codec), codec, events)
    refresh_views(client)
    yield client, events, truth
    with contextlib.suppress(Exception):
        client.command(f"DROP DATABASE IF EXISTS `{client.database}`")
    client.close()


def _findings(client: Client) -> list[dict[str, Any]]:
    cols = ("finding_id", "kind", "severity", "alarm_code", "site_id", "module_id", "stream", "lane",
            "batch_id", "first_at", "last_at", "sequences", "evidence", "message", "settled")  # fmt: skip
    return [dict(zip(cols, r, strict=True)) for r in read_views(client)["integrity_findings"]]


def test_a_clean_run_has_no_finding(clickhouse: Client, codec: AvroCodec) -> None:
    events, truth = simulate(None)
    assert not any(truth.integrity.values())
    apply_migrations(clickhouse)
    ingest(IngestCore(clickhouse, codec), codec, events)
    refresh_views(clickhouse)
    assert _findings(clickhouse) == []
    completeness = read_views(clickhouse)["completeness"]
    assert all(r[2] == r[3] == r[5] for r in completeness)  # expected == received == on time
    assert verify_store(clickhouse).findings == ()


def test_each_injected_fault_is_found_exactly(faulty: tuple[Client, list[Event], GroundTruth]) -> None:
    client, _events, truth = faulty
    injected = [f for faults in truth.integrity.values() for f in faults]
    assert {f.kind for f in injected} == {
        "DROPPED_EVENTS", "SKEWED_CLOCK", "BATCH_ON_TWO_LANES", "LANE_OVERLAP", "STEPS_OUT_OF_ORDER"
    }  # fmt: skip
    found = _findings(client)
    assert sorted((f["kind"], f["stream"]) for f in found) == sorted((i.finding, i.stream) for i in injected)
    by_key = {(f["kind"], f["stream"]): f for f in found}
    for fault in injected:
        f = by_key[(fault.finding, fault.stream)]
        assert f["site_id"] == fault.site_id
        # settled (raised as a deviation) once every partition of its stream's sensor summaries and
        # batch steps moved past its evidence by the lateness bound: at rest, all but the last hours
        end = max(x["last_at"] for x in found)
        assert f["settled"] or end - f["last_at"] < timedelta(days=1), f
        if fault.kind == "DROPPED_EVENTS":
            assert f["sequences"] == [fault.sequences[0], fault.sequences[-1]]
            assert not set(fault.event_ids) & set(f["evidence"])  # never received: not evidence
        else:
            assert sorted(f["evidence"]) == sorted(fault.event_ids), fault.description
        if fault.kind in ("BATCH_ON_TWO_LANES", "LANE_OVERLAP", "STEPS_OUT_OF_ORDER"):
            assert f["severity"] == "CRITICAL" and f["alarm_code"].startswith("DAT-SEG-")
    # completeness counts exactly the dropped events as missing
    missing = {r[0]: r[4] for r in read_views(client)["completeness"]}
    for site, faults in truth.integrity.items():
        assert missing[site] == sum(len(f.sequences) for f in faults if f.kind == "DROPPED_EVENTS")


def test_findings_raise_triaged_deviations_once(
    faulty: tuple[Client, list[Event], GroundTruth], codec: AvroCodec
) -> None:
    client, _events, _truth = faulty
    before = _findings(client)
    result = refresh_views(client)
    assert result is not None
    raised = integrity_deviations(result.views.findings)
    assert len(raised) == len(before)
    settled = [e for e in derived_events(result.views) if isinstance(e, Deviation)]
    assert {e.deviation_id for e in settled} == {f["finding_id"] for f in before if f["settled"]}
    core = IngestCore(client, codec)
    continue_offsets(core)
    ingest(core, codec, raised)
    ingest(core, codec, integrity_deviations(result.views.findings))  # a replay: same ids, no new row
    refresh_views(client)
    assert _findings(client) == before  # the platform's own deviations cause no finding
    triage = {r[0]: r for r in read_views(client)["deviation_triage"]}
    for f in before:
        row = triage[f["finding_id"]]
        assert row[11] == "DATA_INTEGRITY" and row[8] == f["alarm_code"]
        assert (
            row[13] == ("CRITICAL" if f["alarm_code"].startswith("DAT-SEG-") else "MAJOR")
            or row[12] == "DUPLICATE"
        )


def test_an_altered_stored_event_is_found_by_verify(faulty: tuple[Client, list[Event], GroundTruth]) -> None:
    client, events, truth = faulty
    gaps = {(f.stream, s) for faults in truth.integrity.values() for f in faults for s in f.sequences}
    streams: dict[str, list[Event]] = {}
    for e in events:
        streams.setdefault(stream_of(e), []).append(e)
    stream = sorted(s for s in streams if s.startswith("module/"))[-1]
    ordered = sorted(streams[stream], key=lambda e: e.envelope.sequence)
    victim = next(
        e
        for e in ordered[len(ordered) // 2 :]
        if isinstance(e, SensorSummary)
        and (stream, e.envelope.sequence + 1) not in gaps
        and (stream, e.envelope.sequence) not in gaps
    )
    before = {(f.kind, f.stream, f.sequences) for f in verify_store(client).findings}
    client.command(
        "ALTER TABLE sensor_summaries UPDATE raw = concat(raw, 'x')"
        f" WHERE event_id = '{victim.envelope.event_id}' SETTINGS mutations_sync = 2"
    )
    after = verify_store(client)
    new = [f for f in after.findings if (f.kind, f.stream, f.sequences) not in before]
    n = victim.envelope.sequence
    assert [(f.kind, f.stream, f.sequences) for f in new] == [("CHAIN_BREAK", stream, (n, n + 1))]
    assert str(victim.envelope.event_id) in new[0].evidence
    # the views see it too, after the next refresh
    refresh_views(client)
    assert any(f["kind"] == "CHAIN_BREAK" and f["stream"] == stream for f in _findings(client))


def test_the_digest_of_a_faulty_batch_lists_every_exception(
    faulty: tuple[Client, list[Event], GroundTruth], clickhouse_settings: Settings
) -> None:
    client, _events, truth = faulty
    api = TestClient(
        create_api(
            clickhouse_settings,
            client,
            tokens=[ApiToken(name="qa", role="quality", token=SecretStr("qa-e2e"))],
        )
    )
    batches = {f.batch_id for faults in truth.integrity.values() for f in faults if f.batch_id}
    assert batches
    found = _findings(client)
    for batch in sorted(batches):
        r = api.get(f"/api/v1/batches/{batch}/digest", headers={"Authorization": "Bearer qa-e2e"})
        assert r.status_code == 200, r.text
        d = r.json()
        naming = {f["finding_id"] for f in found if f["batch_id"] == batch}
        assert naming <= {f["finding_id"] for f in d["findings"]}
        expected = (
            len(d["deviations"])
            + len(d["drift"])
            + len(d["findings"])
            + sum(1 for s in d["steps"] if s["outcome"] in ("FAILED", "ABORTED"))
        )
        assert len(d["exceptions"]) == expected >= 1
        assert d["verdict"] == f"{expected} exception{'s' if expected != 1 else ''} to review"
        integrity = [x for x in d["exceptions"] if x["kind"] == "INTEGRITY"]
        assert len(integrity) == len(d["findings"])
