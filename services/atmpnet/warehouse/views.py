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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
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
from atmpnet.rules import drift, performance, triage
from atmpnet.rules.facts import BaselineFact, ComponentFact, ConfigFact, DeviationFact, StepFact

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
}
VIEW_NAMES: tuple[str, ...] = tuple(VIEW_COLUMNS)


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


@dataclass(frozen=True)
class ViewSet:
    """Rows of every view (without the generation column), plus what was computed from."""

    rows: dict[str, list[tuple[Any, ...]]]
    facts: StoreFacts
    triage: list[triage.TriagedDeviation]
    drift_intervals: list[drift.DriftInterval]


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
        for r in _query(
            client,
            "SELECT event_id, site_id, module_id, lane, batch_id, deviation_id, transition, occurred_at,"
            " step, parameter, alarm_code, duration_seconds FROM deviations FINAL",
        )
    ]
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
    return StoreFacts(
        steps,
        deviations,
        configs,
        baselines,
        sensors,
        as_of=max(times) if times else None,
        observed_from=min(starts) if starts else None,
        events=len(steps) + len(deviations) + len(configs) + len(baselines) + sensor_events,
    )


def _s(value: object) -> str | None:
    return None if value is None else str(value)


def compute_views(facts: StoreFacts) -> ViewSet:  # noqa: PLR0912
    """Every view's rows from the facts (pure: the same facts give the same rows)."""
    rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in VIEW_NAMES}
    if facts.as_of is None:
        return ViewSet(rows, facts, [], [])
    as_of = facts.as_of
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
            )
        )

    intervals = drift.drift_intervals(facts.configs, facts.baselines)
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
    return ViewSet(rows, facts, triaged, intervals)


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
    """Every view's committed rows, sorted, datetimes in UTC: what readers see, comparable."""
    out = {}
    for name in VIEW_NAMES:
        cols = ", ".join(f"`{c}`" for c in VIEW_COLUMNS[name])
        rows = _query(client, f"SELECT {cols} FROM {name}")  # noqa: S608 (constant names)
        out[name] = sorted((tuple(_aware(v) for v in r) for r in rows), key=repr)
    return out
