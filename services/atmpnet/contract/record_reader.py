"""Compiled Avro readers: Confluent wire-format body -> the dict fastavro would return, faster.

``fastavro.schemaless_reader`` needs a file object (a BytesIO per record), walks the parsed
schema per record and converts logical types through generic hooks; for the event records
that is about as costly as validating them. Here each writer schema is compiled once into a
Python function that reads the body straight from the ``bytes`` by position: one-byte varints
inline, strings by slice, nullable unions by their marker byte, one dict display per record.
It is the reading twin of ``site/record_writer.py``.

The compiled reader is a fast path, never the judge: it accepts only what it is sure of
(canonical one-byte union markers, in-range int/long varints, non-negative lengths within the
payload, known enum indexes, block counts a real array can have, no NaN) and raises on anything else,
and the codec then decodes the same bytes with fastavro, which produces the value or the
typed ``PayloadError`` exactly as before. So a payload decodes to what fastavro returns, and a
corrupt one fails the way it always did (tests compare both on every schema, on the
simulator's stream and on hypothesis-generated and corrupted records). Schemas with a
construct the compiler does not know (bytes, fixed, maps, general unions, other logical
types) get no compiled reader and are decoded by fastavro only.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, SafeUUID

from atmpnet.contract.codegen import SourceCompiler, Unsupported

# (payload, start) -> (record, end)
RecordReader = Callable[[bytes, int], tuple[dict[str, Any], int]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # fastavro's epoch: same arithmetic, same tzinfo
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


class NotCanonical(Exception):
    """The bytes are not something the compiled reader accepts: decode them with fastavro."""


def _read_long(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of a multi-byte zigzag varint whose first byte ``first`` was read; (value, pos)."""
    n = first & 0x7F
    shift = 7
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:  # an 11th byte: not a long (fastavro decides what it is)
            raise NotCanonical("varint longer than 10 bytes")
    if n >> 64:
        raise NotCanonical("varint beyond 64 bits")
    return (n >> 1) ^ -(n & 1), pos


_new = object.__new__
_set = object.__setattr__


def _uuid(text: str) -> UUID:
    """``UUID(text)``, without its parsing for the canonical form.

    For 32 alphanumerics (no ``urn:``, ``uuid:`` or braces possible) after removing hyphens,
    ``UUID(text)`` is exactly ``int(hex, 16)``; anything else goes through ``UUID`` itself.
    """
    digits = text.replace("-", "")
    if len(digits) != 32 or not digits.isalnum():
        return UUID(text)
    value = _new(UUID)
    _set(value, "int", int(digits, 16))
    _set(value, "is_safe", SafeUUID.unknown)
    return value


# timestamps of nearby events repeat (window bounds, seconds): one datetime per 8-byte varint
_timestamps: dict[int, datetime] = {}
_unpack_u64 = struct.Struct("<Q").unpack_from
_VARINT8_MASK = 0x8080808080808080  # continuation bits of an 8-byte varint, read as one u64
_VARINT8 = 0x0080808080808080  # ... set on bytes 0-6, clear on byte 7 (every instant 1971-2540)


def _timestamp8(word: int) -> datetime:
    """The instant of an 8-byte timestamp-micros varint read as a little-endian u64 (cached)."""
    n = 0
    for i in range(8):
        n |= ((word >> (8 * i)) & 0x7F) << (7 * i)
    value = _EPOCH + timedelta(microseconds=(n >> 1) ^ -(n & 1))
    if len(_timestamps) >= 65_536:
        _timestamps.clear()
    _timestamps[word] = value
    return value


class _Compiler(SourceCompiler):
    """Generates the source of one reader function per writer schema."""

    def __init__(self) -> None:
        super().__init__(max_lines=20_000)

    def varint(self, target: str, indent: int) -> None:
        """Emit code reading a long into ``target`` (one-byte values inline)."""
        b = self.name("b")
        self.emit(indent, f"{b} = data[pos]")
        self.emit(indent, "pos += 1")
        self.emit(indent, f"if {b} < 128: {target} = ({b} >> 1) ^ -({b} & 1)")
        self.emit(indent, f"else: {target}, pos = read_long(data, pos, {b})")

    def value(self, schema: Any, target: str, indent: int) -> None:
        """Emit code reading one value of ``schema`` into the local ``target``."""
        if isinstance(schema, list):
            self.union(schema, target, indent)
            return
        schema = self.resolve(schema)
        kind = schema["type"]
        if isinstance(kind, dict | list):
            self.value(kind, target, indent)
            return
        self.declare(schema)
        if kind == "record":
            self.record(schema["fields"], target, indent)
        elif kind == "enum":
            table = self.name("symbols")
            self.consts[table] = tuple(schema["symbols"])
            index = self.name("e")
            self.varint(index, indent)
            self.emit(indent, f"if not 0 <= {index} < {len(schema['symbols'])}: raise NotCanonical('enum')")
            self.emit(indent, f"{target} = {table}[{index}]")
        elif kind == "array":
            self.array(schema["items"], target, indent)
        else:
            self.scalar(kind, schema.get("logicalType"), target, indent)

    def scalar(self, kind: str, logical: str | None, target: str, indent: int) -> None:
        """Emit code reading a primitive (with its logical type)."""
        if kind == "string":
            if logical not in (None, "uuid"):
                raise Unsupported(f"logical type {logical}")
            size, end = self.name("n"), self.name("end")
            self.varint(size, indent)
            self.emit(indent, f"{end} = pos + {size}")
            self.emit(indent, f"if {size} < 0 or {end} > len(data): raise NotCanonical('string length')")
            text = f"data[pos:{end}].decode()"
            self.emit(indent, f"{target} = {'uuid(' + text + ')' if logical == 'uuid' else text}")
            self.emit(indent, f"pos = {end}")
        elif kind in ("int", "long"):
            if logical == "timestamp-micros" and kind == "long":
                word, micros = self.name("w"), self.name("t")
                # a present-day instant is an 8-byte varint: one u64 read and a cache lookup
                self.emit(indent, f"{word} = unpack_u64(data, pos)[0]")
                self.emit(indent, f"if {word} & {_VARINT8_MASK:#x} == {_VARINT8:#x}:")
                self.emit(indent + 1, f"{target} = timestamps.get({word}) or timestamp8({word})")
                self.emit(indent + 1, "pos += 8")
                self.emit(indent, "else:")
                self.varint(micros, indent + 1)
                self.emit(indent + 1, f"{target} = EPOCH + timedelta(microseconds={micros})")
            elif logical is not None:
                raise Unsupported(f"logical type {logical}")
            else:
                self.varint(target, indent)
                if kind == "int":
                    self.emit(
                        indent, f"if not {_INT_MIN} <= {target} <= {_INT_MAX}: raise NotCanonical('int')"
                    )
        elif kind in ("double", "float"):
            unpack, width = ("unpack_double", 8) if kind == "double" else ("unpack_float", 4)
            self.emit(indent, f"{target} = {unpack}(data, pos)[0]")
            # NaN: fastavro may quiet a signalling NaN's bits; let it give its own NaN
            self.emit(indent, f"if {target} != {target}: raise NotCanonical('NaN')")
            self.emit(indent, f"pos += {width}")
        elif kind == "boolean":
            self.emit(indent, f"{target} = data[pos] != 0")
            self.emit(indent, "pos += 1")
        elif kind == "null":
            self.emit(indent, f"{target} = None")
        else:
            raise Unsupported(f"Avro type {kind}")

    def record(self, fields: list[dict[str, Any]], target: str, indent: int) -> None:
        """Fields in order into locals, then one dict display (fastavro's field order)."""
        if not fields:
            raise Unsupported("record without fields")
        names = []
        for field in fields:
            local = self.name("f")
            self.value(field["type"], local, indent)
            names.append((field["name"], local))
        items = ", ".join(f"{name!r}: {local}" for name, local in names)
        self.emit(indent, f"{target} = {{{items}}}")

    def array(self, items: Any, target: str, indent: int) -> None:
        """Blocks of items; only positive counts that fit in the rest of the payload."""
        item_schema = self.resolve(items)
        if isinstance(item_schema, dict) and item_schema.get("type") == "null":
            raise Unsupported("array of nulls (items of no size)")
        count, item = self.name("c"), self.name("item")
        self.emit(indent, f"{target} = []")
        self.emit(indent, "while True:")
        self.varint(count, indent + 1)
        self.emit(indent + 1, f"if {count} == 0: break")
        # every item takes at least one byte: a bigger count is corrupt (or a negative, sized block)
        self.emit(indent + 1, f"if not 0 < {count} <= len(data) - pos: raise NotCanonical('array block')")
        self.emit(indent + 1, f"for _ in range({count}):")
        self.value(items, item, indent + 2)
        self.emit(indent + 2, f"{target}.append({item})")

    def union(self, branches: list[Any], target: str, indent: int) -> None:
        """[null, T] in either order, by its one-byte marker (0 for branch 0, 2 for branch 1)."""
        if len(branches) != 2 or "null" not in branches:
            raise Unsupported("unions other than [null, T]")
        null_marker = branches.index("null") << 1
        other = branches[1 - branches.index("null")]
        marker = self.name("m")
        self.emit(indent, f"{marker} = data[pos]")
        self.emit(indent, "pos += 1")
        self.emit(indent, f"if {marker} == {null_marker}: {target} = None")
        self.emit(indent, f"elif {marker} == {2 - null_marker}:")
        self.value(other, target, indent + 1)
        self.emit(indent, "else: raise NotCanonical('union marker')")


def compile_reader(schema: dict[str, Any]) -> RecordReader:
    """A function reading a body of ``schema`` from ``(payload, start)``; raises Unsupported.

    It returns ``(record, end)`` and raises (any exception) on bytes it does not accept; the
    caller then decodes with fastavro. It does not check that ``end`` is the payload's end.
    """
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise Unsupported("not a record schema")
    compiler = _Compiler()
    compiler.emit(0, "def read(data, pos):")
    compiler.value(schema, "record", 1)
    compiler.emit(1, "return record, pos")
    namespace: dict[str, Any] = {
        "read_long": _read_long,
        "NotCanonical": NotCanonical,
        "uuid": _uuid,
        "unpack_u64": _unpack_u64,
        "timestamps": _timestamps,
        "timestamp8": _timestamp8,
        "EPOCH": _EPOCH,
        "timedelta": timedelta,
        "unpack_double": struct.Struct("<d").unpack_from,
        "unpack_float": struct.Struct("<f").unpack_from,
    }
    reader: RecordReader = compiler.build("read", f"<avro reader {schema.get('name')}>", namespace)
    return reader


def try_compile_reader(schema: Any) -> RecordReader | None:
    """The compiled reader of ``schema``, or None when it uses an unsupported construct."""
    try:
        return compile_reader(schema)
    except (Unsupported, KeyError, TypeError, AttributeError):  # odd schemas: fastavro handles them
        return None
