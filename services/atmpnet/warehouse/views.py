"""The view projector: recompute the four views from the event store and publish them atomically.

Every refresh reads the deduplicated event store (FINAL), feeds the pure rules in
``atmpnet.rules`` and writes every view table as one new *generation*: rows first, then a
row in ``view_generations`` that commits it; the plain-named SQL views show only the latest
committed generation (migrations/0100_views.sql). Live refresh and ``rebuild`` run the same
code on the same input, so live == rebuild by construction; the views are pure functions of
the set of events, so duplicates and arrival order cannot change them.

A full recompute of a simulated month of four sites takes well under a second (measured in
docs/views.md), so there is no incremental path to get wrong: ``touched`` only lets a
refresh be skipped when a write brought nothing.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from atmpnet import telemetry
from atmpnet.contract.events import (
    ComponentKind,
    ComponentStatus,
    DeviationTransition,
    ProcessStep,
    StepTransition,
)
from atmpnet.errors import WarehouseError
from atmpnet.rules import capacity as cap
from atmpnet.rules import drift, integrity, performance, triage
from atmpnet.rules.facts import BaselineFact, ComponentFact, ConfigFact, DeviationFact, StepFact
from atmpnet.warehouse.chain_heads import PLATFORM_PRODUCER_KIND, chain_heads, usable_heads

log = logging.getLogger(__name__)
_tracer = telemetry.tracer("atmpnet.warehouse.views")
_refresh_seconds = telemetry.meter("atmpnet.warehouse.views").create_histogram(
    "atmpnet.views.refresh_latency", unit="s", description="Time to recompute and commit every view."
)

GENERATIONS_TABLE = "view_generations"

# view name -> columns (after ``generation``), in insert order; the table is vt_<name>
VIEW_COLUMNS: dict[str, tuple[str, ...]] = {
    "batch_status": (
        "site_id",
        "module_id",
        "lane",
        "batch_id",
        "product_code",
        "outcome",
        "started_at",
        "completed_at",
        "failed_at",
        "failed_step",
        "current_step",
        "occupied_from",
        "occupied_until",
    ),
    "capacity_lanes": (
        "site_id",
        "module_id",
        "lane",
        "state",
        "batch_id",
        "step",
        "since",
        "expected_free_at",
        "as_of",
    ),
    "capacity_lane_days": (
        "site_id",
        "module_id",
        "lane",
        "day",
        "busy_hours",
        "down_hours",
        "idle_hours",
        "utilization",
    ),
    "capacity_site_days": ("site_id", "day", "batches_started", "batches_completed", "batches_failed"),
    "capacity_in_progress": ("site_id", "step", "batches"),
    "capacity_forecast": ("site_id", "days_ahead", "horizon", "lanes_total", "lanes_free"),
    "capacity_totals": (
        "scope",
        "site_id",
        "lanes_total",
        "lanes_busy",
        "lanes_idle",
        "lanes_down",
        "batches_in_progress",
        "headroom",
        "lanes_free_in_7_days",
        "busy_hours",
        "available_hours",
        "utilization",
    ),
    "deviation_triage": (
        "deviation_id",
        "raised_event_id",
        "site_id",
        "module_id",
        "lane",
        "batch_id",
        "step",
        "parameter",
        "alarm_code",
        "duration_seconds",
        "raised_at",
        "base_class",
        "deviation_class",
        "severity",
        "priority",
        "due_at",
        "status",
        "updated_at",
        "closed_at",
        "duplicate_of",
        "software_versions",
        "module_cluster",
        "module_cluster_size",
        "version_cluster",
        "version_cluster_size",
        "version_cluster_sites",
        "age_hours",
        "overdue",
        "changed_at",  # the live stream's cursor (migrations/0103_triage_cursor.sql)
    ),
    "drift_modules": (
        "site_id",
        "module_id",
        "module_type",
        "state",
        "baseline_id",
        "configured_at",
        "components_not_in_baseline",
        "drifted_since",
    ),
    "drift_components": (
        "site_id",
        "module_id",
        "module_type",
        "component",
        "kind",
        "running_version",
        "baseline_version",
        "status",
    ),
    "drift_intervals": ("site_id", "module_id", "module_type", "opened_at", "closed_at", "components"),
    "drift_impact": (
        "site_id",
        "module_id",
        "opened_at",
        "batch_id",
        "step",
        "attempt",
        "step_started_at",
        "step_ended_at",
    ),
    "drift_version_skew": (
        "module_type",
        "component",
        "version",
        "sites",
        "modules",
        "versions_of_component",
    ),
    "performance": ("site_id", "step", "metric", "value", "n", "ci_low", "ci_high", "network_median"),
    "integrity_findings": (
        "finding_id",
        "kind",
        "severity",
        "alarm_code",
        "site_id",
        "module_id",
        "stream",
        "lane",
        "batch_id",
        "first_at",
        "last_at",
        "sequences",
        "evidence",
        "message",
        "settled",
    ),
    "completeness": (
        "site_id",
        "streams",
        "expected",
        "received",
        "missing",
        "on_time",
        "skewed",
        "received_share",
        "on_time_share",
    ),
}
VIEW_NAMES: tuple[str, ...] = tuple(VIEW_COLUMNS)
# columns from store metadata (ingest times), not from the set of events: live and a rebuild from
# another store differ there by design, so read_views (what comparisons read) leaves them out
STORE_METADATA_COLUMNS: dict[str, frozenset[str]] = {"deviation_triage": frozenset({"changed_at"})}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # changed_at of a deviation without a known ingest time


EventFact = integrity.EventFact


@dataclass(frozen=True)
class StoreFacts:
    """Everything the rules read, loaded from the event store."""

    steps: list[StepFact]
    deviations: list[DeviationFact]
    configs: list[ConfigFact]
    baselines: list[BaselineFact]
    sensors: dict[str, performance.SensorCounts]
    as_of: datetime | None
    observed_from: datetime | None
    events: int
    # the envelope of every event the sites produced (not the platform's own deviations), with
    # its chain hash and, when it arrived late, the event time its partition had reached then
    integrity: tuple[EventFact, ...] = ()
    # batch steps of the streams checked clean in SQL (whole-stream rules skip them; segregation
    # reads them) and those streams' completeness per site: site -> (streams, expected, received)
    integrity_steps: tuple[EventFact, ...] = ()
    clean_streams: dict[str, tuple[str | None, int]] | None = None
    # stream -> chain hash of its newest event as the ingest recorded it (protects the tails)
    chain_heads: dict[str, str] | None = None
    # "*": the event time every dense partition has reached; streams held back (see stream_watermarks)
    stream_watermarks: dict[str, datetime] | None = None
    # deviation id -> the newest ingested_at of its stored events (read in the same query as the
    # deviation facts, so it describes exactly the events the triage is computed from)
    deviation_ingested_at: dict[str, datetime] | None = None


@dataclass(frozen=True)
class ViewSet:
    """Rows of every view (without the generation column), plus what was computed from."""

    rows: dict[str, list[tuple[Any, ...]]]
    facts: StoreFacts
    triage: list[triage.TriagedDeviation]
    drift_intervals: list[drift.DriftInterval]
    findings: tuple[integrity.Finding, ...] = ()
    settled: frozenset[str] = frozenset()  # finding ids no event in flight can change any more


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh did."""

    generation: int
    seconds: float
    rows: int
    views: ViewSet


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _components(
    kinds: list[str], names: list[str], versions: list[str], hashes: list[str]
) -> tuple[ComponentFact, ...]:
    return tuple(
        ComponentFact(n, ComponentKind(k), v, h)
        for k, n, v, h in zip(kinds, names, versions, hashes, strict=True)
    )


def _query_params(client: Client, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    try:
        return [tuple(r) for r in client.query(sql, parameters=params).result_rows]
    except Exception as exc:  # clickhouse-connect raises several unrelated types
        raise WarehouseError(f"view query failed: {exc}: {sql[:120]}") from exc


def _query(client: Client, sql: str) -> list[tuple[Any, ...]]:
    try:
        return [tuple(r) for r in client.query(sql).result_rows]
    except Exception as exc:  # clickhouse-connect raises several unrelated types
        raise WarehouseError(f"view query failed: {exc}: {sql[:120]}") from exc


def load_facts(client: Client) -> StoreFacts:
    """Read the facts of every stored event (one row per event id: FINAL)."""
    steps = [
        StepFact(
            str(r[0]),
            r[1],
            r[2],
            int(r[3]),
            r[4],
            ProcessStep(r[5]),
            StepTransition(r[6]),
            int(r[7]),
            _utc(r[8]) or datetime.min,
            r[9],
            r[10],
        )
        for r in _query(
            client,
            "SELECT event_id, site_id, module_id, lane, batch_id, step, transition, attempt, occurred_at,"
            " product_code, expected_duration_minutes FROM batch_steps FINAL",
        )
    ]
    deviation_rows = _query(
        client,
        "SELECT event_id, site_id, module_id, lane, batch_id, deviation_id, transition, occurred_at,"
        " step, parameter, alarm_code, duration_seconds, ingested_at FROM deviations FINAL",
    )
    deviations = [
        DeviationFact(
            str(r[0]),
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            DeviationTransition(r[6]),
            _utc(r[7]) or datetime.min,
            ProcessStep(r[8]) if r[8] else None,
            r[9],
            r[10],
            r[11],
        )
        for r in deviation_rows
    ]
    deviation_ingested_at: dict[str, datetime] = {}
    for r in deviation_rows:
        at = _utc(r[12]) or EPOCH
        if at > deviation_ingested_at.get(r[5], EPOCH):
            deviation_ingested_at[r[5]] = at
    configs = [
        ConfigFact(
            str(r[0]),
            r[1],
            r[2],
            r[3],
            int(r[4]),
            _components(r[5], r[6], r[7], r[8]),
            _utc(r[9]) or datetime.min,
            int(r[10]),
        )
        for r in _query(
            client,
            "SELECT event_id, site_id, module_id, module_type, lanes, components_kind, components_name,"
            " components_version, components_content_hash, occurred_at, sequence FROM module_configs FINAL",
        )
    ]
    baselines = [
        BaselineFact(
            str(r[0]),
            r[1],
            r[2],
            _components(r[3], r[4], r[5], r[6]),
            _utc(r[7]) or datetime.min,
            _utc(r[8]) or datetime.min,
            _utc(r[9]) or datetime.min,
        )
        for r in _query(
            client,
            "SELECT event_id, baseline_id, module_type, components_kind, components_name, components_version,"
            " components_content_hash, effective_from, approved_at, occurred_at FROM baselines FINAL",
        )
    ]
    sensors: dict[str, performance.SensorCounts] = {}
    sensor_events = 0
    sensor_last: datetime | None = None
    for site, samples, outside, n, last in _query(
        client,
        "SELECT site_id, sum(`count`), sum(samples_outside_alert), count(), max(occurred_at)"
        " FROM sensor_summaries FINAL GROUP BY site_id",
    ):
        sensors[site] = performance.SensorCounts(int(samples), int(outside))
        sensor_events += int(n)
        site_last = _utc(last)
        if site_last is not None and (sensor_last is None or site_last > sensor_last):
            sensor_last = site_last
    times = (
        [f.occurred_at for f in steps]
        + [f.occurred_at for f in deviations]
        + [f.occurred_at for f in configs]
    )
    times += [b.occurred_at for b in baselines]
    if sensor_last is not None:
        times.append(sensor_last)
    starts = [f.occurred_at for f in configs] or [f.occurred_at for f in steps]
    integrity_facts, integrity_steps, clean_streams, heads = load_integrity_input(client)
    watermarks = stream_watermarks(client)
    return StoreFacts(
        steps,
        deviations,
        configs,
        baselines,
        sensors,
        as_of=max(times) if times else None,
        observed_from=min(starts) if starts else None,
        events=len(steps) + len(deviations) + len(configs) + len(baselines) + sensor_events,
        integrity=integrity_facts,
        integrity_steps=integrity_steps,
        clean_streams=clean_streams,
        chain_heads=heads,
        stream_watermarks=watermarks,
        deviation_ingested_at=deviation_ingested_at,
    )


# -- integrity input ---------------------------------------------------------------------------

# how late an event may arrive after events that occurred later than it (docs/views.md: the
# tests shuffle within it and expect no finding); beyond it the arrival is a LATE_ARRIVAL finding
LATENESS_BOUND = timedelta(hours=2)
INTEGRITY_BOUNDS = integrity.IntegrityBounds(lateness=LATENESS_BOUND, streams_start_at_one=True)
FAMILY_TABLES = ("batch_steps", "sensor_summaries", "deviations", "module_configs", "baselines")
# the chain hash in SQL: SHA-256 of the Avro body (raw minus the 5-byte header), as contract.chain
HASH_SQL = "if(length(raw) > 5, lower(hex(SHA256(substring(raw, 6)))), NULL)"
ENVELOPE_SQL = (
    "toString(event_id), site_id, module_id, producer_id, sequence, occurred_at, published_at,"
    f" previous_hash, {HASH_SQL}, lane, batch_id"
)


def record_arrivals(client: Client) -> None:
    """Record where each event id not seen before was read (its first arrival; see 0101_integrity)."""
    selects = " UNION ALL ".join(
        f"SELECT event_id, topic, `partition`, `offset`, occurred_at, ingested_at FROM {t} FINAL"  # noqa: S608
        " WHERE event_id NOT IN (SELECT event_id FROM event_arrivals)"
        for t in FAMILY_TABLES
    )
    try:
        client.command(
            "INSERT INTO event_arrivals (event_id, topic, `partition`, `offset`, occurred_at, ingested_at) "
            + selects
        )
    except Exception as exc:  # clickhouse-connect raises several unrelated types
        raise WarehouseError(f"cannot record arrivals: {exc}") from exc


def late_arrivals(client: Client, bound: timedelta = LATENESS_BOUND) -> dict[str, datetime]:
    """Event id -> the event time its partition had reached when it first arrived, for late ones.

    Lateness is measured on the event-time clock of the partition it was read from (the newest
    ``occurred_at`` at a lower offset), not on the wall clock: live, that is about the time of
    arrival; for a replay or a simulation run faster than real time it is the only clock that
    means anything. Records at one offset (stored without a source) are never late.
    """
    rows = _query(client, _late_sql(bound))
    return {str(r[0]): _utc(r[1]) or datetime.min for r in rows}


def _late_sql(bound: timedelta = LATENESS_BOUND) -> str:
    """The late arrivals as SQL: ``(event id as text, wm)`` rows (``late_arrivals``)."""
    micros = int(bound.total_seconds() * 1_000_000)
    return (
        "SELECT toString(event_id) AS id, wm FROM ("  # noqa: S608 (an integer from a timedelta)
        " SELECT event_id, occurred_at, max(occurred_at) OVER (PARTITION BY t, p ORDER BY o"
        "  RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS wm"
        " FROM (SELECT event_id, argMin(topic, ingested_at) AS t, argMin(`partition`, ingested_at) AS p,"
        "  argMin(`offset`, ingested_at) AS o, any(occurred_at) AS occurred_at"
        "  FROM event_arrivals GROUP BY event_id))"
        f" WHERE dateDiff('microsecond', occurred_at, wm) > {micros}"
    )


# the families dense enough that their partitions' event time tracks the stream's (configurations
# and baselines are sparse: a partition of them may rest for weeks and would hold everything back)
DENSE_TABLES = ("sensor_summaries", "batch_steps", "deviations")
STREAM_SQL = "if(ifNull(module_id, '') = '', concat('producer/', producer_id), concat('module/', module_id))"


_NEVER = datetime.min.replace(tzinfo=UTC)


def stream_watermarks(client: Client) -> dict[str, datetime]:
    """The event time every dense partition has reached (key ``*``), and streams that may not settle.

    The low watermark is the lowest, over every partition of the sensor-summary, batch-step and
    deviation topics, of the newest event time first delivered there: each partition is read in order, so
    an event of those families older than it has arrived or is late. Nothing settles until every
    partition of each dense topic has delivered something (a partition without events has no
    watermark), unless it stayed empty while the others delivered for ``IDLE_PARTITION_GRACE``
    of ingest time; a module stream with batch steps but no sensor summary yet is held back.
    """
    dense = " UNION ALL ".join(
        f"SELECT DISTINCT '{t}' AS f, topic AS t, `partition` AS p FROM {t}"  # noqa: S608 (constant names)
        for t in DENSE_TABLES
    )
    low = _query(
        client,
        f"SELECT min(wm), count() FROM (SELECT t, p FROM ({dense}) GROUP BY t, p) AS d INNER JOIN"  # noqa: S608
        " (SELECT topic AS t, `partition` AS p, max(occurred_at) AS wm FROM event_arrivals GROUP BY t, p)"
        " AS w ON d.t = w.t AND d.p = w.p",
    )
    out: dict[str, datetime] = {}
    if low and int(low[0][1]):
        out["*"] = _utc(low[0][0]) or _NEVER
    if not _every_dense_partition_delivered(client, dense):
        out["*"] = _NEVER
    unsensed = _query(
        client,
        "SELECT DISTINCT concat('module/', module_id) FROM batch_steps WHERE module_id IS NOT NULL"
        " AND module_id NOT IN (SELECT DISTINCT module_id FROM sensor_summaries WHERE module_id IS NOT NULL)",
    )
    for (stream,) in unsensed:
        out[str(stream)] = _NEVER
    return out


# an input partition that has delivered nothing while the others delivered for this long (ingest
# time) is taken as empty rather than lagging: consumers fetch every assigned partition at once
IDLE_PARTITION_GRACE = timedelta(minutes=2)


def _every_dense_partition_delivered(client: Client, dense: str) -> bool:
    """True when each dense family has delivered, on every partition of each of its topics.

    Partition counts come from ``input_partitions`` (recorded by the processors from the broker);
    topics not recorded there (a store fed another way) count up to the highest partition seen.
    Partitions or whole families that delivered nothing count as idle after the grace.
    """
    seen: dict[tuple[str, str], set[int]] = defaultdict(set)
    for family, topic, partition in _query(client, dense):
        seen[(str(family), str(topic))].add(int(partition))
    recorded = {
        str(t): (str(f), int(n))
        for t, f, n in _query(
            client,
            "SELECT topic, argMax(family, recorded_at), argMax(partitions, recorded_at)"
            " FROM input_partitions GROUP BY topic",
        )
    }
    span = _query(client, "SELECT min(ingested_at), max(ingested_at), count() FROM event_arrivals")
    idle_ok = bool(span and int(span[0][2]) and span[0][1] - span[0][0] >= IDLE_PARTITION_GRACE)
    highest = max((p for parts in seen.values() for p in parts), default=-1) + 1
    topics: dict[tuple[str, str], int] = dict.fromkeys(seen, highest)
    for topic, (family, n) in recorded.items():
        if family in DENSE_TABLES:
            topics[(family, topic)] = n
    for family in DENSE_TABLES:
        if not any(f == family for f, _ in topics) and not idle_ok:
            return False  # a whole family has delivered nothing (its topic may lag the others)
    return all(len(seen.get(key, ())) >= n or idle_ok for key, n in topics.items())


def record_input_partitions(client: Client, partitions: dict[str, tuple[str, int]]) -> None:
    """Record each input topic's event-store table (family) and partition count (from the broker)."""
    if not partitions:
        return
    now = datetime.now(UTC)
    rows = [(topic, family, n, now) for topic, (family, n) in sorted(partitions.items())]
    client.insert("input_partitions", rows, column_names=["topic", "family", "partitions", "recorded_at"])


def stream_summaries(client: Client) -> dict[str, tuple[str | None, int, str | None, bool]]:
    """Per stream, checked whole in SQL: site, highest sequence, its event's hash, whether it is clean.

    Clean = sequences 1..max each once, every consecutive link's ``previous_hash`` equal to the
    hash of the event before it (no chain restart, no predecessor named at 1), nothing skewed
    and nothing late. Conservative: a stream that is not clean gets the rules in full.
    """
    max_delay = int(INTEGRITY_BOUNDS.max_reporting_delay.total_seconds() * 1_000_000)
    early = int(INTEGRITY_BOUNDS.negative_skew_tolerance.total_seconds() * 1_000_000)
    union = " UNION ALL ".join(
        f"SELECT {STREAM_SQL} AS s, site_id, sequence, previous_hash, {HASH_SQL} AS h,"  # noqa: S608
        " dateDiff('microsecond', occurred_at, published_at) AS skew, toString(event_id) AS id"
        f" FROM {t} FINAL WHERE producer_kind != '{PLATFORM_PRODUCER_KIND}'"
        for t in FAMILY_TABLES
    )
    rows = _query(
        client,
        "SELECT s, any(site_id), max(sequence), argMax(h, sequence),"  # noqa: S608
        " count() = max(sequence) AND uniqExact(sequence) = count()"
        " AND countIf(prev_seq = sequence - 1 AND previous_hash IS NOT NULL AND ifNull(h, '') != ''"
        "   AND previous_hash != prev_h) = 0"
        " AND NOT (countIf(previous_hash IS NULL AND sequence > 1) > 0"
        "  AND countIf(previous_hash IS NOT NULL) > 0)"
        " AND countIf(sequence = 1 AND previous_hash IS NOT NULL) = 0"
        f" AND countIf(skew > {max_delay} OR skew < -{early}) = 0"
        # the late set stays in ClickHouse: inlined, a store with many late events overflowed
        # max_query_size and every refresh failed
        f" AND countIf(id IN (SELECT id FROM ({_late_sql()}))) = 0 AS clean"
        " FROM (SELECT s, site_id, sequence, previous_hash, h, skew, id,"
        "  lagInFrame(h) OVER w AS prev_h, lagInFrame(sequence) OVER w AS prev_seq"
        f"  FROM ({union}) WINDOW w AS (PARTITION BY s ORDER BY sequence"
        "  ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)) GROUP BY s",
    )
    return {str(r[0]): (r[1] or None, int(r[2]), r[3], bool(r[4])) for r in rows}


def load_integrity_facts(client: Client) -> tuple[integrity.EventFact, ...]:
    """Every site-produced event's envelope, chain hash and arrival (the whole-store rule input)."""
    facts, _steps, _clean, _heads = load_integrity_input(client)
    return facts


def load_integrity_input(
    client: Client,
) -> tuple[
    tuple[integrity.EventFact, ...],
    tuple[integrity.EventFact, ...],
    dict[str, tuple[str | None, int]],
    dict[str, str],
]:
    """The integrity rules' input, the suspect streams whole and the clean ones by their steps.

    Also the recorded chain heads (stream -> hash of its newest event) that can judge a tail.

    Streams checked clean in SQL (``stream_summaries``) bring only their batch steps (for the
    segregation rules) and their counts (for completeness): the sensor summaries of a clean
    stream never reach Python, which is most of the store.
    """
    record_arrivals(client)
    late = late_arrivals(client)
    summaries = stream_summaries(client)
    recorded = chain_heads(client)
    # a stream whose tail is not the recorded head (altered or removed last event) gets the rules
    heads = usable_heads(recorded, {s: top for s, (_site, top, _h, _ok) in summaries.items()})
    clean = {
        s: (site, top)
        for s, (site, top, last_hash, ok) in summaries.items()
        if ok and (s not in heads or (recorded[s][0] == top and heads[s] == last_hash))
    }
    out: list[integrity.EventFact] = []
    steps: list[integrity.EventFact] = []
    for table in FAMILY_TABLES:
        extra = ", step, transition, attempt, performed_by" if table == "batch_steps" else ""
        sql = (
            f"SELECT {ENVELOPE_SQL}{extra}, {STREAM_SQL} FROM {table} FINAL"  # noqa: S608 (constant names)
            f" WHERE producer_kind != '{PLATFORM_PRODUCER_KIND}'"
        )
        if table != "batch_steps" and clean:
            sql += f" AND {STREAM_SQL} NOT IN {{clean:Array(String)}}"
        for r in _query_params(client, sql, {"clean": sorted(clean)} if table != "batch_steps" else {}):
            event_id = r[0]
            fact = integrity.EventFact(
                event_id=event_id,
                site_id=r[1] or None,
                module_id=r[2],
                producer_id=r[3],
                sequence=int(r[4]),
                occurred_at=_utc(r[5]) or datetime.min,
                published_at=_utc(r[6]) or datetime.min,
                ingested_at=late.get(event_id),
                previous_hash=r[7],
                hash=r[8],
                lane=r[9],
                batch_id=r[10],
                step=ProcessStep(r[11]) if extra else None,
                transition=StepTransition(r[12]) if extra else None,
                attempt=int(r[13]) if extra else 1,
                performed_by=r[14] if extra else None,
            )
            (steps if r[-1] in clean else out).append(fact)
    return tuple(out), tuple(steps), clean, heads


def _s(value: object) -> str | None:
    return None if value is None else str(value)


def compute_views(facts: StoreFacts) -> ViewSet:  # noqa: PLR0912
    """Every view's rows from the facts (pure: the same facts give the same rows)."""
    rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in VIEW_NAMES}
    if facts.as_of is None:
        return ViewSet(rows, facts, [], [])
    as_of = facts.as_of
    findings = tuple(integrity_findings(facts))
    settled = frozenset(f.finding_id for f in findings if is_settled(f, facts.stream_watermarks or {}, as_of))
    rows["integrity_findings"] = [(*_finding_row(f), f.finding_id in settled) for f in findings]
    for sc in site_completeness(facts, as_of):
        rows["completeness"].append(
            (
                sc.site_id or "",
                sc.streams,
                sc.expected,
                sc.received,
                sc.missing,
                sc.on_time,
                sc.skewed,
                sc.received_share,
                sc.on_time_share,
            )
        )
    observed_from = facts.observed_from or as_of

    capacity = cap.capacity(facts.steps, facts.deviations, facts.configs, as_of, observed_from)
    for b in sorted(capacity.batches.values(), key=lambda b: (b.site_id, b.batch_id)):
        occ = b.occupancy()
        cur = b.current(as_of)
        rows["batch_status"].append(
            (
                b.site_id,
                b.module_id,
                b.lane,
                b.batch_id,
                b.product_code,
                str(b.outcome),
                b.started_at,
                b.completed_at,
                b.failed_at,
                _s(b.failed_step),
                _s(cur.step) if cur else None,
                occ[0] if occ else None,
                occ[1] if occ else None,
            )
        )
    for ln in capacity.lanes_now:
        r = ln.lane
        rows["capacity_lanes"].append(
            (
                r.site_id,
                r.module_id,
                r.lane,
                str(ln.state),
                ln.batch_id,
                _s(ln.step),
                ln.since,
                ln.expected_free_at,
                as_of,
            )
        )
    for ld in capacity.lane_days:
        r = ld.lane
        rows["capacity_lane_days"].append(
            (
                r.site_id,
                r.module_id,
                r.lane,
                ld.day,
                ld.busy_hours,
                ld.down_hours,
                ld.idle_hours,
                ld.utilization,
            )
        )
    for sd in capacity.site_days:
        rows["capacity_site_days"].append((sd.site_id, sd.day, sd.started, sd.completed, sd.failed))
    for (site, step), n in sorted(capacity.in_progress_by_step.items()):
        rows["capacity_in_progress"].append((site, str(step), n))
    for fc in capacity.forecast:
        rows["capacity_forecast"].append(
            (fc.site_id, fc.days_ahead, fc.horizon, fc.lanes_total, fc.lanes_free)
        )
    rows["capacity_totals"] = _totals(capacity)

    triaged = triage.triage(facts.deviations, facts.configs, as_of)
    changed_at = triage_changed_at(triaged, facts.deviation_ingested_at or {})
    for t in triaged:
        rows["deviation_triage"].append(
            (
                t.deviation_id,
                t.raised_event_id,
                t.site_id,
                t.module_id,
                t.lane,
                t.batch_id,
                _s(t.step),
                t.parameter,
                t.alarm_code,
                t.duration_seconds,
                t.raised_at,
                str(t.base_class),
                str(t.deviation_class),
                str(t.severity),
                t.priority,
                t.due_at,
                str(t.status),
                t.updated_at,
                t.closed_at,
                t.duplicate_of,
                t.software_versions,
                t.module_cluster,
                t.module_cluster_size,
                t.version_cluster,
                t.version_cluster_size,
                t.version_cluster_sites,
                t.age_hours,
                t.overdue,
                changed_at[t.deviation_id],
            )
        )

    intervals = drift.drift_intervals(facts.configs, facts.baselines, as_of)
    states = drift.states_at(facts.configs, facts.baselines, as_of)
    open_since = {i.module_id: i.opened_at for i in intervals if i.closed_at is None}
    for module_id, st in sorted(states.items()):
        cfg = st.config
        not_in = sum(1 for c in st.components if c.status is not ComponentStatus.IN_BASELINE)
        rows["drift_modules"].append(
            (
                cfg.site_id,
                module_id,
                cfg.module_type,
                str(st.state),
                st.baseline.baseline_id if st.baseline else None,
                cfg.occurred_at,
                not_in,
                open_since.get(module_id),
            )
        )
        for c in st.components:
            rows["drift_components"].append(
                (
                    cfg.site_id,
                    module_id,
                    cfg.module_type,
                    c.name,
                    c.kind,
                    c.running_version,
                    c.baseline_version,
                    str(c.status),
                )
            )
    for i in intervals:
        rows["drift_intervals"].append(
            (
                i.site_id,
                i.module_id,
                i.module_type,
                i.opened_at,
                i.closed_at,
                [_describe(c) for c in i.components],
            )
        )
    rows["drift_impact"] = _impact(intervals, capacity.batches.values(), as_of)
    for sk in drift.version_skew(states):
        rows["drift_version_skew"].append(
            (sk.module_type, sk.component, sk.version, sk.sites, sk.modules, sk.versions_of_component)
        )

    for p in performance.performance(capacity.batches.values(), triaged, facts.sensors, capacity.lane_days):
        rows["performance"].append(
            (p.site_id, _s(p.step) or "", str(p.metric), p.value, p.n, p.ci_low, p.ci_high, p.network_median)
        )
    return ViewSet(rows, facts, triaged, intervals, findings, settled)


def triage_changed_at(
    triaged: list[triage.TriagedDeviation], ingested_at: dict[str, datetime]
) -> dict[str, datetime]:
    """Per deviation: ingest time of the newest event that can change its triage (the stream's cursor).

    Triage here means class, severity, status and duplicate_of. The first three follow from the
    deviation's own events; duplicate_of also from the RAISED and CLOSED events of the deviations
    raised before it with the same duplicate key (triage.duplicates), so the value is the maximum
    over its own events and those of every earlier member of its group. It never decreases as
    events arrive, so a reader that has seen every row up to a value misses no later change.
    Cluster sizes, software versions and age are not covered: they move with unrelated
    deviations and with time.
    """
    groups: dict[tuple[str, int | None, str | None, str | None], list[triage.TriagedDeviation]] = {}
    for t in triaged:
        groups.setdefault((t.module_id, t.lane, t.parameter, t.alarm_code), []).append(t)
    out: dict[str, datetime] = {}
    for members in groups.values():
        members.sort(key=lambda t: (t.raised_at, t.deviation_id))
        running = EPOCH
        for t in members:
            running = max(running, ingested_at.get(t.deviation_id, EPOCH))
            out[t.deviation_id] = running
    return out


def is_settled(f: integrity.Finding, watermarks: dict[str, datetime], as_of: datetime) -> bool:
    """True when every dense partition has moved past the finding's evidence by the lateness bound.

    While one topic lags another (a replay, a consumer catching up), a gap or an overlap may be
    an artefact of arrival order; once the slowest partition of the sensor summaries, batch
    steps and deviations has moved past the evidence by the bound, anything still missing is
    late by definition.
    """
    at = f.last_at or f.first_at
    if at is None:
        return False
    stream = f"module/{f.module_id}" if f.module_id else f.stream
    return _past_horizon(at, stream, watermarks, as_of)


def _past_horizon(at: datetime, stream: str, watermarks: dict[str, datetime], as_of: datetime) -> bool:
    """True when the stream's watermark (else every dense partition's) is the lateness bound past ``at``."""
    return at + LATENESS_BOUND <= watermarks.get(stream, watermarks.get("*", as_of))


def integrity_findings(facts: StoreFacts) -> list[integrity.Finding]:
    """Every finding: whole-stream rules over the suspect streams, segregation over every batch step."""
    clean = frozenset((facts.clean_streams or {}).keys())
    unique = integrity.unique_facts(facts.integrity)
    found = [
        *integrity.chain_breaks(unique, facts.chain_heads),
        *integrity.sequence_findings(unique, INTEGRITY_BOUNDS),
        *integrity.clock_skew(unique, INTEGRITY_BOUNDS),
        *integrity.late_arrivals(unique, INTEGRITY_BOUNDS),
        *integrity.segregation([*unique, *facts.integrity_steps], clean),
    ]
    return sorted(found, key=lambda f: (f.kind.value, f.stream, f.evidence, f.message))


def site_completeness(facts: StoreFacts, as_of: datetime | None = None) -> list[integrity.SiteCompleteness]:
    """Completeness per site: the suspect streams by the rule, the clean ones from their SQL counts.

    Missing sequences above a stream's settled horizon are not expected yet (``in_flight_missing``):
    while a topic lags another, counting them would show a catching-up consumer as lost data.
    """
    per = dict(integrity.completeness(facts.integrity, INTEGRITY_BOUNDS))
    in_flight = in_flight_missing(facts.integrity, facts.stream_watermarks or {}, as_of or facts.as_of)
    for site, n in in_flight.items():
        c = per[site]
        per[site] = integrity.SiteCompleteness(
            site, c.streams, c.expected - n, c.received, c.on_time, c.skewed
        )
    for site, expected in (facts.clean_streams or {}).values():
        c = per.get(site) or integrity.SiteCompleteness(site, 0, 0, 0, 0, 0)
        per[site] = integrity.SiteCompleteness(
            site, c.streams + 1, c.expected + expected, c.received + expected, c.on_time + expected, c.skewed
        )
    return [per[k] for k in sorted(per, key=lambda k: k or "")]


def in_flight_missing(
    facts: Sequence[integrity.EventFact], watermarks: dict[str, datetime], as_of: datetime | None
) -> dict[str | None, int]:
    """Per site: missing sequences above each stream's newest settled event (still in flight).

    The horizon is the one ``is_settled`` uses: an event is settled once its stream's watermark
    has passed it by the lateness bound. A gap below a settled event is missing for good; one
    above it may still arrive, so it is neither expected nor missing yet.
    """
    out: dict[str | None, int] = defaultdict(int)
    if as_of is None:
        return out
    sequences: dict[str, set[int]] = defaultdict(set)
    site_of: dict[str, str | None] = {}
    top: dict[str, int] = {}
    for f in facts:
        sequences[f.stream].add(f.sequence)
        site_of[f.stream] = f.site_id
        if f.sequence > top.get(f.stream, 0) and _past_horizon(f.occurred_at, f.stream, watermarks, as_of):
            top[f.stream] = f.sequence
    for stream, seqs in sequences.items():
        settled_top = top.get(stream, 0)
        above = sum(1 for s in seqs if s > settled_top)
        missing = max(seqs) - settled_top - above
        if missing:
            out[site_of[stream]] += missing
    return out


def _finding_row(f: integrity.Finding) -> tuple[Any, ...]:
    return (
        f.finding_id,
        f.kind.value,
        f.severity.value,
        f.alarm_code,
        f.site_id or "",
        f.module_id,
        f.stream,
        f.lane,
        f.batch_id,
        f.first_at,
        f.last_at,
        list(f.sequences),
        list(f.evidence),
        f.message,
    )


def _describe(c: drift.ComponentComparison) -> str:
    return f"{c.name}: {c.status} (running {c.running_version or '-'}, baseline {c.baseline_version or '-'})"


def _totals(capacity: cap.CapacityResult) -> list[tuple[Any, ...]]:
    per: dict[str, list[float]] = {}
    for ln in capacity.lanes_now:
        t = per.setdefault(ln.lane.site_id, [0.0] * 8)
        t[0] += 1
        t[{cap.LaneState.BUSY: 1, cap.LaneState.IDLE: 2, cap.LaneState.DOWN: 3}[ln.state]] += 1
    for (site, _), n in capacity.in_progress_by_step.items():
        per.setdefault(site, [0.0] * 8)[4] += n
    for fc in capacity.forecast:
        if fc.days_ahead == cap.FORECAST_DAYS:
            per.setdefault(fc.site_id, [0.0] * 8)[5] = fc.lanes_free
    for ld in capacity.lane_days:
        t = per.setdefault(ld.lane.site_id, [0.0] * 8)
        t[6] += ld.busy_hours
        t[7] += ld.busy_hours + ld.idle_hours
    network = [sum(t[i] for t in per.values()) for i in range(8)]
    out = []
    for scope, site, t in [*(("site", s, per[s]) for s in sorted(per)), ("network", "", network)]:
        available_lanes = t[0] - t[3]
        out.append(
            (
                scope,
                site,
                int(t[0]),
                int(t[1]),
                int(t[2]),
                int(t[3]),
                int(t[4]),
                t[2] / available_lanes if available_lanes else None,
                int(t[5]),
                t[6],
                t[7],
                t[6] / t[7] if t[7] else None,
            )
        )
    return out


def _impact(
    intervals: list[drift.DriftInterval], batches: Iterable[cap.Batch], as_of: datetime
) -> list[tuple[Any, ...]]:
    """Step attempts on a module that overlap one of its drift intervals (QC_RELEASE runs off module)."""
    by_module: dict[str, list[drift.DriftInterval]] = {}
    for i in intervals:
        by_module.setdefault(i.module_id, []).append(i)
    out = []
    for b in batches:
        for s in b.spans.values():
            if s.started_at is None or s.step is ProcessStep.QC_RELEASE:
                continue
            end = s.ended_at or as_of
            for i in by_module.get(b.module_id, []):
                closed = i.closed_at or as_of
                if (s.started_at < closed and end > i.opened_at) or s.started_at == i.opened_at:
                    out.append(
                        (
                            b.site_id,
                            b.module_id,
                            i.opened_at,
                            b.batch_id,
                            str(s.step),
                            s.attempt,
                            s.started_at,
                            s.ended_at,
                        )
                    )
    return sorted(out, key=lambda r: (r[0], r[1], r[2], r[3], cap.STEP_INDEX[ProcessStep(r[4])], r[5]))


def _committed(client: Client) -> int:
    return int(_query(client, "SELECT max(generation) FROM view_generations")[0][0] or 0)


def _drop_generations(client: Client, keep: set[int]) -> None:
    """Drop every partition of every view table whose generation is not in ``keep``."""
    tables = ", ".join(f"'vt_{n}'" for n in VIEW_NAMES)
    where = f"database = currentDatabase() AND active AND table IN ({tables})"
    parts = _query(client, "SELECT DISTINCT table, partition_id FROM system.parts WHERE " + where)  # noqa: S608 (constant names)
    for table, partition_id in parts:
        if int(partition_id) not in keep:
            client.command(f"ALTER TABLE {table} DROP PARTITION ID '{partition_id}'")


def write_views(client: Client, views: ViewSet, reason: str) -> int:
    """Write ``views`` as a new generation, commit it, drop the older ones; return its number.

    The generation before the new one is kept until the next refresh, so a reader that looked
    up the committed generation just before this commit still finds its rows.
    """
    committed = _committed(client)
    # leftovers of a refresh that died before committing
    _drop_generations(client, {committed, committed - 1})
    generation = committed + 1
    try:
        for name, rows in views.rows.items():
            if rows:
                client.insert(
                    f"vt_{name}",
                    [(generation, *r) for r in rows],
                    column_names=["generation", *VIEW_COLUMNS[name]],
                )
        client.insert(
            GENERATIONS_TABLE,
            [
                [
                    generation,
                    datetime.now(UTC),
                    views.facts.as_of,
                    views.facts.observed_from,
                    views.facts.events,
                    reason,
                ]
            ],
            column_names=["generation", "committed_at", "as_of", "observed_from", "events", "reason"],
        )
    except WarehouseError:
        raise
    except Exception as exc:  # clickhouse-connect raises several unrelated types
        raise WarehouseError(f"cannot write view generation {generation}: {exc}") from exc
    _drop_generations(client, {generation, committed})
    return generation


def refresh_views(
    client: Client, touched: Iterable[object] | None = None, *, reason: str = "live"
) -> RefreshResult | None:
    """Recompute every view from the event store and commit it; None when ``touched`` is empty.

    Called after each ingest write (``touched``: what the write brought) and by ``rebuild``.
    """
    if touched is not None and not any(True for _ in touched):
        return None
    started = time.perf_counter()
    with _tracer.start_as_current_span("atmpnet.views.refresh") as span:
        views = compute_views(load_facts(client))
        generation = write_views(client, views, reason)
        span.set_attribute("atmpnet.views.generation", generation)
        span.set_attribute("atmpnet.views.events", views.facts.events)
    seconds = time.perf_counter() - started
    _refresh_seconds.record(seconds, {"reason": reason})
    rows = sum(len(r) for r in views.rows.values())
    log.debug(
        "views generation %d: %d rows from %d events in %.3fs", generation, rows, views.facts.events, seconds
    )
    return RefreshResult(generation, seconds, rows, views)


def rebuild_views(client: Client) -> RefreshResult:
    """Recompute every view from the whole event store (what ``atmpnet rebuild`` runs)."""
    result = refresh_views(client, reason="rebuild")
    assert result is not None
    return result


def _aware(value: Any) -> Any:
    return _utc(value) if isinstance(value, datetime) else value


def read_views(client: Client) -> dict[str, list[tuple[Any, ...]]]:
    """Every view's committed rows, sorted, datetimes in UTC: what readers see, comparable.

    Columns of store metadata (``STORE_METADATA_COLUMNS``) are left out.
    """
    out = {}
    for name in VIEW_NAMES:
        skip = STORE_METADATA_COLUMNS.get(name, frozenset())
        cols = ", ".join(f"`{c}`" for c in VIEW_COLUMNS[name] if c not in skip)
        rows = _query(client, f"SELECT {cols} FROM {name}")  # noqa: S608 (constant names)
        out[name] = sorted((tuple(_aware(v) for v in r) for r in rows), key=repr)
    return out
