# ruff: noqa: S608 - SQL is built from constants; values go as server-side parameters (see below)
"""Every read the query API and dashboard make, in one place.

Two sources: the projector's views (``atmpnet.warehouse.views``, docs/views.md), where every
rule of the domain contract is applied once (triage class, severity, duplicates, capacity,
drift, performance, integrity), and the event store (``batch_steps``, ``deviations``,
``module_configs``, ``sensor_summaries``; ReplacingMergeTree, read with FINAL so a replayed
event counts once) for what no view holds: a deviation's free text, history and batch context.
No rule is re-implemented here: the list, the CSV export and the live stream all read the
triage view.

"Now" is the newest ``occurred_at`` in the store, not the wall clock: the simulator runs time
faster than real time, and a view of a replayed history must not depend on when it is read.

Every public method is blocking (chDB calls block): the API calls them through ``run`` in the
threadpool. SQL is assembled from constants only; every value travels as a server-side
parameter (hence the S608 waivers). One lock serialises this reader's queries on the shared
client (clickhouse-connect's HTTP client refuses concurrent queries in one session; chDB gains
nothing from them either).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client
from starlette.concurrency import run_in_threadpool

from atmpnet.errors import AtmpError, WarehouseError
from atmpnet.rules.stats import median

T = TypeVar("T")

STEPS = (
    "APHERESIS_RECEIPT",
    "SELECTION",
    "ACTIVATION",
    "TRANSDUCTION",
    "EXPANSION",
    "HARVEST",
    "FORMULATION",
    "CRYOPRESERVATION",
    "QC_RELEASE",
)
ON_MODULE_STEPS = STEPS[:-1]  # QC release happens off the module
SEVERITIES = ("CRITICAL", "MAJOR", "MINOR")
CLASSES = (
    "PROCESS_EXCURSION",
    "EQUIPMENT",
    "ENVIRONMENTAL",
    "DATA_INTEGRITY",
    "SENSOR_FAULT",
    "DUPLICATE",
)
STATUSES = ("OPEN", "INVESTIGATING", "CLOSED")
# response time by severity (docs/api.md): age is measured against raised_at + this
DUE_HOURS = {"CRITICAL": 24, "MAJOR": 24 * 7, "MINOR": 24 * 30}
PRIORITY = {"CRITICAL": 1, "MAJOR": 2, "MINOR": 3}
# sort key -> (expression, its ClickHouse type for the cursor parameter)
SORTS = {
    "raised_at": ("toUnixTimestamp64Micro(raised_at)", "Int64"),
    "severity": ("severity_rank", "UInt8"),
    "site": ("site_id", "String"),
    "status": ("status", "String"),
}


class BadQuery(AtmpError):
    """A filter, sort or cursor the API refuses (400)."""


class NotFound(AtmpError):
    """The requested object does not exist (404)."""


class ViewMoved(WarehouseError):
    """A read pinned to one view generation outlived it (the projector dropped its rows)."""


LIST_COLUMNS = (
    "deviation_id",
    "site_id",
    "module_id",
    "lane",
    "batch_id",
    "step",
    "parameter",
    "alarm_code",
    "class",
    "severity",
    "status",
    "priority",
    "raised_at",
    "updated_at",
    "closed_at",
    "due_at",
    "age_hours",
    "overdue",
    "duration_seconds",
    "software_version",
    "duplicate_of",
    "module_cluster_size",
    "version_cluster_size",
    "version_cluster_sites",
)
# from the RAISED / CLOSED events in the event store: only for quality and site tokens
FULL_TEXT_COLUMNS = ("description", "raised_by", "resolution")
RAISED_FACT_COLUMNS = ("observed_value", "unit", "limit_low", "limit_high", "detection_source")

# The triage view (docs/views.md), under the API's column names: one generation of
# vt_deviation_triage, the latest committed one (what the view deviation_triage shows) unless
# {generation} pins another ({gen:UInt64}). ``_changed_us`` is the live stream's cursor.
_TRIAGE_VIEW = """
SELECT deviation_id, site_id, module_id, lane, batch_id, step, parameter, alarm_code,
       deviation_class AS class, severity, status, priority, raised_at, updated_at, closed_at, due_at,
       age_hours, overdue, duration_seconds, software_versions AS software_version, duplicate_of,
       module_cluster_size, version_cluster_size, version_cluster_sites,
       multiIf(severity = 'CRITICAL', 0, severity = 'MAJOR', 1, 2) AS severity_rank,
       toUnixTimestamp64Micro(changed_at) AS _changed_us
FROM vt_deviation_triage
WHERE generation = {generation} {site_clause}
"""
_LATEST_GENERATION = "(SELECT max(generation) FROM view_generations)"
_PINNED_GENERATION = "{gen:UInt64}"


def _triage_view(site_clause: str, generation: int | None = None) -> str:
    """The triage view's SELECT for the latest committed generation, or the pinned one."""
    pinned = _LATEST_GENERATION if generation is None else _PINNED_GENERATION
    return _TRIAGE_VIEW.format(site_clause=site_clause, generation=pinned)


@dataclass(frozen=True)
class DeviationFilter:
    """Filters of the deviation list; every field optional, combined with AND."""

    site: str | None = None
    module: str | None = None
    lane: int | None = None
    batch: str | None = None
    step: str | None = None
    parameter: str | None = None
    severity: str | None = None
    klass: str | None = None
    status: str | None = None
    software_version: str | None = None
    raised_from: datetime | None = None
    raised_to: datetime | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        """The outer WHERE clause and its server-side parameters."""
        clauses = ["1"]
        params: dict[str, Any] = {}
        simple = {
            "site": ("site_id", "String"),
            "module": ("module_id", "String"),
            "batch": ("batch_id", "String"),
            "step": ("step", "String"),
            "parameter": ("parameter", "String"),
            "severity": ("severity", "String"),
            "klass": ("class", "String"),
            "status": ("status", "String"),
            "lane": ("lane", "UInt16"),
        }
        for name, (column, kind) in simple.items():
            value = getattr(self, name)
            if value is not None:
                clauses.append(f"{column} = {{f_{name}:{kind}}}")
                params[f"f_{name}"] = value
        if self.software_version is not None:
            # "name=version" entries joined by ";": match a whole entry or a version alone
            clauses.append(
                "arrayExists(x -> x = {f_sw:String} OR splitByChar('=', x)[-1] = {f_sw:String},"
                " splitByChar(';', ifNull(software_version, '')))"
            )
            params["f_sw"] = self.software_version
        if self.raised_from is not None:
            clauses.append("raised_at >= {f_from:DateTime64(6, 'UTC')}")
            params["f_from"] = self.raised_from
        if self.raised_to is not None:
            clauses.append("raised_at < {f_to:DateTime64(6, 'UTC')}")
            params["f_to"] = self.raised_to
        return " AND ".join(clauses), params


@dataclass(frozen=True)
class Page:
    """One page of deviations and the opaque cursor of the next (None at the end)."""

    items: list[dict[str, Any]]
    next_cursor: str | None


def _encode_cursor(sort: str, values: list[Any]) -> str:
    raw = json.dumps({"s": sort, "v": values}, default=str, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


MAX_CURSOR_CHARS = 2048
_INT_RANGES = {"Int64": (-(2**63), 2**63 - 1), "UInt8": (0, 255)}


def _decode_cursor(cursor: str, sort: str) -> list[Any]:
    """The ``[sort value, deviation id]`` of a cursor this API issued for ``sort``, type-checked.

    Every malformed or tampered cursor is a BadQuery (400), never a query that fails in the
    warehouse: the values are checked against the ClickHouse type they are bound as.
    """
    foreign = BadQuery("cursor is not one this API issued (pass next_cursor of a page unchanged)")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise foreign
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, ValueError) as exc:  # UnicodeError is a ValueError
        raise foreign from exc
    if not isinstance(data, dict) or not isinstance(data.get("s"), str):
        raise foreign
    values = data.get("v")
    if not isinstance(values, list) or len(values) != 2:
        raise foreign
    if data["s"] != sort:
        raise BadQuery("cursor belongs to another sort order")
    value, last_id = values
    kind = SORTS[sort.lstrip("-")][1]
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        # bool is an int in Python, and JSON true is no sort value of ours
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise foreign
    elif not isinstance(value, str):
        raise foreign
    if not isinstance(last_id, str):
        raise foreign
    return [value, last_id]


def _site_clause(site: str | None) -> tuple[str, dict[str, Any]]:
    if site is None:
        return "", {}
    return "AND site_id = {site:String}", {"site": site}


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def _row_dicts(columns: tuple[str, ...] | list[str], rows: list[Any]) -> list[dict[str, Any]]:
    return [{c: _iso(v) for c, v in zip(columns, row, strict=True)} for row in rows]


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


@dataclass
class Warehouse:
    """Read access to the warehouse for the API: one client, one lock."""

    client: Client
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking query method in the threadpool (never on the event loop)."""
        return await run_in_threadpool(fn, *args, **kwargs)

    def _query(self, sql: str, params: dict[str, Any] | None = None) -> tuple[tuple[str, ...], list[Any]]:
        try:
            with self._lock:
                result = self.client.query(sql, parameters=params or {})
            rows = [tuple(_utc(v) for v in row) for row in result.result_rows]
            return tuple(result.column_names), rows
        except Exception as exc:  # clickhouse-connect raises several unrelated types
            raise WarehouseError(f"query failed: {exc}") from exc

    # --- time ---------------------------------------------------------------------------------

    def now(self) -> datetime | None:
        """The newest event time in the store (the views' "now"); None when it is empty."""
        _, rows = self._query(
            "SELECT greatest((SELECT max(occurred_at) FROM batch_steps),"
            " (SELECT max(occurred_at) FROM deviations), (SELECT max(occurred_at) FROM module_configs)),"
            " (SELECT count() FROM batch_steps) + (SELECT count() FROM deviations)"
            " + (SELECT count() FROM module_configs)"
        )
        latest, count = rows[0]
        return latest if count else None

    def sites(self) -> list[str]:
        """Every site that has published a module configuration or a batch step."""
        _, rows = self._query(
            "SELECT DISTINCT site_id FROM (SELECT site_id FROM module_configs UNION ALL "
            "SELECT site_id FROM batch_steps) WHERE site_id != '' ORDER BY site_id"
        )
        return [r[0] for r in rows]

    # --- deviations ---------------------------------------------------------------------------

    def deviations(
        self,
        flt: DeviationFilter,
        *,
        sort: str = "-raised_at",
        cursor: str | None = None,
        limit: int = 100,
        full_text: bool = False,
        generation: int | None = None,
    ) -> Page:
        """A page of triaged deviations, in a stable order (``sort`` then deviation id).

        From the latest committed view generation, or from ``generation`` when given (the CSV
        export pins one across its pages).
        """
        descending = sort.startswith("-")
        key = sort.lstrip("-")
        if key not in SORTS:
            raise BadQuery(f"sort must be one of {', '.join(SORTS)} (prefix - for descending)")
        column, kind = SORTS[key]
        where, params = flt.where()
        site_clause, site_params = _site_clause(flt.site)
        params |= site_params
        if generation is not None:
            params["gen"] = generation
        if cursor is not None:
            value, last_id = _decode_cursor(cursor, sort)
            op = "<" if descending else ">"
            where += f" AND ({column}, deviation_id) {op} ({{c_value:{kind}}}, {{c_id:String}})"
            params |= {"c_value": value, "c_id": last_id}
        columns = list(LIST_COLUMNS)
        direction = "DESC" if descending else "ASC"
        sql = (
            f"SELECT {', '.join(f'`{c}`' for c in columns)}, {column} AS _sort FROM ("
            + _triage_view(site_clause, generation)
            + f") WHERE {where} ORDER BY {column} {direction}, deviation_id {direction} "
            f"LIMIT {int(limit) + 1}"
        )
        names, rows = self._query(sql, params)
        more = len(rows) > limit
        rows = rows[:limit]
        items = _row_dicts(names, rows)
        next_cursor = None
        if more and items:
            last = items[-1]
            next_cursor = _encode_cursor(sort, [last.pop("_sort"), last["deviation_id"]])
        for item in items:
            item.pop("_sort", None)
        if full_text and items:
            texts = self._free_text([i["deviation_id"] for i in items])
            for item in items:
                item.update(texts.get(item["deviation_id"], {}))
        return Page(items, next_cursor)

    def deviation_counts(self, flt: DeviationFilter, *, generation: int | None = None) -> dict[str, Any]:
        """The headline counts of every deviation matching ``flt`` (not one page of them).

        ``total`` matching; ``not_closed`` by severity (status OPEN or INVESTIGATING); ``overdue``:
        not closed and past ``due_at`` at the view's as-of time. From the latest committed view
        generation, or ``generation`` when given (the list pins the one its page came from).
        """
        where, params = flt.where()
        site_clause, site_params = _site_clause(flt.site)
        params |= site_params
        if generation is not None:
            params["gen"] = generation
        sql = (
            "SELECT count(), countIf(status != 'CLOSED' AND severity = 'CRITICAL'),"
            " countIf(status != 'CLOSED' AND severity = 'MAJOR'),"
            " countIf(status != 'CLOSED' AND severity = 'MINOR'),"
            " countIf(status != 'CLOSED' AND overdue) FROM ("
            + _triage_view(site_clause, generation)
            + f") WHERE {where}"
        )
        _, rows = self._query(sql, params)
        total, critical, major, minor, overdue = (int(v) for v in rows[0])
        return {
            "total": total,
            "not_closed": {"CRITICAL": critical, "MAJOR": major, "MINOR": minor},
            "overdue": overdue,
        }

    def deviations_with_counts(
        self,
        flt: DeviationFilter,
        *,
        sort: str = "-raised_at",
        cursor: str | None = None,
        limit: int = 100,
        full_text: bool = False,
    ) -> tuple[Page, dict[str, Any]]:
        """A page of deviations and the counts of every match, both from one view generation.

        The generation is pinned for both reads, so a refresh between them cannot make the counts
        disagree with the page; should it be dropped meanwhile (two refreshes), read again.
        """
        for _ in range(3):
            generation = self.committed_generation()
            page = self.deviations(
                flt, sort=sort, cursor=cursor, limit=limit, full_text=full_text, generation=generation
            )
            counts = self.deviation_counts(flt, generation=generation)
            if generation is None:
                return page, counts
            try:
                self._still_kept(generation)
            except ViewMoved:
                continue
            return page, counts
        raise ViewMoved("the triage view kept moving on while the list was read: ask again")

    def _free_text(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Free text and measured facts of these deviations (RAISED; resolution from CLOSED)."""
        _, rows = self._query(
            "SELECT deviation_id, argMinIf(description, occurred_at, transition = 'RAISED') AS description,"
            " argMinIf(raised_by, occurred_at, transition = 'RAISED') AS raised_by,"
            " argMinIf(resolution, occurred_at, transition = 'CLOSED') AS resolution,"
            " argMinIf(observed_value, occurred_at, transition = 'RAISED') AS observed_value,"
            " argMinIf(unit, occurred_at, transition = 'RAISED') AS unit,"
            " argMinIf(limit_low, occurred_at, transition = 'RAISED') AS limit_low,"
            " argMinIf(limit_high, occurred_at, transition = 'RAISED') AS limit_high,"
            " argMinIf(detection_source, occurred_at, transition = 'RAISED') AS detection_source"
            " FROM deviations FINAL WHERE deviation_id IN {ids:Array(String)} GROUP BY deviation_id",
            {"ids": ids},
        )
        return {r[0]: dict(zip(FULL_TEXT_COLUMNS + RAISED_FACT_COLUMNS, r[1:], strict=True)) for r in rows}

    def committed_generation(self) -> int | None:
        """The latest committed view generation (None before the first refresh)."""
        _, rows = self._query("SELECT max(generation), count() FROM view_generations")
        generation, count = rows[0]
        return int(generation) if count else None

    def _still_kept(self, generation: int) -> None:
        """Raise ViewMoved once ``generation``'s rows may have been dropped.

        The projector keeps the committed generation and the one before it and drops a generation
        only after committing the second one after it (views.write_views): while the newest
        committed generation is at most ``generation + 1``, every read of it was complete.
        """
        latest = self.committed_generation() or 0
        if latest > generation + 1:
            raise ViewMoved(
                f"the triage view moved on from generation {generation} to {latest} during the export,"
                " and that generation's rows are gone: run the export again"
            )

    def deviation_pages(
        self, flt: DeviationFilter, *, sort: str = "-raised_at", block: int = 2000
    ) -> Iterator[list[dict[str, Any]]]:
        """Every matching deviation with full text, page by page, all from one view generation.

        The CSV export streams these. Each page is read from the generation committed when the
        first page was read, so the pages are one consistent snapshot (no row twice or missed
        when a refresh moves rows between pages); ViewMoved when that generation was dropped
        before the export finished (WarehouseError on any failed query).
        """
        generation = self.committed_generation()
        if generation is None:
            return
        cursor: str | None = None
        while True:
            page = self.deviations(
                flt, sort=sort, cursor=cursor, limit=block, full_text=True, generation=generation
            )
            self._still_kept(generation)
            yield page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def deviation(self, deviation_id: str, *, window_minutes: int = 120) -> dict[str, Any]:
        """One deviation with its events and batch context.

        The batch's steps, the sensor summaries of its lane around it, and the module configuration in force.
        """
        columns = ", ".join(f"`{c}`" for c in LIST_COLUMNS)
        sql = f"SELECT {columns} FROM (" + _triage_view("") + ") WHERE deviation_id = {deviation_id:String}"
        names, rows = self._query(sql, {"deviation_id": deviation_id})
        if not rows:
            raise NotFound(f"no deviation {deviation_id}")
        item = _row_dicts(names, rows)[0]
        item.update(self._free_text([deviation_id]).get(deviation_id, {}))
        raised_at = rows[0][names.index("raised_at")]
        module_id, lane, batch_id = item["module_id"], item["lane"], item["batch_id"]
        names, rows = self._query(
            "SELECT event_id, transition, occurred_at, raised_by, description, resolution, duration_seconds,"
            " observed_value FROM deviations FINAL WHERE deviation_id = {d:String}"
            " ORDER BY occurred_at, sequence",
            {"d": deviation_id},
        )
        history = _row_dicts(names, rows)
        steps: list[dict[str, Any]] = []
        if batch_id:
            names, rows = self._query(
                "SELECT step, attempt, transition, occurred_at, module_id, lane, product_code,"
                " expected_duration_minutes, failure_reason, performed_by FROM batch_steps FINAL"
                " WHERE batch_id = {b:String} ORDER BY occurred_at, sequence",
                {"b": batch_id},
            )
            steps = _row_dicts(names, rows)
        window = timedelta(minutes=window_minutes)
        names, rows = self._query(
            "SELECT window_start, window_end, parameter, unit, count, min, max, mean, alert_low, alert_high,"
            " action_low, action_high, samples_outside_alert, samples_outside_action"
            # no FINAL: it would merge the whole site's summaries; the window filter leaves a few rows,
            # deduplicated by event id (a replayed copy is identical)
            " FROM (SELECT * FROM sensor_summaries"
            " WHERE site_id = {s:String} AND module_id = {m:String} AND ifNull(lane, 0) = {l:UInt16}"
            " AND window_end >= {t0:DateTime64(6, 'UTC')} AND window_start <= {t1:DateTime64(6, 'UTC')}"
            " LIMIT 1 BY event_id)"
            " ORDER BY parameter, window_start",
            {
                "s": item["site_id"],
                "m": module_id,
                "l": lane or 0,
                "t0": raised_at - window,
                "t1": raised_at + window,
            },
        )
        sensors = _row_dicts(names, rows)
        names, rows = self._query(
            "SELECT occurred_at, module_type, serial_number, lanes, components_kind, components_name,"
            " components_version, components_content_hash, change_reason FROM module_configs FINAL"
            " WHERE module_id = {m:String} AND occurred_at <= {t:DateTime64(6, 'UTC')}"
            " ORDER BY occurred_at DESC LIMIT 1",
            {"m": module_id, "t": raised_at},
        )
        configuration = None
        if rows:
            at, mtype, serial, lanes, kinds, cnames, versions, hashes, reason = rows[0]
            configuration = {
                "occurred_at": _iso(at),
                "module_type": mtype,
                "serial_number": serial,
                "lanes": lanes,
                "change_reason": reason,
                "components": [
                    {"kind": k, "name": n, "version": v, "content_hash": h}
                    for k, n, v, h in zip(kinds, cnames, versions, hashes, strict=True)
                ],
            }
        return item | {
            "history": history,
            "batch_steps": steps,
            "sensor_summaries": sensors,
            "configuration": configuration,
        }

    def deviation_changes(
        self, after: tuple[int, str] | None, site: str | None, *, limit: int = 500, newest: bool = False
    ) -> list[dict[str, Any]]:
        """Rows of the triage view raised or changed after the cursor ``after`` (the live stream).

        In cursor order; with ``newest``, the last ``limit`` of them instead of the first. The
        rows are the list endpoint's (the same view, the same columns), plus ``_cursor``.

        The cursor is ``(changed_at in µs, deviation_id)``; ``changed_at`` is the ingest time of
        the newest event that can change the row's class, severity, status or duplicate_of
        (views.triage_changed_at). It never decreases, so a client resuming from its last event
        id gets every deviation raised or changed since, once a refresh has put it in the view.
        """
        site_clause, params = _site_clause(site)
        where = "1"
        if after is not None:
            where = "(_changed_us, deviation_id) > ({a_us:Int64}, {a_id:String})"
            params |= {"a_us": after[0], "a_id": after[1]}
        columns = ", ".join(f"`{c}`" for c in LIST_COLUMNS)
        direction = "DESC" if newest else "ASC"
        sql = (
            f"SELECT {columns}, _changed_us AS _cursor FROM ("
            + _triage_view(site_clause)
            + f") WHERE {where} ORDER BY _cursor {direction}, deviation_id {direction} LIMIT {int(limit)}"
        )
        names, rows = self._query(sql, params)
        if newest:
            rows.reverse()
        return _row_dicts(names, rows)

    # --- the projector's view tables (atmpnet.warehouse.views; docs/views.md) --------------------

    def view_as_of(self) -> datetime | None:
        """The "now" of the latest committed view generation (None before the first refresh)."""
        _, rows = self._query("SELECT as_of FROM view_generations ORDER BY generation DESC LIMIT 1")
        return rows[0][0] if rows else None

    def capacity(self, site: str | None, days: int = 14) -> dict[str, Any]:
        """Capacity per site, module and lane, from the capacity views.

        Lane states now, utilization by day (busy over busy + idle lane-hours: module downtime is
        unavailable, not idle), batches in progress by step, daily starts, completions and failures,
        the 7-day free-lane forecast, network totals and headroom.
        """
        as_of = self.view_as_of()
        if as_of is None:
            empty: dict[str, Any] = {"as_of": None, "sites": [], "lanes": [], "daily": [], "forecast": []}
            return empty | {"in_progress": [], "totals": None}
        site_clause, params = _site_clause(site)
        names, rows = self._query(
            "SELECT l.site_id AS site_id, l.module_id AS module_id, m.module_type AS module_type,"
            " l.lane AS lane,"
            " lower(l.state) AS state, l.batch_id AS batch_id, l.step AS step, l.since AS since,"
            " l.expected_free_at AS expected_free_at"
            f" FROM (SELECT * FROM capacity_lanes WHERE 1 {site_clause}) AS l"
            " LEFT JOIN drift_modules AS m ON l.module_id = m.module_id"
            " ORDER BY site_id, module_id, lane",
            params,
        )
        lanes = _row_dicts(names, rows)
        first = (as_of - timedelta(days=days - 1)).date()
        names, rows = self._query(
            "SELECT d.site_id AS site_id, toString(d.day) AS date, d.busy AS busy_lane_hours,"
            " d.available AS available_lane_hours,"
            " if(d.available > 0, d.busy / d.available, NULL) AS utilization,"
            " ifNull(s.batches_started, 0) AS starts, ifNull(s.batches_completed, 0) AS completions,"
            " ifNull(s.batches_failed, 0) AS failures"
            " FROM (SELECT site_id, day, sum(busy_hours) AS busy,"
            "   sum(busy_hours + idle_hours) AS available"
            f"   FROM capacity_lane_days WHERE day >= {{first:Date}} {site_clause}"
            "   GROUP BY site_id, day) AS d"
            " LEFT JOIN capacity_site_days AS s ON d.site_id = s.site_id AND d.day = s.day"
            " ORDER BY site_id, date",
            params | {"first": first},
        )
        daily = _row_dicts(names, rows)
        names, rows = self._query(
            "SELECT scope, site_id, lanes_total AS lanes, lanes_busy AS busy, lanes_idle AS idle,"
            " lanes_down AS down, batches_in_progress AS in_progress, headroom, lanes_free_in_7_days,"
            " busy_hours, available_hours,"
            " utilization FROM capacity_totals ORDER BY scope, site_id"
        )
        totals = _row_dicts(names, rows)
        week = (as_of - timedelta(days=6)).date().isoformat()
        per_site = []
        for t in totals:
            if t.pop("scope") != "site" or (site is not None and t["site_id"] != site):
                continue
            last = [d for d in daily if d["site_id"] == t["site_id"] and d["date"] >= week]
            avail = sum(d["available_lane_hours"] for d in last)
            t["utilization_7d"] = sum(d["busy_lane_hours"] for d in last) / avail if avail else None
            per_site.append(t)
        network = next((t for t in totals if t["site_id"] == ""), None)
        if site is not None:  # a site's own totals stand in for the network's
            network = per_site[0] if per_site else None
        names, rows = self._query(
            f"SELECT site_id, step, batches FROM capacity_in_progress WHERE 1 {site_clause}", params
        )
        in_progress = sorted(_row_dicts(names, rows), key=lambda r: (r["site_id"], STEPS.index(r["step"])))
        names, rows = self._query(
            "SELECT site_id, days_ahead AS day, toString(toDate(horizon)) AS date, horizon, lanes_total,"
            f" lanes_free AS free_lanes FROM capacity_forecast WHERE 1 {site_clause} ORDER BY day, site_id",
            params,
        )
        return {
            "as_of": _iso(as_of),
            "sites": per_site,
            "totals": network,
            "lanes": lanes,
            "in_progress": in_progress,
            "daily": daily,
            "forecast": _row_dicts(names, rows),
        }

    def drift(self, site: str | None) -> dict[str, Any]:
        """Configuration drift against each module type's validated baseline, from the drift views.

        Per module its state and components' states; the drift intervals with the batches that ran
        under them (GMP impact); a site x module type x component matrix; version skew across sites
        (with ``site``: across that site's modules only).
        """
        as_of = self.view_as_of()
        site_clause, params = _site_clause(site)
        names, rows = self._query(
            "SELECT site_id, module_id, module_type, state, baseline_id, configured_at, drifted_since"
            f" FROM drift_modules WHERE 1 {site_clause} ORDER BY site_id, module_id",
            params,
        )
        modules = _row_dicts(names, rows)
        _, rows = self._query(
            "SELECT module_id, component, kind, running_version, baseline_version, lower(status)"
            f" FROM drift_components WHERE 1 {site_clause} ORDER BY module_id, component",
            params,
        )
        components: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for module_id, name, kind, version, baseline, state in rows:
            components[module_id].append(
                {"name": name, "kind": kind, "version": version, "baseline_version": baseline, "state": state}
            )
        for m in modules:
            m["components"] = components.get(m["module_id"], [])
        names, rows = self._query(
            "SELECT i.site_id AS site_id, i.module_id AS module_id, i.module_type AS module_type,"
            " i.opened_at AS opened_at, i.closed_at AS closed_at,"
            " arrayMap(c -> splitByString(': ', c)[1], i.components) AS components,"
            " arraySort(groupUniqArrayIf(b.batch_id, b.batch_id != '')) AS batches"
            f" FROM (SELECT * FROM drift_intervals WHERE 1 {site_clause}) AS i"
            " LEFT JOIN drift_impact AS b ON i.module_id = b.module_id AND i.opened_at = b.opened_at"
            " GROUP BY site_id, module_id, module_type, opened_at, closed_at, components"
            " ORDER BY site_id, module_id, opened_at",
            params,
        )
        intervals = _row_dicts(names, rows)
        matrix: dict[tuple[str, str, str], dict[str, Any]] = {}
        for m in modules:
            for c in m["components"]:
                cell = matrix.setdefault(
                    (m["site_id"], m["module_type"], c["name"]),
                    {
                        "site_id": m["site_id"],
                        "module_type": m["module_type"],
                        "component": c["name"],
                        "modules": 0,
                        "drifted": 0,
                        "versions": set(),
                        "batches": set(),
                    },
                )
                cell["modules"] += 1
                cell["drifted"] += int(c["state"] != "in_baseline")
                if c["version"]:
                    cell["versions"].add(c["version"])
        for i in intervals:
            for name in i["components"]:
                found = matrix.get((i["site_id"], i["module_type"], name))
                if found is not None:
                    found["batches"] |= set(i["batches"])
        if site is None:
            _, rows = self._query(
                "SELECT module_type, component, version, sites, modules FROM drift_version_skew"
                " WHERE versions_of_component > 1 ORDER BY module_type, component, version"
            )
        else:
            # limited to a site (site tokens always): the skew among that site's own modules, so
            # nothing about another site's versions or module counts shows through
            _, rows = self._query(
                "SELECT module_type, component, version, 1 AS sites, modules FROM ("
                " SELECT module_type, component, running_version AS version,"
                "  uniqExact(module_id) AS modules,"
                "  count() OVER (PARTITION BY module_type, component) AS versions"
                f" FROM drift_components WHERE running_version IS NOT NULL {site_clause}"
                " GROUP BY module_type, component, version)"
                " WHERE versions > 1 ORDER BY module_type, component, version",
                params,
            )
        skew: dict[tuple[str, str], dict[str, dict[str, int]]] = defaultdict(dict)
        for mtype, name, version, n_sites, n_modules in rows:
            skew[(mtype, name)][version] = {"sites": int(n_sites), "modules": int(n_modules)}
        return {
            "as_of": _iso(as_of),
            "modules": modules,
            "matrix": [
                c | {"versions": sorted(c["versions"]), "batches": sorted(c["batches"])}
                for c in sorted(
                    matrix.values(), key=lambda c: (c["module_type"], c["component"], c["site_id"])
                )
            ],
            "intervals": intervals,
            "version_skew": [
                {"module_type": t, "component": n, "versions": vs} for (t, n), vs in sorted(skew.items())
            ],
        }

    def performance(self, site: str | None) -> dict[str, Any]:
        """Comparative performance per site and step with network medians, from the performance view.

        Per site: batches started / completed / failed, success rate with its 95% Wilson interval,
        deviations per batch, sensor control, throughput per lane-day, end-to-end cycle time (p50 and a
        histogram in days); per site and step: cycle time p50 and p90 against the network median. A
        site token sees its own rows and the network medians only.
        """
        as_of = self.view_as_of()
        _, rows = self._query(
            "SELECT site_id, step, metric, value, n, ci_low, ci_high, network_median FROM performance"
        )
        site_metrics: dict[str, dict[str, Any]] = defaultdict(dict)
        network: dict[str, Any] = {}
        steps: dict[tuple[str, str], dict[str, Any]] = {}
        for s, step, metric, value, n, lo, hi, net in rows:
            if step == "":
                site_metrics[s][metric] = value
                site_metrics[s][f"{metric}_n"] = n
                if lo is not None:
                    site_metrics[s][f"{metric}_interval"] = [lo, hi]
                network[metric] = net
            elif metric.startswith("cycle_time"):
                row = steps.setdefault((s, step), {"site_id": s, "step": step})
                key = "p50_hours" if metric == "cycle_time_p50_hours" else "p90_hours"
                row[key] = value
                row[f"network_median_{key}"] = net
                row["count"] = n
        edges = [float(d) for d in range(0, 31, 2)]
        _, rows = self._query(
            "SELECT site_id, countIf(started_at IS NOT NULL), countIf(outcome = 'COMPLETED'),"
            " countIf(outcome = 'FAILED'),"
            " quantileExactIf(0.5)(toFloat64(completed_at - started_at) / 86400, outcome = 'COMPLETED'),"
            " groupArrayIf(toFloat64(completed_at - started_at) / 86400, outcome = 'COMPLETED')"
            " FROM batch_status GROUP BY site_id ORDER BY site_id"
        )
        sites = []
        for s, started, done, failed, p50, durations in rows:
            m = site_metrics.get(s, {})
            sites.append(
                {
                    "site_id": s,
                    "batches_started": int(started),
                    "batches_completed": int(done),
                    "batches_failed": int(failed),
                    "success_rate": m.get("success_rate"),
                    "success_interval": m.get("success_rate_interval"),
                    "deviations_per_batch": m.get("deviations_per_batch"),
                    "sensor_control": m.get("sensor_control"),
                    "throughput_per_lane_day": m.get("throughput_per_lane_day"),
                    "cycle_time_days_p50": p50 if done else None,
                    "cycle_time_histogram": _histogram(list(durations), edges),
                }
            )
        network["cycle_time_days_p50"] = median(
            [x["cycle_time_days_p50"] for x in sites if x["cycle_time_days_p50"]]
        )
        step_rows = sorted(steps.values(), key=lambda r: (r["site_id"], STEPS.index(r["step"])))
        if site is not None:
            sites = [x for x in sites if x["site_id"] == site]
            step_rows = [r for r in step_rows if r["site_id"] == site]
        return {
            "as_of": _iso(as_of),
            "network": network,
            "sites": sites,
            "steps": step_rows,
            "histogram_edges_days": edges,
        }

    # --- integrity, attribution, digest (issue 7, docs/integrity.md) ---------------------------

    def completeness(self, site: str | None) -> dict[str, Any]:
        """Per site: expected, received and on-time events (the ``completeness`` view), with findings."""
        clause, params = _site_clause(site)
        cols, rows = self._query(
            "SELECT site_id, streams, expected, received, missing, on_time, skewed, received_share,"
            f" on_time_share FROM completeness WHERE site_id != '' {clause} ORDER BY site_id",
            params,
        )
        sites = _row_dicts(cols, rows)
        # settled findings only (those raised as deviations); the rest may still close by
        # themselves while a topic catches up, so they are counted apart as in flight
        _, counts = self._query(
            "SELECT site_id, kind, settled, count() FROM integrity_findings WHERE site_id != ''"
            f" {clause} GROUP BY site_id, kind, settled ORDER BY site_id, kind",
            params,
        )
        by_site: dict[str, dict[str, int]] = defaultdict(dict)
        in_flight: dict[str, int] = defaultdict(int)
        for site_id, kind, settled, n in counts:
            if settled:
                by_site[site_id][kind] = by_site[site_id].get(kind, 0) + int(n)
            else:
                in_flight[site_id] += int(n)
        for row in sites:
            row["findings"] = by_site.get(row["site_id"], {})
            row["findings_in_flight"] = in_flight.get(row["site_id"], 0)
        expected = sum(r["expected"] for r in sites)
        totals = {
            "expected": expected,
            "received": sum(r["received"] for r in sites),
            "on_time": sum(r["on_time"] for r in sites),
            "findings": sum(sum(r["findings"].values()) for r in sites),
        }
        totals["received_share"] = totals["received"] / expected if expected else 1.0
        totals["on_time_share"] = totals["on_time"] / expected if expected else 1.0
        return {"as_of": _iso(self.view_as_of()), "sites": sites, "totals": totals}

    def integrity_findings(
        self, site: str | None, batch: str | None = None, finding_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Integrity findings of the view, newest evidence first."""
        clause, params = _site_clause(site)
        if batch is not None:
            clause += " AND batch_id = {batch:String}"
            params["batch"] = batch
        if finding_id is not None:
            clause += " AND finding_id = {fid:String}"
            params["fid"] = finding_id
        cols, rows = self._query(
            "SELECT finding_id, kind, severity, alarm_code, site_id, module_id, stream, lane, batch_id,"
            " first_at, last_at, sequences, evidence, message FROM integrity_findings"
            f" WHERE 1 {clause} ORDER BY last_at DESC, finding_id",
            params,
        )
        return _row_dicts(cols, rows)

    def _ids(self, sql: str, params: dict[str, Any]) -> list[str]:
        _, rows = self._query(sql, params)
        return [str(r[0]) for r in rows]

    def attribution(self, view: str, key: str) -> dict[str, Any]:
        """The site and the event ids behind one view row (``ATTRIBUTION`` says each view's key)."""
        if view not in ATTRIBUTION:
            raise BadQuery(f"unknown view {view!r}: one of {', '.join(sorted(ATTRIBUTION))}")
        site, ids, what = getattr(self, "_attr_" + view)(key)
        truncated = len(ids) > MAX_ATTRIBUTION_IDS
        return {
            "view": view,
            "key": key,
            "site_id": site,
            "events": what,
            "event_ids": ids[:MAX_ATTRIBUTION_IDS],
            "count": len(ids),
            "truncated": truncated,
        }

    def _one(self, sql: str, params: dict[str, Any], what: str) -> tuple[Any, ...]:
        _, rows = self._query(sql, params)
        if not rows:
            raise NotFound(f"no {what}")
        return tuple(rows[0])

    def _batch_step_ids(self, batch: str) -> list[str]:
        return self._ids(
            "SELECT toString(event_id) FROM batch_steps FINAL WHERE batch_id = {b:String}"
            " ORDER BY occurred_at, event_id",
            {"b": batch},
        )

    def _attr_batch_status(self, key: str) -> tuple[str, list[str], str]:
        (site,) = self._one("SELECT site_id FROM batch_status WHERE batch_id = {b:String}", {"b": key}, key)
        return site, self._batch_step_ids(key), "the batch's step events"

    def _attr_capacity_lanes(self, key: str) -> tuple[str, list[str], str]:
        module, _, lane = key.rpartition("/")
        site, batch, state = self._one(
            "SELECT site_id, batch_id, state FROM capacity_lanes WHERE module_id = {m:String}"
            " AND toString(lane) = {l:String}",
            {"m": module, "l": lane},
            f"lane {key}",
        )
        ids = self._batch_step_ids(batch) if batch else []
        if state == "DOWN":  # the open whole-module equipment deviation(s) that make it down
            ids += self._ids(
                "SELECT toString(event_id) FROM deviations FINAL WHERE module_id = {m:String}"
                " AND lane IS NULL AND batch_id IS NULL AND startsWith(ifNull(alarm_code, ''), 'EQP-')"
                " ORDER BY occurred_at, event_id",
                {"m": module},
            )
        return site, ids, "the occupying batch's step events (and the module's downtime deviations)"

    def _attr_deviation_triage(self, key: str) -> tuple[str, list[str], str]:
        (site,) = self._one(
            "SELECT site_id FROM deviation_triage WHERE deviation_id = {d:String}", {"d": key}, key
        )
        ids = self._ids(
            "SELECT toString(event_id) FROM deviations FINAL WHERE deviation_id = {d:String}"
            " ORDER BY occurred_at, event_id",
            {"d": key},
        )
        return site, ids, "the deviation's RAISED, UPDATED and CLOSED events"

    def _attr_drift_intervals(self, key: str) -> tuple[str, list[str], str]:
        module, _, opened = key.partition("@")
        site, module_type, opened_at, closed_at = self._one(
            "SELECT site_id, module_type, opened_at, closed_at FROM drift_intervals"
            " WHERE module_id = {m:String} AND opened_at = parseDateTime64BestEffort({o:String}, 6, 'UTC')",
            {"m": module, "o": opened},
            f"drift interval {key}",
        )
        end = closed_at or datetime.max.replace(tzinfo=UTC)
        params = {"m": module, "t": module_type, "o": opened_at, "c": end}
        # the configuration and baseline in force when it opened, and every change up to its close
        configs = self._ids(
            "SELECT toString(event_id) FROM module_configs FINAL WHERE module_id = {m:String}"
            " AND occurred_at <= {c:DateTime64(6, 'UTC')} AND occurred_at >= (SELECT max(occurred_at)"
            " FROM module_configs FINAL WHERE module_id = {m:String}"
            " AND occurred_at <= {o:DateTime64(6, 'UTC')})"
            " ORDER BY occurred_at, event_id",
            params,
        )
        baselines = self._ids(
            "SELECT toString(event_id) FROM baselines FINAL WHERE module_type = {t:String}"
            " AND effective_from <= {c:DateTime64(6, 'UTC')} AND effective_from >= ifNull((SELECT"
            " max(effective_from) FROM baselines FINAL WHERE module_type = {t:String}"
            " AND effective_from <= {o:DateTime64(6, 'UTC')}), toDateTime64(0, 6, 'UTC'))"
            " ORDER BY effective_from, event_id",
            params,
        )
        return site, configs + baselines, "the module's configurations and its type's baselines"

    def _attr_performance(self, key: str) -> tuple[str, list[str], str]:
        site, step, metric = [*key.split("/"), "", ""][:3]
        params = {"s": site, "st": step}
        step_clause = "AND step = {st:String}" if step else ""
        if metric == "sensor_control":
            ids = self._ids(
                "SELECT toString(event_id) FROM sensor_summaries FINAL WHERE site_id = {s:String}"
                f" ORDER BY occurred_at, event_id LIMIT {MAX_ATTRIBUTION_IDS + 1}",
                params,
            )
            return site, ids, "the site's sensor summaries"
        if metric == "deviations_per_batch":
            ids = self._ids(
                "SELECT toString(event_id) FROM deviations FINAL WHERE site_id = {s:String}"
                f" AND transition = 'RAISED' AND batch_id IS NOT NULL {step_clause}"
                " ORDER BY occurred_at, event_id",
                params,
            )
            ids += self._ids(
                "SELECT toString(event_id) FROM batch_steps FINAL WHERE site_id = {s:String}"
                " AND step = if({st:String} = '', 'APHERESIS_RECEIPT', {st:String})"
                " AND transition = 'STARTED'"
                " ORDER BY occurred_at, event_id",
                params,
            )
            return site, ids, "the raised deviations and the batch starts they are divided by"
        ids = self._ids(
            f"SELECT toString(event_id) FROM batch_steps FINAL WHERE site_id = {{s:String}} {step_clause}"
            " ORDER BY occurred_at, event_id",
            params,
        )
        return site, ids, "the site's batch step events" + (f" of {step}" if step else "")

    def _attr_integrity_findings(self, key: str) -> tuple[str, list[str], str]:
        site, evidence = self._one(
            "SELECT site_id, evidence FROM integrity_findings WHERE finding_id = {f:String}",
            {"f": key},
            f"finding {key}",
        )
        return site, [str(e) for e in evidence], "the finding's evidence"

    def _attr_completeness(self, key: str) -> tuple[str, list[str], str]:
        self._one("SELECT site_id FROM completeness WHERE site_id = {s:String}", {"s": key}, key)
        ids = self._ids(
            "SELECT toString(event_id) FROM (SELECT event_id, occurred_at FROM batch_steps FINAL"
            " WHERE site_id = {s:String} UNION ALL SELECT event_id, occurred_at FROM deviations FINAL"
            " WHERE site_id = {s:String} AND producer_kind != 'PROCESSOR' UNION ALL SELECT event_id,"
            " occurred_at FROM module_configs FINAL WHERE site_id = {s:String} UNION ALL SELECT event_id,"
            " occurred_at FROM sensor_summaries FINAL WHERE site_id = {s:String})"
            f" ORDER BY occurred_at, event_id LIMIT {MAX_ATTRIBUTION_IDS + 1}",
            {"s": key},
        )
        return key, ids, "the site's events received (the count is exact up to the limit)"

    def batch_events(self, batch_id: str) -> tuple[str | None, list[bytes], list[bytes]]:
        """The site and the stored bytes of a batch's step events and deviation events."""
        out: dict[str, list[tuple[str, bytes]]] = {}
        for table in ("batch_steps", "deviations"):
            try:
                with self._lock:
                    result = self.client.query(
                        f"SELECT site_id, raw FROM {table} FINAL WHERE batch_id = {{b:String}}",
                        parameters={"b": batch_id},
                        column_formats={"raw": "bytes"},
                    )
            except Exception as exc:  # clickhouse-connect raises several unrelated types
                raise WarehouseError(f"query failed: {exc}") from exc
            out[table] = [(r[0], r[1]) for r in result.result_rows]
        steps, devs = out["batch_steps"], out["deviations"]
        site = steps[0][0] if steps else (devs[0][0] if devs else None)
        return site, [r[1] for r in steps], [r[1] for r in devs]

    def digest_context(self, batch_id: str, site: str) -> dict[str, Any]:
        """Triage of the batch's deviations, drift intervals of its modules, findings of its site."""
        _, triage_rows = self._query(
            "SELECT deviation_id, severity, deviation_class, status FROM deviation_triage"
            " WHERE batch_id = {b:String}",
            {"b": batch_id},
        )
        _, drift_rows = self._query(
            "SELECT module_id, opened_at, closed_at FROM drift_intervals WHERE module_id IN"
            " (SELECT DISTINCT module_id FROM batch_steps FINAL WHERE batch_id = {b:String})",
            {"b": batch_id},
        )
        return {
            "triage": {r[0]: {"severity": r[1], "class": r[2], "status": r[3]} for r in triage_rows},
            "drift": [(r[0], r[1], r[2]) for r in drift_rows],
            "findings": self.integrity_findings(site),
        }


# view -> what its attribution key is
ATTRIBUTION: dict[str, str] = {
    "batch_status": "batch id",
    "capacity_lanes": "module_id/lane",
    "deviation_triage": "deviation id",
    "drift_intervals": "module_id@opened_at (ISO 8601)",
    "performance": "site_id/step/metric (step empty for the site as a whole)",
    "integrity_findings": "finding id",
    "completeness": "site id",
}
MAX_ATTRIBUTION_IDS = 10_000


def _utc(value: Any) -> Any:
    # every time column is UTC; some aggregates come back without their zone
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _histogram(values: list[float], edges: list[float]) -> list[int]:
    counts = [0] * len(edges)
    for v in values:
        index = sum(1 for e in edges if v >= e) - 1
        counts[max(0, min(index, len(edges) - 1))] += 1
    return counts
