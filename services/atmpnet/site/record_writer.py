"""Compiled Avro writers: event model -> Confluent wire-format bytes, for the publisher's hot path.

``AvroCodec.encode`` dumps the model to a dict (pydantic) and hands it to fastavro, which walks
the schema and resolves every nullable union by trying each branch. Both cost more than the
rest of publishing together. Here each subject's writer schema is compiled once into a Python
function that reads the model's attributes in schema order and appends Avro bytes to a
bytearray: no intermediate dict, no schema walk, unions decided by ``is None``.

The output is byte-for-byte what fastavro writes (tests compare them on every event type and
on the simulator's stream). Schemas using a construct this compiler does not know (fixed,
bytes, maps, general unions, other logical types) get no compiled writer, and the publisher
falls back to the codec.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from atmpnet.contract.codec import HEADER, MAGIC_BYTE, AvroCodec
from atmpnet.contract.codegen import SourceCompiler, Unsupported
from atmpnet.contract.events import Event
from atmpnet.errors import EncodingError

# Unsupported (from codegen) is part of this module's interface: callers catch it from here
__all__ = ["EventEncoder", "EventWriter", "Unsupported", "compile_writer"]

EventWriter = Callable[[Event], bytes]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _write_long(out: bytearray, n: int) -> None:
    """Zigzag varint, as Avro writes int and long; a value outside the long range is refused."""
    n = (n << 1) ^ (n >> 63)
    if n >> 64:  # outside [-2**63, 2**63): the bytes would decode as another number (fastavro raises too)
        raise OverflowError(f"{n} is outside the Avro long range")
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


_pack_u32 = struct.Struct("<I").pack
_high_bytes: dict[int, bytes] = {}


def _varint_bytes(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _write_timestamp(out: bytearray, value: datetime) -> None:
    """timestamp-micros as a zigzag varint, without a per-byte loop for present-day values.

    Any instant after 1970-01-02 has its zigzag value above 2**28: its low four 7-bit groups
    (each with the continuation bit) are packed at once; the varint of the rest changes only
    every couple of minutes, so it is looked up.
    """
    delta = value - _EPOCH  # fastavro's exact arithmetic for aware datetimes, no float rounding
    z = ((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds) << 1
    if z < 0x10000000:  # before 1970-01-02 (negative instants included): the plain way
        _write_long(out, z >> 1)
        return
    out += _pack_u32(
        (z & 0x7F) | ((z << 1) & 0x7F00) | ((z << 2) & 0x7F0000) | ((z << 3) & 0x7F000000) | 0x80808080
    )
    high = z >> 28
    tail = _high_bytes.get(high)
    if tail is None:
        if len(_high_bytes) > 65_536:
            _high_bytes.clear()
        tail = _high_bytes[high] = _varint_bytes(high)
    out += tail


class _Compiler(SourceCompiler):
    """Generates the source of one writer function per subject."""

    def __init__(self) -> None:
        super().__init__(max_lines=10_000)

    def value(self, schema: Any, expr: str, indent: int) -> None:
        """Emit code writing ``expr`` (a Python expression, evaluated once) as ``schema``."""
        if isinstance(schema, list):
            self.union(schema, expr, indent)
            return
        schema = self.resolve(schema)  # a name defined earlier in the schema, else a primitive
        kind = schema["type"]
        self.declare(schema)
        logical = schema.get("logicalType")
        if isinstance(kind, dict | list):
            self.value(kind, expr, indent)
            return
        if kind == "record":
            self.record(schema["fields"], expr, indent)
        elif kind == "enum":
            if len(schema["symbols"]) >= 64:
                raise Unsupported("enum of 64 or more symbols")
            table = self.name("enum")
            # the zigzag varint of each index, one byte each under 64 symbols
            self.consts[table] = {s: bytes([i << 1]) for i, s in enumerate(schema["symbols"])}
            self.emit(indent, f"out += {table}[{expr}]")
        elif kind == "array":
            var, item = self.name("a"), self.name("i")
            # len() first: a missing (None) array is an error, as in fastavro, not an empty one
            self.emit(indent, f"{var} = {expr}")
            self.emit(indent, f"if len({var}):")
            self.emit(indent + 1, f"write_long(out, len({var}))")
            self.emit(indent + 1, f"for {item} in {var}:")
            self.value(schema["items"], item, indent + 2)
            self.emit(indent, "out.append(0)")
        else:
            self.scalar(kind, logical, expr, indent)

    def scalar(self, kind: str, logical: str | None, expr: str, indent: int) -> None:
        """Emit code writing a primitive (with its logical type)."""
        if kind == "string":
            var = self.name("s")
            text = f"str({expr})" if logical == "uuid" else expr
            self.emit(indent, f"{var} = {text}.encode()")
            self.emit(indent, f"if len({var}) < 64: out.append(len({var}) << 1)")
            self.emit(indent, f"else: write_long(out, len({var}))")
            self.emit(indent, f"out += {var}")
        elif kind in ("int", "long"):
            if logical == "timestamp-micros":
                self.emit(indent, f"write_timestamp(out, {expr})")
            elif logical is not None:
                raise Unsupported(f"logical type {logical}")
            else:
                var = self.name("n")
                self.emit(indent, f"{var} = {expr}")
                self.emit(indent, f"if 0 <= {var} < 64: out.append({var} << 1)")
                self.emit(indent, f"else: write_long(out, {var})")
        elif kind == "double":
            self.emit(indent, f"out += pack_double({expr})")
        elif kind == "float":
            self.emit(indent, f"out += pack_float({expr})")
        elif kind == "boolean":
            self.emit(indent, f"out.append(1 if {expr} else 0)")
        elif kind != "null":
            raise Unsupported(f"Avro type {kind}")

    def record(self, fields: list[dict[str, Any]], expr: str, indent: int) -> None:
        """Fields in order; runs of (nullable) doubles are packed by one struct call when all are set."""
        var = self.name("r")
        self.emit(indent, f"{var} = {expr}")
        run: list[tuple[dict[str, Any], int | None]] = []
        for field in [*fields, None]:
            marker = _double_marker(field["type"]) if field is not None else False
            if field is not None and marker is not False:
                run.append((field, marker))
                continue
            if len(run) >= 2:
                self.double_run(run, var, indent)
            else:
                for done, _ in run:
                    self.value(done["type"], f"{var}.{done['name']}", indent)
            run = []
            if field is not None:
                self.value(field["type"], f"{var}.{field['name']}", indent)

    def double_run(self, run: list[tuple[dict[str, Any], int | None]], var: str, indent: int) -> None:
        names = [self.name("d") for _ in run]
        for name, (field, _) in zip(names, run, strict=True):
            self.emit(indent, f"{name} = {var}.{field['name']}")
        nullable = [name for name, (_, marker) in zip(names, run, strict=True) if marker is not None]
        pack = self.name("pack")
        self.consts[pack] = struct.Struct("<" + "".join("d" if m is None else "Bd" for _, m in run)).pack
        args = [name if m is None else f"{m}, {name}" for name, (_, m) in zip(names, run, strict=True)]
        condition = " and ".join(f"{n} is not None" for n in nullable) or "True"
        self.emit(indent, f"if {condition}:")
        self.emit(indent + 1, f"out += {pack}({', '.join(args)})")
        self.emit(indent, "else:")
        for name, (field, _) in zip(names, run, strict=True):
            self.value(field["type"], name, indent + 1)

    def union(self, branches: list[Any], expr: str, indent: int) -> None:
        if len(branches) != 2 or "null" not in branches:
            raise Unsupported("unions other than [null, T]")
        null_index = branches.index("null")
        other = branches[1 - null_index]
        var = self.name("u")
        self.emit(indent, f"{var} = {expr}")
        self.emit(indent, f"if {var} is None: out.append({null_index << 1})")
        self.emit(indent, "else:")
        self.emit(indent + 1, f"out.append({(1 - null_index) << 1})")
        self.value(other, var, indent + 1)


def _double_marker(schema: Any) -> int | bool | None:
    """None for a double, the branch marker byte for a [null, double] union, False otherwise."""
    if schema in ("double", {"type": "double"}):
        return None
    if isinstance(schema, list) and len(schema) == 2 and "null" in schema and "double" in schema:
        return schema.index("double") << 1
    return False


def compile_writer(schema: dict[str, Any], header: bytes) -> EventWriter:
    """A function writing a model of ``schema`` as ``header`` + Avro body; raises Unsupported."""
    compiler = _Compiler()
    compiler.emit(0, "def write(event):")
    compiler.emit(1, "out = bytearray(header)")
    compiler.value(schema, "event", 1)
    compiler.emit(1, "return bytes(out)")
    namespace: dict[str, Any] = {
        "header": header,
        "write_long": _write_long,
        "write_timestamp": _write_timestamp,
        "pack_double": struct.Struct("<d").pack,
        "pack_float": struct.Struct("<f").pack,
    }
    writer: EventWriter = compiler.build("write", f"<avro writer {schema.get('name')}>", namespace)
    return writer


class EventEncoder:
    """Wire-format encoding with a compiled writer per event type, the codec where there is none."""

    def __init__(self, codec: AvroCodec) -> None:
        self._codec = codec
        self._writers: dict[type[Event], EventWriter] = {}

    def writer(self, event_type: type[Event]) -> EventWriter:
        """The encoding function for ``event_type`` (compiled on first use)."""
        writer = self._writers.get(event_type)
        if writer is None:
            subject = event_type.subject()
            header = HEADER.pack(MAGIC_BYTE, self._codec.source.writer_id(subject))
            try:
                writer = _guarded(compile_writer(self._codec.catalog.latest(subject).schema, header), subject)
            except Unsupported:
                writer = self._codec.encode
            self._writers[event_type] = writer
        return writer

    def encode(self, event: Event) -> bytes:
        """The event as wire-format bytes."""
        return self.writer(type(event))(event)


def _guarded(write: EventWriter, subject: str) -> EventWriter:
    def encode(event: Event) -> bytes:
        try:
            return write(event)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError, struct.error) as exc:
            raise EncodingError(f"cannot encode a {subject} record: {exc}") from exc

    return encode
