"""Compiled Avro writers write exactly the bytes fastavro (the codec) writes."""

from __future__ import annotations

import io
import itertools
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import BatchStep, Event, SensorSummary, StepTransition
from atmpnet.contract.examples import example_events
from atmpnet.errors import EncodingError
from atmpnet.site.record_writer import EventEncoder, Unsupported, compile_writer
from hypothesis import given, settings
from hypothesis import strategies as st


def _variants() -> list[Event]:
    """Examples, plus edge values: nulls, empty lists, long strings, big and negative numbers."""
    out: list[Event] = []
    for event in example_events():
        out.append(event)
        out.append(
            event.with_envelope(
                event_id=uuid.uuid4(),
                lane=None if event.envelope.lane is None else 1024,
                sequence=2**62,
                occurred_at=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                published_at=datetime(2100, 1, 1, tzinfo=UTC),
                site_id=None if event.envelope.site_id is None else "s" * 63,
            )
        )
    step = example_events()[0]
    assert isinstance(step, BatchStep)
    out.append(
        step.model_copy(
            update={
                "results": None,
                "transition": StepTransition.FAILED,
                "failure_reason": "ü" * 200,
                "attempt": 70,
            }
        )
    )
    sensor = example_events()[1]
    assert isinstance(sensor, SensorSummary)
    out.append(
        sensor.model_copy(
            update={
                **dict.fromkeys(("min", "max", "mean", "stddev", "last", "alert_low", "alert_high"), None),
                "count": 0,
                "window_end": sensor.window_start + timedelta(microseconds=1),
            }
        )
    )
    config = example_events()[3]
    out.append(config.model_copy(update={"components": []}))
    return out


def test_compiled_writers_match_the_codec_byte_for_byte(codec: AvroCodec) -> None:
    encoder = EventEncoder(codec)
    for event in _variants():
        assert encoder.encode(event) == codec.encode(event), type(event).__name__
        assert codec.decode(encoder.encode(event)) == event


def test_compiled_writers_match_on_the_simulated_stream(codec: AvroCodec) -> None:
    simulation = pytest.importorskip("atmpnet.site.simulation.engine")
    network = pytest.importorskip("atmpnet.site.simulation.network")
    sim = simulation.Simulation(network.NetworkConfig(sites=2, days=2, seed=3))
    encoder = EventEncoder(codec)
    events = list(itertools.islice(sim.events(), 3000))
    assert {type(e) for e in events} >= {SensorSummary, BatchStep}
    for event in events:
        assert encoder.encode(event) == codec.encode(event)


def test_a_bad_value_is_an_encoding_error(codec: AvroCodec) -> None:
    event = example_events()[0]
    broken = event.model_copy(update={"step": "NOT-A-STEP"})
    with pytest.raises(EncodingError, match=r"atmp\.batch-steps\.v1-value"):
        EventEncoder(codec).encode(broken)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "record", "name": "R", "fields": [{"name": "f", "type": "bytes"}]},
        {"type": "record", "name": "R", "fields": [{"name": "f", "type": ["null", "int", "string"]}]},
        {"type": "record", "name": "R", "fields": [{"name": "f", "type": {"type": "map", "values": "int"}}]},
    ],
)
def test_unknown_constructs_are_refused_not_miswritten(schema: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        compile_writer(schema, b"\x00\x00\x00\x00\x01")


# -- property tests of the compiled writer against fastavro on a schema of every construct --

_TZ = timezone(timedelta(hours=-9, minutes=-30))
_HEADER = b"\x00\x00\x00\x00\x07"
_EDGE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Edge",
    "namespace": "atmp.test",
    "fields": [
        {"name": "n", "type": "long"},
        {"name": "i", "type": "int"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "maybe_at", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
        {"name": "text", "type": "string"},
        {"name": "maybe_text", "type": ["string", "null"]},
        {"name": "x", "type": "double"},
        {"name": "y", "type": ["null", "double"]},
        {"name": "z", "type": ["null", "double"]},
        {"name": "flag", "type": "boolean"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"]}},
        {"name": "again", "type": ["null", "Kind"]},
        {"name": "items", "type": {"type": "array", "items": "long"}},
    ],
}
_LONGS = st.integers(-(2**63), 2**63 - 1)
_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
_AWARE = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from([UTC, _TZ])
)


class _Edge:
    """Attributes read by the compiled writer, as a model's would be."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


@given(
    n=_LONGS,
    i=st.integers(-(2**31), 2**31 - 1),
    at=_AWARE,
    maybe_at=st.none() | _AWARE,
    text=st.text(),
    maybe_text=st.none() | st.text(),
    x=_FLOATS,
    y=st.none() | _FLOATS,
    z=st.none() | _FLOATS,
    flag=st.booleans(),
    kind=st.sampled_from("ABC"),
    again=st.none() | st.sampled_from("ABC"),
    items=st.lists(_LONGS, max_size=70),
)
@settings(max_examples=300, deadline=None)
def test_compiled_writer_matches_fastavro_on_edge_values(**fields: Any) -> None:
    expected = io.BytesIO(_HEADER)
    expected.seek(len(_HEADER))
    fastavro.schemaless_writer(expected, fastavro.parse_schema(_EDGE_SCHEMA), fields)
    assert compile_writer(_EDGE_SCHEMA, _HEADER)(_Edge(**fields)) == expected.getvalue()  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [2**63, -(2**63) - 1, 2**64, -(2**70)])
def test_a_long_out_of_range_is_refused_not_wrapped(n: int) -> None:
    # fastavro raises OverflowError here; writing the bytes would hand a reader another number
    schema = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]}
    with pytest.raises(OverflowError):
        compile_writer(schema, _HEADER)(_Edge(n=n))  # type: ignore[arg-type]


def test_a_value_of_the_wrong_type_is_an_encoding_error_never_a_raw_one(codec: AvroCodec) -> None:
    # model_copy does not validate, so such models reach the publisher
    sensor = example_events()[1]
    step = example_events()[0]
    config = example_events()[3]
    encoder = EventEncoder(codec)
    for broken in (
        sensor.model_copy(update={"action_low": None, "action_high": "high"}),  # a run of doubles
        sensor.model_copy(update={"count": 2**64}),
        config.model_copy(update={"components": None}),  # a required array
        step.model_copy(update={"attempt": None}),
    ):
        with pytest.raises(EncodingError):
            encoder.encode(broken)
