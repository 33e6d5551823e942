"""The validation fast path accepts only what pydantic accepts, and the ingest's outcome is the same."""

from __future__ import annotations

import contextlib
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import SensorSummary, parse_event
from atmpnet.contract.examples import example_events
from atmpnet.errors import EventValidationError
from atmpnet.site.simulator import NetworkConfig, Simulation
from atmpnet.streams.dead_letter import RawRecord
from atmpnet.streams.ingest import IngestCore
from atmpnet.streams.record_rules import sensor_summary_valid
from atmpnet.warehouse.event_store import event_row
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NOW = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)
FLOATS = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 36.9, 37.0, 1e300, -1e300, math.nan, math.inf]),
)
TEXT_EDGES = ["", "a", "a" * 32, "a" * 33, "a" * 128, "a" * 129, "Ab", "a\n", "ä", "a b"]
ENVELOPE_EDGES: dict[str, st.SearchStrategy[Any]] = {
    "site_id": st.sampled_from([None, "", "site-a", "Site", "s" * 63, "s" * 64, "-a", "a\n", "a.b"]),
    "module_id": st.sampled_from([None, *TEXT_EDGES]),
    "lane": st.sampled_from([None, -1, 0, 1, 2, 1024, 1025, 2**31 - 1]),
    "batch_id": st.sampled_from([None, *TEXT_EDGES]),
    "sequence": st.sampled_from([-1, 0, 1, 2**63 - 1]),
    "previous_hash": st.sampled_from(
        [None, "a" * 64, "0" * 64, "A" * 64, "a" * 63, "g" * 64, "a" * 64 + "\n"]
    ),
    "schema_version": st.sampled_from([-5, 0, 1, 2, 2**31 - 1]),
    "occurred_at": st.datetimes(timezones=st.just(UTC)),
}
PRODUCER_EDGES: dict[str, st.SearchStrategy[Any]] = {
    "id": st.sampled_from(TEXT_EDGES),
    "software_version": st.sampled_from([None, "", "1.0"]),
}
SENSOR_EDGES: dict[str, st.SearchStrategy[Any]] = {
    "parameter": st.sampled_from(["", "temperature", "Temp", "a" * 64, "a" * 65, "a\n", "_x", "x-y", "co2"]),
    "unit": st.sampled_from(TEXT_EDGES),
    "count": st.sampled_from([-1, 0, 1, 3, 5, 2**63 - 1]),
    "samples_outside_alert": st.sampled_from([-1, 0, 1, 3, 6]),
    "samples_outside_action": st.sampled_from([-1, 0, 1, 3, 6]),
    **dict.fromkeys(
        ("min", "max", "mean", "stddev", "last", "alert_low", "alert_high", "action_low", "action_high"),
        FLOATS,
    ),
}


def _base_records(codec: AvroCodec) -> list[dict[str, Any]]:
    summaries = [e for e in example_events() if isinstance(e, SensorSummary)]
    simulated = [
        e
        for e in Simulation(NetworkConfig(sites=1, days=0.2, seed=3)).events()
        if isinstance(e, SensorSummary)
    ]
    return [codec.decode_record(codec.encode(e))[1] for e in [*summaries, *simulated[:50]]]


@st.composite
def _mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """A sensor-summary record with some fields replaced by edge values (still Avro-typed)."""
    record = dict(base)
    envelope = dict(record["envelope"])
    producer = dict(envelope["producer"])
    for target, edges in ((envelope, ENVELOPE_EDGES), (producer, PRODUCER_EDGES), (record, SENSOR_EDGES)):
        for name in draw(st.sets(st.sampled_from(sorted(edges)), max_size=3)):
            target[name] = draw(edges[name])
    if draw(st.booleans()):
        shift = draw(st.sampled_from([-1, 0, 1, 60_000_000]))
        record["window_end"] = record["window_start"] + timedelta(microseconds=shift)
    envelope["producer"] = producer
    record["envelope"] = envelope
    return record


def test_simulated_summaries_take_the_fast_path_with_equal_rows(codec: AvroCodec) -> None:
    events = [
        e
        for e in Simulation(NetworkConfig(sites=2, days=0.5, seed=7)).events()
        if isinstance(e, SensorSummary)
    ]
    core = IngestCore(None, codec)  # type: ignore[arg-type]  # decode needs no client
    records = [
        RawRecord(e.TOPIC, 0, i, e.partition_key().encode(), codec.encode(e), ())
        for i, e in enumerate(events)
    ]
    batch = core.decode(records)
    stored = batch.events[SensorSummary]
    assert len(stored) == len(events)
    assert all(s.record is not None for s in stored)  # every one took the fast path
    for s, event in zip(stored, events, strict=True):
        assert s.event == event  # the lazily built model is the pydantic one
        model_row = event_row(type(s)(event, s.schema_id, s.topic, s.partition, s.offset, s.raw), NOW)
        assert event_row(s, NOW) == model_row


@pytest.fixture(scope="module")
def bases(codec: AvroCodec) -> list[dict[str, Any]]:
    return _base_records(codec)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fast_path_valid_implies_pydantic_valid(data: st.DataObject, bases: list[dict[str, Any]]) -> None:
    record = data.draw(_mutated(data.draw(st.sampled_from(bases))))
    if sensor_summary_valid(record):
        event = parse_event(SensorSummary, record)  # must not raise
        assert event.envelope.event_id == record["envelope"]["event_id"]
    else:
        # not a claim that it is invalid: pydantic decides, and the ingest asks it
        with contextlib.suppress(EventValidationError):
            parse_event(SensorSummary, record)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_ingest_outcome_equals_the_pydantic_path(
    data: st.DataObject, codec: AvroCodec, bases: list[dict[str, Any]]
) -> None:
    """Same events, rows, dead-letter reasons and texts, with and without the fast path."""
    records = []
    for offset in range(data.draw(st.integers(1, 6))):
        record = data.draw(_mutated(data.draw(st.sampled_from(bases))))
        env = record["envelope"]
        key = data.draw(st.sampled_from([f"{env['module_id']}/{env['lane']}", "other"]))
        value = codec.encode_record(SensorSummary.subject(), record)
        topic = data.draw(st.sampled_from([SensorSummary.TOPIC, f"site-a.{SensorSummary.TOPIC}"]))
        records.append(RawRecord(topic, 0, offset, key.encode(), value, ()))
    fast = IngestCore(None, codec).decode(records)  # type: ignore[arg-type]
    plain = IngestCore(None, codec, fast_rules=False).decode(records)  # type: ignore[arg-type]
    assert [(d.reason_code, d.reason, d.record.offset) for d in fast.dead_letters] == [
        (d.reason_code, d.reason, d.record.offset) for d in plain.dead_letters
    ]
    assert fast.duplicates == plain.duplicates
    fast_rows = [event_row(s, NOW) for s in fast.events.get(SensorSummary, [])]
    plain_rows = [event_row(s, NOW) for s in plain.events.get(SensorSummary, [])]
    assert _bits(fast_rows) == _bits(plain_rows)


def _bits(rows: list[list[Any]]) -> list[list[Any]]:
    return [[v.hex() if isinstance(v, float) else v for v in row] for row in rows]


def test_both_outcomes_occur(bases: list[dict[str, Any]]) -> None:
    """The generated records are not all valid nor all invalid (the properties above are not vacuous)."""
    assert all(sensor_summary_valid(b) for b in bases)
    broken = dict(bases[0], unit="")
    assert not sensor_summary_valid(broken)
    with pytest.raises(EventValidationError):
        parse_event(SensorSummary, broken)
