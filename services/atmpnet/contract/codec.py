"""Avro codec in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro body.

The hot path reads with a reader compiled from the writer schema (record_reader.py) and
falls back to fastavro, with parsed schemas cached per schema id, for whatever that reader
does not accept; nothing walks a schema per message. Readers resolve the writer's schema to
the catalog's latest version of the subject, so events written with an older schema decode after it evolves.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro._read_common import SchemaResolutionError

from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.events import EVENT_TYPE_BY_RECORD, Event, parse_event
from atmpnet.contract.record_reader import RecordReader, try_compile_reader
from atmpnet.contract.registry import CatalogSource, SchemaSource
from atmpnet.errors import (
    BadMagicByte,
    EncodingError,
    MalformedPayload,
    TruncatedPayload,
)

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")


@dataclass(frozen=True)
class _Reader:
    record: str
    writer: Any
    reader: Any  # None when the writer schema is the reader's own
    event_type: type[Event]
    # the compiled fast path (record_reader.py); None when resolving to another schema or unsupported
    compiled: RecordReader | None = None


@dataclass(frozen=True)
class _Writer:
    header: bytes
    schema: Any


def _parse(schema: dict[str, Any]) -> Any:
    # parse_schema marks the result as parsed; without that mark fastavro re-parses per call
    return fastavro.parse_schema(schema)


class AvroCodec:
    """Encode events to, and decode them from, Confluent wire-format Avro."""

    def __init__(
        self, catalog: SchemaCatalog, source: SchemaSource | None = None, *, fast_path: bool = True
    ) -> None:
        self.catalog = catalog
        self.source = source or CatalogSource(catalog)
        # compiled readers (record_reader.py) first; False decodes with fastavro only (tests compare)
        self.fast_path = fast_path
        self._writers: dict[str, _Writer] = {}
        self._readers: dict[int, _Reader] = {}

    # -- encoding -----------------------------------------------------------------

    def _writer(self, subject: str) -> _Writer:
        writer = self._writers.get(subject)
        if writer is None:
            schema_id = self.source.writer_id(subject)
            writer = _Writer(HEADER.pack(MAGIC_BYTE, schema_id), _parse(self.catalog.latest(subject).schema))
            self._writers[subject] = writer
        return writer

    def encode(self, event: Event) -> bytes:
        """The event as wire-format bytes, written with its subject's latest schema."""
        return self.encode_record(event.subject(), event.to_avro())

    def encode_record(self, subject: str, record: dict[str, Any]) -> bytes:
        """A plain record (already valid) as wire-format bytes of ``subject``."""
        writer = self._writer(subject)
        buf = io.BytesIO()
        buf.write(writer.header)
        try:
            fastavro.schemaless_writer(buf, writer.schema, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise EncodingError(f"cannot encode a {subject} record: {exc}") from exc
        return buf.getvalue()

    # -- decoding -----------------------------------------------------------------

    def _reader(self, schema_id: int) -> _Reader:
        reader = self._readers.get(schema_id)
        if reader is None:
            writer_schema = self.source.writer_schema(schema_id)
            if not isinstance(writer_schema, dict) or writer_schema.get("type") != "record":
                raise MalformedPayload(f"schema id {schema_id} is not an event record schema")
            record = f"{writer_schema.get('namespace')}.{writer_schema.get('name')}"
            event_type = EVENT_TYPE_BY_RECORD.get(record)
            if event_type is None:
                raise MalformedPayload(f"schema id {schema_id} writes {record}, which is no atmpnet event")
            latest = self.catalog.latest(self.catalog.subject_for_record(record))
            try:
                writer = _parse(writer_schema)
            except (ValueError, KeyError, TypeError) as exc:  # fastavro's parse errors are ValueErrors
                raise MalformedPayload(
                    f"writer schema {schema_id} of {record} does not parse: {exc}"
                ) from exc
            own = writer_schema == latest.schema
            reader = _Reader(
                record=record,
                writer=writer,
                reader=None if own else _parse(latest.schema),
                event_type=event_type,
                compiled=try_compile_reader(writer_schema) if own and self.fast_path else None,
            )
            self._readers[schema_id] = reader
        return reader

    def decode_record(self, payload: bytes) -> tuple[str, dict[str, Any]]:
        """Decode to ``(record name, Avro dict)`` in the reader's schema, without model validation."""
        if len(payload) < HEADER.size:
            raise TruncatedPayload(
                f"payload of {len(payload)} bytes is shorter than the {HEADER.size}-byte wire-format header"
            )
        magic, schema_id = HEADER.unpack_from(payload)
        if magic != MAGIC_BYTE:
            raise BadMagicByte(payload[0])
        reader = self._reader(schema_id)
        if reader.compiled is not None:
            try:
                fast, end = reader.compiled(payload, HEADER.size)
            except Exception:  # noqa: S110 - not accepted by the fast path: fastavro judges below
                pass
            else:
                if end == len(payload):
                    return reader.record, fast
        buf = io.BytesIO(payload)
        buf.seek(HEADER.size)
        try:
            record = fastavro.schemaless_reader(buf, reader.writer, reader.reader)
        except (EOFError, StopIteration) as exc:
            raise TruncatedPayload(
                f"Avro body of {reader.record} (schema id {schema_id}) ends early "
                f"after {len(payload) - HEADER.size} bytes"
            ) from exc
        except (
            SchemaResolutionError,
            ValueError,  # also UnicodeDecodeError: bad string bytes
            IndexError,  # enum or union index out of range
            OverflowError,  # a timestamp beyond datetime's range
            TypeError,
        ) as exc:
            raise MalformedPayload(
                f"Avro body does not match {reader.record} (schema id {schema_id}): {exc}"
            ) from exc
        extra = len(payload) - buf.tell()
        if extra:
            raise MalformedPayload(
                f"{extra} trailing bytes after the {reader.record} body (schema id {schema_id})"
            )
        assert isinstance(record, dict)
        return reader.record, record

    def decode(self, payload: bytes) -> Event:
        """Decode and validate wire-format bytes into their event model."""
        record_name, record = self.decode_record(payload)
        return parse_event(EVENT_TYPE_BY_RECORD[record_name], record)
