"""Sensor-summary Avro bodies for the simulator's hash chain, from its own fields, fast.

The chain needs every event's Avro body (``contract.chain``). Sensor summaries are 99% of a
run, and a lane repeats most of a summary window after window: its place (site, module, lane,
batch), its producer, the window, the parameter with its unit and its four limits. Those
groups of consecutive fields are encoded once, by the compiled writer of the schema's own
fields (``record_writer.compile_writer``), and reused; only the fields that change (event id,
times, sequence, previous hash, count, statistics, samples outside) are written per event.

The result must be byte for byte what the compiled writer writes for the whole event. The
schema's field order and the variable fields' types are checked when this is built (no fast
path if they differ: a later schema version falls back to the writer), the first summaries of
each run are compared with the writer (any difference turns the fast path off), and the tests
hash whole runs with the fastavro codec.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from atmpnet.contract.events import Event
from atmpnet.site.record_writer import _write_long, _write_timestamp, compile_writer

_PLACE = ("site_id", "module_id", "lane", "batch_id")
_PRODUCER = ("producer", "schema_version")
_WINDOW = ("window_start", "window_end")
_SPEC = ("parameter", "unit")
_STATS = ("min", "max", "mean", "stddev", "last")
_LIMITS = ("alert_low", "alert_high", "action_low", "action_high")
_OUTSIDE = ("samples_outside_alert", "samples_outside_action")
_TIMESTAMP = {"type": "long", "logicalType": "timestamp-micros"}
_NULLABLE_DOUBLE = ["null", "double"]
# the variable fields and the types this module writes them as, in schema order
_ENVELOPE_LAYOUT: tuple[tuple[str, Any], ...] = (
    ("event_id", {"type": "string", "logicalType": "uuid"}),
    *((name, None) for name in _PLACE),
    ("occurred_at", _TIMESTAMP),
    ("published_at", _TIMESTAMP),
    ("sequence", "long"),
    ("previous_hash", ["null", "string"]),
    *((name, None) for name in _PRODUCER),
)
_BODY_LAYOUT: tuple[tuple[str, Any], ...] = (
    ("envelope", None),
    ("window_start", _TIMESTAMP),
    ("window_end", _TIMESTAMP),
    *((name, None) for name in _SPEC),
    ("count", "long"),
    *((name, _NULLABLE_DOUBLE) for name in _STATS),
    *((name, None) for name in _LIMITS),
    *((name, "long") for name in _OUTSIDE),
)
_pack_stats = struct.Struct("<" + "Bd" * len(_STATS)).pack
_pack_double = struct.Struct("<d").pack
_DOUBLE_BRANCH = 2  # zigzag of union index 1: the double branch of ["null", "double"]
_PROBE = 64  # summaries compared with the writer at the start of each run


def _small_long(out: bytearray, n: int) -> None:
    """A long that is nearly always in 0..63 (one byte), the general way otherwise."""
    if 0 <= n < 64:
        out.append(n << 1)
    else:
        _write_long(out, n)


def _layout_matches(fields: list[dict[str, Any]], layout: tuple[tuple[str, Any], ...]) -> bool:
    if [f["name"] for f in fields] != [name for name, _ in layout]:
        return False
    return all(kind is None or f["type"] == kind for f, (_, kind) in zip(fields, layout, strict=True))


class SensorBodies:
    """Builds sensor-summary bodies from the simulator's envelope and body dicts."""

    def __init__(self, schema: dict[str, Any], writer: Callable[[Event], bytes]) -> None:
        """``schema``: the sensor summary's writer schema; ``writer``: its body writer (the reference)."""
        self._writer = writer
        fields = schema["fields"]
        envelope = fields[0]["type"] if fields and isinstance(fields[0]["type"], dict) else {"fields": []}
        self.enabled = _layout_matches(envelope["fields"], _ENVELOPE_LAYOUT) and _layout_matches(
            fields, _BODY_LAYOUT
        )
        self._probed = 0
        if not self.enabled:
            return
        env_fields = envelope["fields"]
        self._place = self._segment(env_fields, _PLACE)
        self._producer = self._segment(env_fields, _PRODUCER)
        self._window = self._segment(fields, _WINDOW)
        self._spec = self._segment(fields, _SPEC)
        self._limits = self._segment(fields, _LIMITS)
        self._places: dict[tuple[Any, ...], bytes] = {}
        self._producers: dict[int, tuple[Any, int, bytes]] = {}  # by id(); the object is kept alive
        self._specs: dict[tuple[Any, ...], bytes] = {}
        self._limit_sets: dict[tuple[Any, ...], bytes] = {}
        self._window_key: tuple[Any, ...] | None = None
        self._window_bytes = b""

    @staticmethod
    def _segment(fields: list[dict[str, Any]], names: tuple[str, ...]) -> Callable[..., bytes]:
        """A writer of the consecutive fields ``names``, called with them as keyword arguments."""
        record = {
            "type": "record",
            "name": "atmp.Segment",
            "fields": [f for f in fields if f["name"] in names],
        }
        write = compile_writer(record, b"")
        return lambda **values: write(SimpleNamespace(**values))  # type: ignore[arg-type]

    def body(self, env: dict[str, Any], body: dict[str, Any], event: Event) -> bytes:
        """The Avro body of ``event``, a sensor summary assembled from ``env`` and ``body``."""
        if not self.enabled:
            return self._writer(event)
        out = bytearray(b"\x48")  # a UUID string is 36 bytes: zigzag 72
        out += str(env["event_id"]).encode()
        self._envelope_rest(out, env)
        self._summary(out, body)
        result = bytes(out)
        if self._probed < _PROBE:
            self._probed += 1
            reference = self._writer(event)
            if reference != result:  # pragma: no cover - a schema this module does not know
                self.enabled = False
                return reference
        return result

    def _envelope_rest(self, out: bytearray, env: dict[str, Any]) -> None:
        key = (env["site_id"], env["module_id"], env["lane"], env["batch_id"])
        place = self._places.get(key)
        if place is None:
            place = self._places[key] = self._place(**dict(zip(_PLACE, key, strict=True)))
        out += place
        _write_timestamp(out, env["occurred_at"])
        _write_timestamp(out, env["published_at"])
        _write_long(out, env["sequence"])
        previous = env["previous_hash"]
        if previous is None:
            out.append(0)
        else:
            encoded = previous.encode()
            if len(encoded) == 64:  # a SHA-256 hex digest, always: union branch 1, length 64
                out += b"\x02\x80\x01"
            else:
                out.append(2)
                _write_long(out, len(encoded))
            out += encoded
        producer, version = env["producer"], env["schema_version"]
        known = self._producers.get(id(producer))
        if known is None or known[0] is not producer or known[1] != version:
            known = (producer, version, self._producer(producer=producer, schema_version=version))
            self._producers[id(producer)] = known
        out += known[2]

    def _summary(self, out: bytearray, body: dict[str, Any]) -> None:
        window = (body["window_start"], body["window_end"])
        if window != self._window_key:  # windows come in order: one at a time
            self._window_key = window
            self._window_bytes = self._window(window_start=window[0], window_end=window[1])
        out += self._window_bytes
        spec_key = (body["parameter"], body["unit"])
        spec = self._specs.get(spec_key)
        if spec is None:
            spec = self._specs[spec_key] = self._spec(parameter=spec_key[0], unit=spec_key[1])
        out += spec
        _small_long(out, body["count"])
        stats = (body["min"], body["max"], body["mean"], body["stddev"], body["last"])
        if None in stats:
            for value in stats:
                if value is None:
                    out.append(0)
                else:
                    out.append(_DOUBLE_BRANCH)
                    out += _pack_double(value)
        else:
            b = _DOUBLE_BRANCH
            out += _pack_stats(b, stats[0], b, stats[1], b, stats[2], b, stats[3], b, stats[4])
        key = (body["alert_low"], body["alert_high"], body["action_low"], body["action_high"])
        limits = self._limit_sets.get(key)
        if limits is None:
            limits = self._limit_sets[key] = self._limits(**dict(zip(_LIMITS, key, strict=True)))
        out += limits
        _small_long(out, body["samples_outside_alert"])
        _small_long(out, body["samples_outside_action"])
