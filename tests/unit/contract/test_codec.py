"""The wire-format codec: round trips, and a typed error for every kind of bad payload."""

from __future__ import annotations

import struct

import pytest
from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Event, SensorSummary
from atmpnet.contract.examples import example_events
from atmpnet.errors import (
    BadMagicByte,
    ContractError,
    MalformedPayload,
    PayloadError,
    TruncatedPayload,
    UnknownSchemaId,
)
from hypothesis import given, settings
from hypothesis import strategies as st

EXAMPLES = example_events()


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_type_round_trips_with_every_field_equal(codec: AvroCodec, event: Event) -> None:
    payload = codec.encode(event)
    assert payload[0] == 0
    (schema_id,) = struct.unpack(">I", payload[1:5])
    assert schema_id == codec.catalog.latest(event.subject()).schema_id
    decoded = codec.decode(payload)
    assert decoded == event
    assert decoded.model_dump() == event.model_dump()


def test_bad_magic_byte_is_named(codec: AvroCodec) -> None:
    payload = bytearray(codec.encode(EXAMPLES[0]))
    payload[0] = 0x7B  # '{': someone sent JSON
    with pytest.raises(BadMagicByte, match="0x7b"):
        codec.decode(bytes(payload))


def test_unknown_schema_id_is_named(codec: AvroCodec) -> None:
    payload = codec.encode(EXAMPLES[0])
    with pytest.raises(UnknownSchemaId, match="unknown schema id 9999") as info:
        codec.decode(b"\x00" + struct.pack(">I", 9999) + payload[5:])
    assert info.value.schema_id == 9999


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_truncation_raises_truncated_or_malformed(codec: AvroCodec, event: Event) -> None:
    payload = codec.encode(event)
    for cut in range(len(payload)):
        with pytest.raises((TruncatedPayload, MalformedPayload)):
            codec.decode(payload[:cut])
    with pytest.raises(TruncatedPayload, match="shorter than the 5-byte"):
        codec.decode(payload[:3])


def test_trailing_bytes_are_refused(codec: AvroCodec) -> None:
    with pytest.raises(MalformedPayload, match="2 trailing bytes"):
        codec.decode(codec.encode(EXAMPLES[1]) + b"\x00\x00")


def test_a_body_that_breaks_the_model_names_the_field(codec: AvroCodec) -> None:
    summary = next(e for e in EXAMPLES if isinstance(e, SensorSummary))
    record = summary.to_avro() | {"mean": 500.0}  # Avro-valid, but outside [min, max]
    payload = codec.encode_record(SensorSummary.subject(), record)
    with pytest.raises(ContractError) as info:
        codec.decode(payload)
    assert "mean" in str(info.value)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_corrupted_payloads_raise_only_contract_errors(codec: AvroCodec, data: st.DataObject) -> None:
    event = data.draw(st.sampled_from(EXAMPLES))
    payload = bytearray(codec.encode(event))
    position = data.draw(st.integers(0, len(payload) - 1))
    payload[position] = data.draw(st.integers(0, 255))
    try:
        decoded = codec.decode(bytes(payload))
    except ContractError:
        return  # named fault: fine
    assert type(decoded) is type(event)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50),
    lane=st.integers(1, 64),
    sequence=st.integers(1, 2**62),
    parameter=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
)
def test_sensor_summaries_round_trip_for_any_valid_statistics(
    codec: AvroCodec, values: list[float], lane: int, sequence: int, parameter: str
) -> None:
    base = next(e for e in EXAMPLES if isinstance(e, SensorSummary))
    mean = min(max(sum(values) / len(values), min(values)), max(values))
    event = base.with_envelope(lane=lane, sequence=sequence).model_copy(
        update={
            "parameter": parameter,
            "count": len(values),
            "min": min(values),
            "max": max(values),
            "mean": mean,
            "last": values[-1],
            "stddev": 0.0,
            "samples_outside_alert": 0,
            "samples_outside_action": 0,
        }
    )
    SensorSummary.model_validate(event.model_dump())  # the update is itself valid
    assert codec.decode(codec.encode(event)) == event


def test_errors_share_one_root() -> None:
    from atmpnet.errors import AtmpError

    for error in (BadMagicByte, TruncatedPayload, MalformedPayload, UnknownSchemaId, PayloadError):
        assert issubclass(error, AtmpError)


def test_values_beyond_avro_ranges_are_refused_by_the_model() -> None:
    from atmpnet.contract.events import BatchStep, parse_event
    from atmpnet.errors import EventValidationError

    event = next(e for e in EXAMPLES if isinstance(e, BatchStep))
    data = event.model_dump()
    data["attempt"] = 2**31
    data["envelope"]["sequence"] = 2**63
    with pytest.raises(EventValidationError) as info:
        parse_event(BatchStep, data)
    assert {e.path for e in info.value.errors} == {"attempt", "envelope.sequence"}


def test_a_registry_id_that_is_no_event_record_is_a_payload_error(catalog: SchemaCatalog) -> None:
    import uuid

    from atmpnet.contract.registry import RegistrySource
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    key_id = client.register_schema("atmp.batch-steps.v1-key", Schema('{"type": "string"}', "AVRO"))
    codec = AvroCodec(catalog, RegistrySource(catalog, "mock://", client=client))
    with pytest.raises(MalformedPayload, match="not an event record schema"):
        codec.decode(b"\x00" + struct.pack(">I", key_id) + b"\x02a")
