"""Compiled Avro readers return exactly what fastavro returns, and fail the way the codec fails."""

from __future__ import annotations

import io
import math
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from atmpnet.contract.catalog import SchemaCatalog, SchemaVersion
from atmpnet.contract.codec import HEADER, MAGIC_BYTE, AvroCodec
from atmpnet.contract.events import SensorSummary
from atmpnet.contract.examples import example_events
from atmpnet.contract.record_reader import NotCanonical, compile_reader, try_compile_reader
from atmpnet.errors import PayloadError
from atmpnet.site.simulator import NetworkConfig, Simulation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SCHEMA_DIR

LONG = (-(2**63), 2**63 - 1)
INT = (-(2**31), 2**31 - 1)


def _all_versions(catalog: SchemaCatalog) -> list[SchemaVersion]:
    return [v for subject in catalog.subjects() for v in catalog.versions(subject)]


def _canon(value: Any) -> Any:
    """Values compared exactly: floats by their bits (NaN, -0.0), types kept."""
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_canon(v) for v in value])
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, datetime):
        return ("datetime", value, value.tzinfo)
    return (type(value).__name__, value)


def _strategy(schema: Any, named: dict[str, Any], namespace: str = "") -> st.SearchStrategy[Any]:  # noqa: PLR0912
    """Records of ``schema`` (what fastavro's writer accepts), edge values included."""
    if isinstance(schema, list):
        return st.one_of(*[_strategy(branch, named, namespace) for branch in schema])
    if isinstance(schema, str):
        if schema in named or f"{namespace}.{schema}" in named:
            return _strategy(named.get(schema) or named[f"{namespace}.{schema}"], named, namespace)
        schema = {"type": schema}
    kind = schema["type"]
    if isinstance(kind, dict | list):
        return _strategy(kind, named, namespace)
    if kind in ("record", "enum"):
        full = (
            schema["name"]
            if "." in schema["name"]
            else f"{schema.get('namespace', namespace)}.{schema['name']}"
        )
        named[full] = schema
        namespace = full.rsplit(".", 1)[0]
    if kind == "record":
        return st.fixed_dictionaries(
            {f["name"]: _strategy(f["type"], named, namespace) for f in schema["fields"]}
        )
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(_strategy(schema["items"], named, namespace), max_size=4)
    logical = schema.get("logicalType")
    if kind == "string":
        return st.uuids() if logical == "uuid" else st.text(max_size=80)
    if kind == "long" and logical == "timestamp-micros":
        return st.one_of(
            st.datetimes(timezones=st.just(UTC)),
            st.integers(*LONG),  # raw micros, beyond datetime's range too
            st.sampled_from([0, -1, 1, 2**62, -(2**63), 2**63 - 1]),
        )
    if kind == "long":
        return st.one_of(st.integers(*LONG), st.sampled_from([*LONG, 0, -1, 63, 64, -64, -65]))
    if kind == "int":
        return st.one_of(st.integers(*INT), st.sampled_from([*INT, 0, -1, 63, 64, -64, -65]))
    if kind == "double":
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == "boolean":
        return st.booleans()
    assert kind == "null", kind
    return st.none()


def _fastavro_body(schema: Any, body: bytes) -> Any:
    buf = io.BytesIO(body)
    value = fastavro.schemaless_reader(buf, fastavro.parse_schema(schema), None)
    assert buf.tell() == len(body)
    return value


@pytest.fixture(scope="module")
def plain_codec(catalog: SchemaCatalog) -> AvroCodec:
    return AvroCodec(catalog, fast_path=False)


def test_every_catalog_schema_compiles(catalog: SchemaCatalog) -> None:
    for version in _all_versions(catalog):
        assert try_compile_reader(version.schema) is not None, version.subject


# one case per schema version in the committed catalog (read at collection time)
_VERSIONS = _all_versions(SchemaCatalog.load(SCHEMA_DIR))


@pytest.mark.parametrize("version", _VERSIONS, ids=lambda v: f"{v.subject}@{v.version}")
def test_random_records_read_as_fastavro_reads_them(version: SchemaVersion) -> None:
    schema = version.schema
    parsed = fastavro.parse_schema(schema)
    read = compile_reader(schema)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_strategy(schema, {}))
    def check(record: dict[str, Any]) -> None:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, record)
        body = buf.getvalue()
        try:
            expected: Any = _canon(_fastavro_body(schema, body))
        except OverflowError:  # a timestamp beyond datetime: the compiled reader must not accept it
            expected = OverflowError
        try:
            got, end = read(body, 0)
        except Exception:
            return
        assert end == len(body)
        assert _canon(got) == expected

    check()


def test_edge_timestamps_and_uuids(catalog: SchemaCatalog, codec: AvroCodec, plain_codec: AvroCodec) -> None:
    schema = catalog.latest("atmp.sensor-summaries.v1-value").schema
    header = HEADER.pack(MAGIC_BYTE, catalog.latest("atmp.sensor-summaries.v1-value").schema_id)
    parsed = fastavro.parse_schema(schema)
    base = next(e for e in example_events() if isinstance(e, SensorSummary)).to_avro()
    for instant in (
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC) - timedelta(microseconds=1),
        datetime(1971, 1, 1, tzinfo=UTC),
        datetime(2026, 11, 23, 19, 0, 0, 123456, tzinfo=UTC),
        datetime(2540, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
    ):
        for event_id in ("00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"):
            record = {**base, "window_start": instant, "window_end": instant}
            record["envelope"] = {**record["envelope"], "event_id": event_id, "occurred_at": instant}
            buf = io.BytesIO()
            buf.write(header)
            fastavro.schemaless_writer(buf, parsed, record)
            payload = buf.getvalue()
            assert _canon(codec.decode_record(payload)) == _canon(plain_codec.decode_record(payload))
            assert codec.decode_record(payload)[1]["window_start"] == instant


def _outcome(codec: AvroCodec, payload: bytes) -> Any:
    try:
        return _canon(codec.decode_record(payload))
    except PayloadError as exc:
        return type(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_corrupt_payloads_fail_like_fastavro(data: st.DataObject, catalog: SchemaCatalog) -> None:
    """Flipped, cut, inserted and appended bytes: the same value or the same PayloadError class."""
    fast, plain = AvroCodec(catalog), AvroCodec(catalog, fast_path=False)
    version = data.draw(st.sampled_from([catalog.latest(s) for s in catalog.subjects()]))
    buf = io.BytesIO()
    buf.write(HEADER.pack(MAGIC_BYTE, version.schema_id))
    fastavro.schemaless_writer(
        buf, fastavro.parse_schema(version.schema), data.draw(_strategy(version.schema, {}))
    )
    payload = bytearray(buf.getvalue())
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(HEADER.size, max(HEADER.size, len(payload) - 1)))
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "append", "set"]))
        if action == "flip" and where < len(payload):
            payload[where] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "set" and where < len(payload):
            payload[where] = data.draw(st.sampled_from([0, 1, 2, 3, 0x7F, 0x80, 0xFF]))
        elif action == "cut":
            del payload[where:]
        elif action == "insert":
            payload[where:where] = data.draw(st.binary(min_size=1, max_size=3))
        else:
            payload += data.draw(st.binary(min_size=1, max_size=3))
    assert _outcome(fast, bytes(payload)) == _outcome(plain, bytes(payload))


def test_simulated_stream_reads_as_fastavro_reads_it(codec: AvroCodec, plain_codec: AvroCodec) -> None:
    events = list(Simulation(NetworkConfig(sites=2, days=0.5, seed=11)).events())
    assert len({type(e) for e in events}) == 5
    for event in events:
        payload = codec.encode(event)
        assert _canon(codec.decode_record(payload)) == _canon(plain_codec.decode_record(payload))
        assert codec.decode(payload) == event


def test_older_writer_schema_is_resolved_by_fastavro(catalog: SchemaCatalog, codec: AvroCodec) -> None:
    """An event written with its subject's first version decodes to the latest (fastavro resolves)."""
    for event in example_events():
        old = catalog.versions(event.subject())[0]
        if old.schema_id == catalog.latest(event.subject()).schema_id:
            continue
        record = event.to_avro()
        record["envelope"] = {k: v for k, v in record["envelope"].items() if k != "previous_hash"}
        buf = io.BytesIO()
        buf.write(HEADER.pack(MAGIC_BYTE, old.schema_id))
        fastavro.schemaless_writer(buf, fastavro.parse_schema(old.schema), record)
        assert codec.decode(buf.getvalue()) == event.with_envelope(previous_hash=None)


def test_unsupported_schema_has_no_compiled_reader() -> None:
    assert (
        try_compile_reader({"type": "record", "name": "B", "fields": [{"name": "b", "type": "bytes"}]})
        is None
    )
    assert (
        try_compile_reader(
            {
                "type": "record",
                "name": "M",
                "fields": [{"name": "m", "type": {"type": "map", "values": "long"}}],
            }
        )
        is None
    )
    schema = {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["null", "string", "long"]}]}
    assert try_compile_reader(schema) is None


def test_infinities_keep_their_bits_and_nan_is_left_to_fastavro() -> None:
    schema = {"type": "record", "name": "D", "fields": [{"name": "d", "type": ["null", "double"]}]}
    read = compile_reader(schema)
    for value in (-math.inf, math.inf, -0.0, 5e-324):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), {"d": value})
        assert struct.pack("<d", read(buf.getvalue(), 0)[0]["d"]) == struct.pack("<d", value)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), {"d": math.nan})
    with pytest.raises(NotCanonical):
        read(buf.getvalue(), 0)
