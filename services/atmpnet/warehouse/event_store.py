"""The event store: events as rows of one table per family, written in batches, read with FINAL.

Tables come from ``migrations/0001_event_store.sql``. A replayed event collapses with its
earlier copy (ReplacingMergeTree sorted by ``(site_id, event_id)``), so every read here uses
FINAL: a query sees exactly one row per event id whether or not a merge has happened yet.
The engine keeps the copy inserted last, so the ingest never inserts an event id that is
already stored (``stored_copies``; a copy with other content is a dead letter): the first
stored copy is the one that stays.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from clickhouse_connect.driver.client import Client

from atmpnet.contract.events import (
    EVENT_TYPES,
    BatchStep,
    Component,
    Deviation,
    Event,
    ModuleConfiguration,
    SensorSummary,
    ValidatedBaseline,
    parse_event,
)
from atmpnet.errors import WarehouseError

TABLES: dict[type[Event], str] = {
    BatchStep: "batch_steps",
    SensorSummary: "sensor_summaries",
    Deviation: "deviations",
    ModuleConfiguration: "module_configs",
    ValidatedBaseline: "baselines",
}

COMMON_COLUMNS: tuple[str, ...] = (
    "event_id",
    "site_id",
    "module_id",
    "lane",
    "batch_id",
    "occurred_at",
    "published_at",
    "sequence",
    "previous_hash",  # migration 0003 (envelope v2, issue 7)
    "producer_kind",
    "producer_id",
    "producer_software_version",
    "schema_version",
    "schema_id",
    "topic",
    "partition",
    "offset",
    "ingested_at",
    "traceparent",
    "raw",
)


class StoredEvent:
    """An event with where it was read from: what one event-store row holds.

    The ingest's fast path (streams/record_rules.py) keeps a sensor summary as its validated
    Avro record and builds the model only when something reads ``event`` (the hooks of
    ``atmpnet process`` do not): the row is made from the record.
    """

    __slots__ = (
        "_event",
        "event_type",
        "offset",
        "partition",
        "raw",
        "record",
        "schema_id",
        "topic",
        "traceparent",
    )

    def __init__(
        self,
        event: Event | None,
        schema_id: int,
        topic: str,
        partition: int,
        offset: int,
        raw: bytes,
        traceparent: str | None = None,
        *,
        record: dict[str, Any] | None = None,
        event_type: type[Event] | None = None,
    ) -> None:
        if event is None and (record is None or event_type is None):
            raise ValueError("a stored event needs the event, or its validated record and type")
        self._event = event
        self.event_type: type[Event] = type(event) if event is not None else event_type  # type: ignore[assignment]
        self.record = record
        self.schema_id = schema_id
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.raw = raw
        self.traceparent = traceparent

    @property
    def event(self) -> Event:
        """The event model (built from the validated record on first use)."""
        if self._event is None:
            assert self.record is not None
            self._event = parse_event(self.event_type, self.record)
        return self._event

    @property
    def event_id(self) -> UUID:
        """The envelope's event id, without building the model."""
        if self._event is None:
            assert self.record is not None
            event_id: UUID = self.record["envelope"]["event_id"]
            return event_id
        return self._event.envelope.event_id

    @property
    def site_id(self) -> str:
        """The envelope's site id as the table's sorting key holds it (``''`` when none)."""
        if self._event is None:
            assert self.record is not None
            site_id: str | None = self.record["envelope"]["site_id"]
            return site_id or ""
        return self._event.envelope.site_id or ""

    def __repr__(self) -> str:
        where = f"{self.topic}[{self.partition}]:{self.offset}"
        return f"StoredEvent({self.event_type.__name__} {self.event_id} @ {where})"


def _batch_step(e: Any) -> list[Any]:
    r = e.results
    return [
        e.transition.value,
        e.step.value,
        e.product_code,
        e.attempt,
        e.expected_duration_minutes,
        None if r is None else r.viable_cell_count,
        None if r is None else r.viability_percent,
        None if r is None else r.volume_ml,
        e.failure_reason,
        e.performed_by,
    ]


def _sensor_summary(e: Any) -> list[Any]:
    return [
        e.window_start,
        e.window_end,
        e.parameter,
        e.unit,
        e.count,
        e.min,
        e.max,
        e.mean,
        e.stddev,
        e.last,
        e.alert_low,
        e.alert_high,
        e.action_low,
        e.action_high,
        e.samples_outside_alert,
        e.samples_outside_action,
    ]


def _deviation(e: Any) -> list[Any]:
    return [
        e.deviation_id,
        e.transition.value,
        None if e.step is None else e.step.value,
        e.parameter,
        e.observed_value,
        e.unit,
        e.limit_low,
        e.limit_high,
        e.duration_seconds,
        e.detection_source.value,
        e.raised_by,
        e.alarm_code,
        e.description,
        e.resolution,
    ]


def _components(components: Sequence[Component]) -> list[list[str]]:
    return [
        [c.kind.value for c in components],
        [c.name for c in components],
        [c.version for c in components],
        [c.content_hash for c in components],
    ]


def _module_config(e: Any) -> list[Any]:
    return [e.module_type, e.serial_number, e.lanes, *_components(e.components), e.change_reason]


def _baseline(e: Any) -> list[Any]:
    return [
        e.baseline_id,
        e.module_type,
        *_components(e.components),
        e.approved_by,
        e.approved_at,
        e.effective_from,
        e.change_reference,
    ]


_COMPONENT_COLUMNS = ("components_kind", "components_name", "components_version", "components_content_hash")

# each family: its own columns (after the common ones) and the function giving their values
FAMILY_COLUMNS: dict[type[Event], tuple[tuple[str, ...], Callable[[Any], list[Any]]]] = {
    BatchStep: (
        (
            "transition",
            "step",
            "product_code",
            "attempt",
            "expected_duration_minutes",
            "results_viable_cell_count",
            "results_viability_percent",
            "results_volume_ml",
            "failure_reason",
            "performed_by",
        ),
        _batch_step,
    ),
    SensorSummary: (
        (
            "window_start",
            "window_end",
            "parameter",
            "unit",
            "count",
            "min",
            "max",
            "mean",
            "stddev",
            "last",
            "alert_low",
            "alert_high",
            "action_low",
            "action_high",
            "samples_outside_alert",
            "samples_outside_action",
        ),
        _sensor_summary,
    ),
    Deviation: (
        (
            "deviation_id",
            "transition",
            "step",
            "parameter",
            "observed_value",
            "unit",
            "limit_low",
            "limit_high",
            "duration_seconds",
            "detection_source",
            "raised_by",
            "alarm_code",
            "description",
            "resolution",
        ),
        _deviation,
    ),
    ModuleConfiguration: (
        ("module_type", "serial_number", "lanes", *_COMPONENT_COLUMNS, "change_reason"),
        _module_config,
    ),
    ValidatedBaseline: (
        (
            "baseline_id",
            "module_type",
            *_COMPONENT_COLUMNS,
            "approved_by",
            "approved_at",
            "effective_from",
            "change_reference",
        ),
        _baseline,
    ),
}


def column_names(event_type: type[Event]) -> tuple[str, ...]:
    """Every column of the family's table, in insert order."""
    return COMMON_COLUMNS + FAMILY_COLUMNS[event_type][0]


def _sensor_summary_record_row(stored: StoredEvent, ingested_at: datetime) -> list[Any]:
    """``event_row`` of a sensor summary from its validated record (tests prove them equal)."""
    r = stored.record
    assert r is not None
    env = r["envelope"]
    producer = env["producer"]
    return [
        env["event_id"],
        env["site_id"] or "",
        env["module_id"],
        env["lane"],
        env["batch_id"],
        env["occurred_at"],
        env["published_at"],
        env["sequence"],
        env["previous_hash"],
        producer["kind"],
        producer["id"],
        producer["software_version"],
        env["schema_version"],
        stored.schema_id,
        stored.topic,
        stored.partition,
        stored.offset,
        ingested_at,
        stored.traceparent,
        stored.raw,
        r["window_start"],
        r["window_end"],
        r["parameter"],
        r["unit"],
        r["count"],
        r["min"],
        r["max"],
        r["mean"],
        r["stddev"],
        r["last"],
        r["alert_low"],
        r["alert_high"],
        r["action_low"],
        r["action_high"],
        r["samples_outside_alert"],
        r["samples_outside_action"],
    ]


# rows straight from validated records (families with a fast path in streams/record_rules.py)
RECORD_ROWS: dict[type[Event], Callable[[StoredEvent, datetime], list[Any]]] = {
    SensorSummary: _sensor_summary_record_row,
}


def event_row(stored: StoredEvent, ingested_at: datetime) -> list[Any]:
    """The row of one stored event, in ``column_names`` order."""
    if stored.record is not None and stored.event_type in RECORD_ROWS:  # kept by the fast path
        return RECORD_ROWS[stored.event_type](stored, ingested_at)
    event = stored.event
    env = event.envelope
    producer = env.producer
    return [
        env.event_id,
        env.site_id or "",
        env.module_id,
        env.lane,
        env.batch_id,
        env.occurred_at,
        env.published_at,
        env.sequence,
        env.previous_hash,
        producer.kind.value,
        producer.id,
        producer.software_version,
        env.schema_version,
        stored.schema_id,
        stored.topic,
        stored.partition,
        stored.offset,
        ingested_at,
        stored.traceparent,
        stored.raw,
        *FAMILY_COLUMNS[type(event)][1](event),
    ]


def insert_events(client: Client, events: dict[type[Event], list[StoredEvent]], ingested_at: datetime) -> int:
    """Insert each family's events in one statement per table; return the rows written.

    A re-inserted event id collapses with its earlier row (reads use FINAL), but the engine
    keeps the row inserted last: the ingest inserts only ids not stored yet (``stored_copies``).
    """
    written = 0
    for event_type, stored in events.items():
        if not stored:
            continue
        names = column_names(event_type)
        columns = [list(c) for c in zip(*(event_row(s, ingested_at) for s in stored), strict=True)]
        try:
            # DateTime64(6) columns as integer microseconds: clickhouse-connect writes ints as they
            # are instead of converting each datetime through timestamp() (~1.3x faster inserts)
            for i, name in enumerate(names):
                if name in _INSTANT_COLUMNS:
                    columns[i] = [(value - _EPOCH) // _MICROSECOND for value in columns[i]]
            client.insert(
                TABLES[event_type],
                columns,
                column_names=list(names),
                column_oriented=True,
                # the batch has no duplicate ids (the core dropped them) and reads use FINAL, so
                # collapsing the block at insert time is work for nothing (~15% of the insert)
                settings={"optimize_on_insert": 0},
            )
        except Exception as exc:  # clickhouse-connect raises several unrelated types
            raise WarehouseError(
                f"cannot insert {len(stored)} rows into {TABLES[event_type]}: {exc}"
            ) from exc
        written += len(stored)
    return written


# the event store's DateTime64(6, 'UTC') columns (never null: models require them, aware UTC)
_INSTANT_COLUMNS = frozenset(
    {
        "occurred_at",
        "published_at",
        "ingested_at",
        "window_start",
        "window_end",
        "approved_at",
        "effective_from",
    }
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def count_events(client: Client, event_type: type[Event] | None = None) -> int:
    """Distinct events stored (one family, or all)."""
    types = [event_type] if event_type else list(EVENT_TYPES)
    return sum(
        int(client.query(f"SELECT count() FROM {TABLES[t]} FINAL").result_rows[0][0])  # noqa: S608
        for t in types
    )


def event_ids(client: Client, event_type: type[Event] | None = None) -> list[UUID]:
    """Every stored event id (one family, or all), as the queries see them."""
    types = [event_type] if event_type else list(EVENT_TYPES)
    out: list[UUID] = []
    for t in types:
        query = f"SELECT event_id FROM {TABLES[t]} FINAL"  # noqa: S608 - table names are constants
        out.extend(r[0] for r in client.query(query).result_rows)
    return out


def raw_events(client: Client, ids: Iterable[UUID]) -> dict[UUID, tuple[type[Event], bytes]]:
    """The original record bytes of the given event ids that are stored, with their family."""
    wanted = list(ids)
    found: dict[UUID, tuple[type[Event], bytes]] = {}
    if not wanted:
        return found
    for t, table in TABLES.items():
        result = client.query(
            f"SELECT event_id, raw FROM {table} FINAL WHERE event_id IN %(ids)s",  # noqa: S608
            parameters={"ids": wanted},
            column_formats={"raw": "bytes"},
        )
        for event_id, raw in result.result_rows:
            found[event_id] = (t, raw)
    return found


@dataclass(frozen=True, slots=True)
class StoredCopy:
    """The stored row of an event id: its original bytes and where they were read from."""

    event_id: UUID
    raw: bytes
    topic: str
    partition: int
    offset: int

    @property
    def source(self) -> str:
        """``topic[partition]@offset`` of the record the row was made from."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


def stored_copies(
    client: Client, event_type: type[Event], ids: Collection[UUID], sites: Collection[str]
) -> dict[UUID, StoredCopy]:
    """The rows already stored for any of ``ids`` in the family's table, as queries see them.

    ``sites`` (the events' site ids, ``''`` for none) narrows the search to the sorting key's
    ranges of those sites; ids of other sites are not found. Two steps, because a batch's ids
    are nearly always new: which ids are stored (reads ``site_id`` and ``event_id`` only, no
    FINAL), then, for those few, the row every read sees (FINAL) with its bytes and source.
    """
    found: dict[UUID, StoredCopy] = {}
    if not ids:
        return found
    table = TABLES[event_type]
    # the ids as one hex string split in the query: clickhouse-connect's binding formats each UUID
    # through several calls, and ClickHouse parses 20k literals slowly (measured 8-16 us per id
    # as a literal list, 2.6-4.6 us like this); a hex string cannot inject anything
    hexes = b"".join([u.bytes for u in ids]).hex()
    split = f"arrayJoin(arrayMap(i -> toUUID(substring(h, i * 32 + 1, 32)), range({len(ids)})))"
    wanted = f"(SELECT {split} FROM (SELECT '{hexes}' AS h))"  # noqa: S608 - a count and hex digits
    try:
        present = client.query(
            f"SELECT DISTINCT event_id FROM {table} "  # noqa: S608 - constants and a hex string
            f"WHERE site_id IN %(sites)s AND event_id IN {wanted}",
            parameters={"sites": list(sites)},
            settings={"max_query_size": len(hexes) + 65536},
        ).result_rows
        if not present:
            return found
        result = client.query(
            f"SELECT event_id, raw, topic, `partition`, `offset` FROM {table} FINAL "  # noqa: S608
            "WHERE site_id IN %(sites)s AND event_id IN %(ids)s",
            parameters={"sites": list(sites), "ids": [row[0] for row in present]},
            column_formats={"raw": "bytes"},
            settings={"max_query_size": 64 * len(present) + 65536},
        )
    except Exception as exc:  # clickhouse-connect raises several unrelated types
        raise WarehouseError(f"cannot look up {len(ids)} event ids in {table}: {exc}") from exc
    for event_id, raw, topic, partition, offset in result.result_rows:
        found[event_id] = StoredCopy(event_id, raw, topic, partition, offset)
    return found
