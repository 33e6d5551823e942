"""The contract's rules checked straight on a decoded Avro record: the ingest's validation fast path.

pydantic's ``model_validate`` costs about as much as decoding: it rebuilds three models, calls
Python validators per field and runs the cross-field rules. Sensor summaries are ~99.9% of
the stream, so for them this module checks the same rules on the decoded dict (types, ranges,
patterns, lengths, required context, cross-field consistency) without building a model.

It is a fast path, never the judge: ``valid(record)`` is True only when pydantic would accept
the record unchanged (the values it would store equal the dict's: UTC datetimes, plain
strings and numbers); on False the ingest validates with pydantic as before, which accepts the
record or names each failing field. Tests prove "fast path says valid => the model accepts"
on the simulator's stream and on hypothesis-generated invalid records, and that the rows are
equal. Only sensor summaries have a fast path; the rare families go through pydantic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from atmpnet.contract.events import Envelope, Event, Producer, ProducerKind, SensorSummary

_LONG_MAX = 2**63 - 1
_INT_MAX = 2**31 - 1
# the models' patterns (pydantic matches the whole string: Rust regex ^...$ has no trailing-newline slack)
_slug = re.compile(r"[a-z0-9][a-z0-9-]{0,62}").fullmatch
_sha256_hex = re.compile(r"[0-9a-f]{64}").fullmatch
_parameter = re.compile(r"[a-z][a-z0-9_]{0,63}").fullmatch
_isfinite = math.isfinite

_ENVELOPE_KEYS = frozenset(Envelope.model_fields)
_PRODUCER_KEYS = frozenset(Producer.model_fields)
_PRODUCER_KINDS = frozenset(k.value for k in ProducerKind)
_SENSOR_KEYS = frozenset(SensorSummary.model_fields)
_SENSOR_STATS = ("min", "max", "mean", "stddev", "last")
_SENSOR_LIMITS = ("alert_low", "alert_high", "action_low", "action_high")


def _ident(value: Any) -> bool:
    return type(value) is str and 1 <= len(value) <= 128


def _optional_ident(value: Any) -> bool:
    return value is None or (type(value) is str and 1 <= len(value) <= 128)


def _instant(value: Any) -> bool:
    # UTC already: pydantic's AfterValidator(astimezone(UTC)) then stores an equal value
    return type(value) is datetime and value.tzinfo is UTC


def _finite(value: Any) -> bool:
    return value is None or (type(value) is float and _isfinite(value))


def _envelope_valid(env: Any, required: tuple[str, ...]) -> bool:
    """The Envelope model's rules, plus the event type's required context."""
    if type(env) is not dict or env.keys() != _ENVELOPE_KEYS:
        return False
    for name in required:
        if env[name] is None:
            return False
    site, lane, sequence, version = env["site_id"], env["lane"], env["sequence"], env["schema_version"]
    if type(env["event_id"]) is not UUID:
        return False
    if site is not None and not (type(site) is str and _slug(site)):
        return False
    if not (_optional_ident(env["module_id"]) and _optional_ident(env["batch_id"])):
        return False
    if lane is not None and not (type(lane) is int and 1 <= lane <= 1024):
        return False
    if not (_instant(env["occurred_at"]) and _instant(env["published_at"])):
        return False
    if not (type(sequence) is int and 1 <= sequence <= _LONG_MAX):
        return False
    previous = env["previous_hash"]
    if previous is not None and not (type(previous) is str and _sha256_hex(previous)):
        return False
    if not (type(version) is int and 1 <= version <= _INT_MAX):
        return False
    producer = env["producer"]
    return (
        type(producer) is dict
        and producer.keys() == _PRODUCER_KEYS
        and type(producer["kind"]) is str
        and producer["kind"] in _PRODUCER_KINDS
        and _ident(producer["id"])
        and (producer["software_version"] is None or type(producer["software_version"]) is str)
    )


def sensor_summary_valid(record: dict[str, Any]) -> bool:  # noqa: PLR0912 - one rule per line
    """True when ``SensorSummary.model_validate(record)`` accepts the record as it is."""
    if record.keys() != _SENSOR_KEYS or not _envelope_valid(
        record["envelope"], SensorSummary.REQUIRED_CONTEXT
    ):
        return False
    start, end = record["window_start"], record["window_end"]
    if not (_instant(start) and _instant(end) and end > start):
        return False
    parameter, unit, count = record["parameter"], record["unit"], record["count"]
    if not (type(parameter) is str and _parameter(parameter)):
        return False
    if not (type(unit) is str and 1 <= len(unit) <= 32):
        return False
    if not (type(count) is int and 0 <= count <= _LONG_MAX):
        return False
    outside_alert, outside_action = record["samples_outside_alert"], record["samples_outside_action"]
    if not (type(outside_alert) is int and 0 <= outside_alert <= count):
        return False
    if not (type(outside_action) is int and 0 <= outside_action <= outside_alert):
        return False
    for name in _SENSOR_STATS:
        value = record[name]
        if not _finite(value) or (value is None) != (count == 0):
            return False
    for name in _SENSOR_LIMITS:
        if not _finite(record[name]):
            return False
    stddev = record["stddev"]
    if stddev is not None and stddev < 0:
        return False
    low, high = record["min"], record["max"]
    if low is not None and high is not None:
        slack = 1e-9 * max(1.0, abs(low), abs(high))
        for name in ("mean", "last"):
            if not low - slack <= record[name] <= high + slack:
                return False
    for low_name, high_name in (("alert_low", "alert_high"), ("action_low", "action_high")):
        low, high = record[low_name], record[high_name]
        if low is not None and high is not None and low > high:
            return False
    return True


def _sensor_summary_key(record: dict[str, Any]) -> str:
    env = record["envelope"]
    return f"{env['module_id']}/{env['lane']}"  # SensorSummary.partition_key


@dataclass(frozen=True)
class RecordRules:
    """One family's fast path: the validity check and the partition key, both on the record."""

    valid: Callable[[dict[str, Any]], bool]
    partition_key: Callable[[dict[str, Any]], str]


FAST_RULES: dict[type[Event], RecordRules] = {
    SensorSummary: RecordRules(sensor_summary_valid, _sensor_summary_key),
}
