"""The simulator's hash chain and its injected integrity faults, checked by the pure integrity rules.

No broker: the simulator's events become the rules' facts directly, each hashed from an
independent encoding (the fastavro codec, not the compiled writer the simulator chains with)
and ingested two seconds after its ``published_at``. A clean run must give no finding at all;
a faulty run must give exactly the findings its ground truth lists, one per injected fault.
"""

from __future__ import annotations

import copy
import hashlib
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from atmpnet.contract.chain import ChainLink, payload_hash, verify_chain
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Event, SensorSummary
from atmpnet.errors import ConfigurationError
from atmpnet.rules.integrity import (
    EventFact,
    Finding,
    FindingKind,
    IntegrityBounds,
    all_findings,
    chain_breaks,
    completeness,
)
from atmpnet.site.simulation.engine import body_writers
from atmpnet.site.simulation.faults import FaultKind
from atmpnet.site.simulation.network import IntegrityFaults
from atmpnet.site.simulation.sensor_bodies import SensorBodies
from atmpnet.site.simulator import GroundTruth, NetworkConfig, Simulation

CLEAN = NetworkConfig(sites=3, days=24, seed=7, sensor_window_minutes=120)
FAULTS = IntegrityFaults(dropped_runs=2, skewed_clocks=1, batches_on_two_lanes=1, lane_overlaps=2)
FAULTY = NetworkConfig(sites=3, days=24, seed=7, sensor_window_minutes=120, integrity_faults=FAULTS)
BOUNDS = IntegrityBounds(streams_start_at_one=True)  # whole runs: every stream starts at 1
INGEST_DELAY = timedelta(seconds=2)

Run = tuple[list[Event], GroundTruth, list[EventFact]]


def run(config: NetworkConfig, codec: AvroCodec) -> Run:
    sim = Simulation(config, catalog=codec.catalog)
    events = list(sim.events())
    facts = [
        EventFact.from_event(
            e, hash=payload_hash(codec.encode(e)), ingested_at=e.envelope.published_at + INGEST_DELAY
        )
        for e in events
    ]
    return events, sim.ground_truth, facts


@pytest.fixture(scope="module")
def clean(codec: AvroCodec) -> Run:
    return run(CLEAN, codec)


@pytest.fixture(scope="module")
def faulty(codec: AvroCodec) -> Run:
    return run(FAULTY, codec)


def _stream(event: Event) -> str:
    env = event.envelope
    return env.module_id or env.producer.id


# --- the chain ------------------------------------------------------------------------------


def test_every_stream_is_chained_over_the_canonical_bytes(clean: Run) -> None:
    events, _, facts = clean
    links: dict[str, list[ChainLink]] = defaultdict(list)
    for event, fact in zip(events, facts, strict=True):
        links[_stream(event)].append(ChainLink(fact.sequence, fact.previous_hash, fact.hash or ""))
    assert "network-quality" in links and len(links) >= 10
    for stream, chain in links.items():
        assert chain[0].previous_hash is None, stream  # genesis
        assert all(link.previous_hash for link in chain[1:]), stream  # then every event is chained
        assert verify_chain(chain, head=chain[-1].hash) == [], stream
    # the check can fail: one altered event breaks the link from its successor
    stream, chain = next(iter(links.items()))
    forged = [*chain[:3], ChainLink(4, chain[3].previous_hash, "0" * 64), *chain[4:]]
    assert [(b.before, b.after) for b in verify_chain(forged)] == [(4, 5)]


def test_without_the_chain_no_event_names_a_predecessor() -> None:
    sim = Simulation(NetworkConfig(sites=1, days=2, seed=3, sensor_window_minutes=120, chain=False))
    assert {e.envelope.previous_hash for e in sim.events()} == {None}


def test_a_clean_run_gives_no_finding_and_is_complete(clean: Run) -> None:
    _, truth, facts = clean
    assert all_findings(facts, BOUNDS) == []
    assert truth.integrity == {site: [] for site in truth.sites}
    per_site = completeness(facts, BOUNDS)
    assert set(per_site) == {*truth.sites, None}  # None: the network's baselines
    for site in per_site.values():
        assert site.received_share == site.on_time_share == 1.0
        assert site.skewed == 0


# --- the faults -----------------------------------------------------------------------------


def _key(f: Finding) -> tuple[str, str, tuple[int, ...], tuple[str, ...]]:
    """What must match the truth: kind, stream and, by kind, the gap's bounds or the evidence."""
    if f.kind is FindingKind.SEQUENCE_GAP:
        return (f.kind.value, f.stream, f.sequences, ())
    return (f.kind.value, f.stream, f.sequences if f.kind is FindingKind.CLOCK_SKEW else (), f.evidence)


def test_each_injected_fault_is_found_exactly_once_and_nothing_else(faulty: Run) -> None:
    _, truth, facts = faulty
    injected = [fault for faults in truth.integrity.values() for fault in faults]
    expected: set[tuple[str, str, tuple[int, ...], tuple[str, ...]]] = set()
    for fault in injected:
        if fault.kind == FaultKind.DROPPED_EVENTS:
            # consecutive numbers never emitted: one gap from the first to the last
            assert fault.sequences == list(range(fault.sequences[0], fault.sequences[-1] + 1))
            expected.add((fault.finding, fault.stream, (fault.sequences[0], fault.sequences[-1]), ()))
        elif fault.kind == FaultKind.SKEWED_CLOCK:
            bounds = (fault.sequences[0], fault.sequences[-1])
            expected.add((fault.finding, fault.stream, bounds, tuple(fault.event_ids)))
        else:
            expected.add((fault.finding, fault.stream, (), tuple(fault.event_ids)))
    found = all_findings(facts, BOUNDS)
    assert sorted(_key(f) for f in found) == sorted(expected)
    assert len(found) == len(injected)
    # every kind was injected at every site, as many as configured
    per_kind = Counter(fault.kind for fault in injected)
    assert per_kind == {
        FaultKind.DROPPED_EVENTS: 2 * 3,
        FaultKind.SKEWED_CLOCK: 1 * 3,
        FaultKind.BATCH_ON_TWO_LANES: 1 * 3,
        FaultKind.LANE_OVERLAP: 2 * 3,
        FaultKind.STEPS_OUT_OF_ORDER: 1 * 3,
    }
    for fault in injected:
        assert fault.module_id.startswith(fault.site_id)
        assert fault.description
    # segregation faults are CRITICAL, the others MAJOR (the finding carries its severity)
    assert {f.kind: f.severity.value for f in found}[FindingKind.LANE_OVERLAP] == "CRITICAL"


def test_faults_are_in_what_was_produced_so_the_chain_still_holds(faulty: Run) -> None:
    _, truth, facts = faulty
    assert chain_breaks(facts) == []
    # dropped events were chained before they were lost: the next event names a hash nobody received
    received = {f.hash for f in facts}
    dangling = [f for f in facts if f.previous_hash is not None and f.previous_hash not in received]
    dropped = [f for faults in truth.integrity.values() for f in faults if f.kind == FaultKind.DROPPED_EVENTS]
    assert len(dangling) == len(dropped)


def test_completeness_counts_what_the_faults_took(faulty: Run) -> None:
    _, truth, facts = faulty
    per_site = completeness(facts, BOUNDS)
    for site_id, faults in truth.integrity.items():
        lost = sum(len(f.sequences) for f in faults if f.kind == FaultKind.DROPPED_EVENTS)
        skewed = sum(len(f.event_ids) for f in faults if f.kind == FaultKind.SKEWED_CLOCK)
        site = per_site[site_id]
        assert site.missing == lost > 0
        assert site.skewed == skewed > 0
        assert site.received_share < 1.0
        assert site.on_time == site.received  # skewed clocks are not late arrivals


def test_faults_change_the_run_only_where_they_are(clean: Run, faulty: Run) -> None:
    events, truth, _ = faulty
    clean_events, clean_truth, _ = clean
    overlaps = sum(1 for fs in truth.integrity.values() for f in fs if f.kind == FaultKind.LANE_OVERLAP)
    counts = Counter(type(e).__name__ for e in events)
    clean_counts = Counter(type(e).__name__ for e in clean_events)
    assert (
        counts["BatchStep"] == clean_counts["BatchStep"] + 2 * overlaps
    )  # each extra start: STARTED, ABORTED
    for name in ("Deviation", "ModuleConfiguration", "ValidatedBaseline"):
        assert counts[name] == clean_counts[name]
    assert truth.event_counts == {**clean_truth.event_counts, **counts}  # the truth counts what was emitted
    # the plan is the same: same batches, same deviation figures
    for site_id, site in truth.sites.items():
        assert site.deviations_by_class == clean_truth.sites[site_id].deviations_by_class
        assert site.batches_started == clean_truth.sites[site_id].batches_started


def test_dropped_events_are_missing_and_nothing_else_is(codec: AvroCodec) -> None:
    config = NetworkConfig(sites=1, days=10, seed=11, sensor_window_minutes=60)
    only_drops = IntegrityFaults(
        dropped_runs=3, skewed_clocks=0, batches_on_two_lanes=0, lane_overlaps=0, steps_out_of_order=0
    )
    clean_events, _, _ = run(config, codec)
    events, truth, facts = run(replace(config, integrity_faults=only_drops), codec)
    [faults] = truth.integrity.values()
    lost = {(f.module_id, s) for f in faults for s in f.sequences}
    assert len(faults) == 3 and lost

    # the same events, ids aside (drawn in emission order), but for the lost ones
    def shape(e: Event) -> tuple[object, ...]:
        return (type(e).__name__, e.envelope.module_id, e.envelope.sequence, e.envelope.occurred_at)

    assert [shape(e) for e in events] == [
        shape(e) for e in clean_events if (e.envelope.module_id, e.envelope.sequence) not in lost
    ]
    assert [(f.kind, f.sequences) for f in all_findings(facts, BOUNDS)] == [
        (FindingKind.SEQUENCE_GAP, (f.sequences[0], f.sequences[-1]))
        for f in sorted(faults, key=lambda f: (f.stream, f.sequences))
    ]


def test_the_same_seed_injects_the_same_faults(faulty: Run, codec: AvroCodec, tmp_path: Path) -> None:
    _, truth, _ = faulty
    sim = Simulation(FAULTY, catalog=codec.catalog)
    for _ in sim.events():
        pass
    assert sim.ground_truth == truth
    truth.write(tmp_path / "truth.json")
    assert GroundTruth.read(tmp_path / "truth.json").integrity == truth.integrity


@pytest.mark.parametrize(
    "bad",
    [
        {"dropped_runs": -1},
        {"dropped_run_length": (0, 3)},
        {"dropped_run_length": (4, 2)},
        {"skew_hours": (0.0, 1.0)},
    ],
)
def test_bad_fault_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        IntegrityFaults(**bad)  # type: ignore[arg-type]


# --- the fast sensor-summary bodies the chain hashes ------------------------------------------


def _sensor_bodies(codec: AvroCodec, schema: dict[str, Any] | None = None) -> tuple[SensorBodies, Any]:
    writer = body_writers(codec.catalog)[SensorSummary]
    latest = codec.catalog.latest(SensorSummary.subject()).schema
    return SensorBodies(schema or latest, writer), writer


def _dicts(event: Event) -> tuple[dict[str, Any], dict[str, Any]]:
    return dict(event.envelope.__dict__), dict(event.__dict__)


def test_fast_sensor_bodies_are_the_compiled_writers_bytes(codec: AvroCodec) -> None:
    bodies, writer = _sensor_bodies(codec)
    assert bodies.enabled
    sim = Simulation(NetworkConfig(sites=2, days=3, seed=5, sensor_window_minutes=5), catalog=codec.catalog)
    summaries = [e for e in sim.events() if isinstance(e, SensorSummary)]
    assert len(summaries) > 5000
    for event in summaries:
        assert bodies.body(*_dicts(event), event) == writer(event)
    # branches the simulator never takes: missing statistics, large counts, a chain start
    odd = summaries[100].model_copy(
        update={"min": None, "last": None, "count": 5000, "samples_outside_alert": 70}
    )
    odd = odd.with_envelope(previous_hash=None)
    assert bodies.body(*_dicts(odd), odd) == writer(odd)
    # and the bytes hash to what the codec's encoding hashes to
    assert hashlib.sha256(bodies.body(*_dicts(odd), odd)).hexdigest() == payload_hash(codec.encode(odd))


def test_a_schema_the_fast_bodies_do_not_know_falls_back_to_the_writer(codec: AvroCodec) -> None:
    schema = copy.deepcopy(codec.catalog.latest(SensorSummary.subject()).schema)
    schema["fields"].insert(3, {"name": "probe_serial", "type": ["null", "string"], "default": None})
    bodies, writer = _sensor_bodies(codec, schema)
    assert not bodies.enabled
    event = next(e for e in Simulation(CLEAN, catalog=codec.catalog).events() if isinstance(e, SensorSummary))
    assert bodies.body(*_dicts(event), event) == writer(event)
