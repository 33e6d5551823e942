"""Compiled Avro writers write exactly the bytes fastavro (the codec) writes."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import BatchStep, Event, SensorSummary, StepTransition
from atmpnet.contract.examples import example_events
from atmpnet.errors import EncodingError
from atmpnet.site.record_writer import EventEncoder, Unsupported, compile_writer


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
