# ruff: noqa: S608, E501 - generator SQL from constants only, kept one clause per line for reading
"""Latency of every dashboard query over ten million events in the event store (issue 5).

Generates a year of a network in a fresh chDB data directory under /tmp with ClickHouse-side
``INSERT ... SELECT FROM numbers()`` (not through Kafka): 8 sites x 6 modules x 4 lanes, about
5,800 batches (9 steps each, ~5% failing, the rest finished or in progress), 30,000
deviations with realistic class mix and lifecycles, module configurations with software
rollouts against baselines, and sensor summaries for the remainder up to the event count.
Then times each query the API makes (``atmpnet.warehouse.queries.Warehouse``) and reports p50
and p95, with a baseline measured in the same run: a full scan of every event (``count()``
over all five tables with FINAL), the cheapest query that still touches all ten million rows.

    .venv/bin/python tools/bench_queries.py --events 10000000 --runs 30
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chdb
import clickhouse_connect
from atmpnet.settings import Settings
from atmpnet.warehouse import views
from atmpnet.warehouse.connection import connect
from atmpnet.warehouse.migrations import apply_migrations
from atmpnet.warehouse.queries import DeviationFilter, Warehouse
from atmpnet.warehouse.views import refresh_views

SITES, MODULES, LANES = 8, 6, 4
LANES_TOTAL = SITES * MODULES * LANES
START = "2025-11-01 00:00:00"
DAYS = 365
BATCH_SPACING_H = 12 * 24  # a lane starts a batch every 12 days (on-module time ~11 days)
DEVIATIONS = 30_000

COMMON = (
    "event_id, site_id, module_id, lane, batch_id, occurred_at, published_at, sequence, producer_kind,"
    " producer_id, producer_software_version, schema_version, schema_id, topic, `partition`, `offset`,"
    " ingested_at, traceparent, raw"
)


def common(site: str, module: str, lane: str, batch: str, at: str, topic: str) -> str:
    """SELECT expressions of the common columns."""
    return (
        f"generateUUIDv4(number), {site}, {module}, {lane}, {batch}, {at}, {at} + toIntervalSecond(1),"
        f" number + 1, 'SIMULATOR', 'bench', NULL, 1, 101, '{topic}', 0, number, now64(6), NULL, ''"
    )


SITE = "concat('site-', leftPad(toString(intDiv(lg, 24) + 1), 2, '0'))"
MODULE = "concat('m-', toString(intDiv(lg, 24) + 1), '-', toString(intDiv(lg, 4) % 6 + 1))"
LANE = "toUInt16(lg % 4 + 1)"


def generate(client: Any, events: int) -> dict[str, int]:
    """Fill the event store; return rows per table."""
    end = f"toDateTime64('{START}', 6, 'UTC') + toIntervalDay({DAYS})"
    batches = LANES_TOTAL * (DAYS * 24 // BATCH_SPACING_H + 1)  # the last ones still in progress
    # batch steps: per batch the nine steps with randomized durations; ~5% fail at a random step
    client.command(
        f"INSERT INTO batch_steps ({COMMON}, transition, step, product_code, attempt,"
        " expected_duration_minutes, results_viable_cell_count, results_viability_percent, results_volume_ml,"
        " failure_reason, performed_by) "
        f"SELECT {common(SITE, MODULE, LANE, 'batch', 'at', 'atmp.batch-steps.v1')},"
        " multiIf(e % 2 = 0, 'STARTED', i = fail_step, 'FAILED', 'COMPLETED'), steps[i + 1], 'CART-CD19', 1,"
        " toInt32(base[i + 1] * 60), NULL, NULL, NULL, if(e % 2 = 1 AND i = fail_step, 'viability', NULL), NULL"
        " FROM (SELECT b * 18 + e AS number, b, lg, batch, e, intDiv(e, 2) AS i, fail_step, steps, base,"
        "   start + toIntervalSecond(if(e % 2 = 0, ends[i + 1] - durs[i + 1], ends[i + 1])) AS at"
        "  FROM (SELECT number AS b, b % {lanes} AS lg, concat('B-', toString(b)) AS batch,"
        "    toDateTime64('{start}', 6, 'UTC') + toIntervalSecond(intDiv(b, {lanes}) * {spacing}"
        "      + cityHash64(b) % 86400) AS start,"
        "    [12, 20, 24, 48, 120, 24, 12, 12, 48] AS base,"
        "    ['APHERESIS_RECEIPT', 'SELECTION', 'ACTIVATION', 'TRANSDUCTION', 'EXPANSION', 'HARVEST',"
        "     'FORMULATION', 'CRYOPRESERVATION', 'QC_RELEASE'] AS steps,"
        "    arrayMap(k -> toUInt32(base[k + 1] * 3600 * (0.8 + (cityHash64(b, k) % 1000) / 2500)), range(9)) AS durs,"
        "    arrayCumSum(durs) AS ends,"
        "    if(cityHash64(b, 'fail') % 100 < 5, cityHash64(b, 'at') % 8, 99) AS fail_step"
        "   FROM numbers({batches})) ARRAY JOIN range(18) AS e"
        "  WHERE intDiv(e, 2) <= fail_step) WHERE at <= {end}".format(
            lanes=LANES_TOTAL, start=START, spacing=BATCH_SPACING_H * 3600, batches=batches, end=end
        )
    )
    # deviations: class mix by alarm code; 80% closed, half of them updated first
    client.command(
        f"INSERT INTO deviations ({COMMON}, deviation_id, transition, step, parameter, observed_value, unit,"
        " limit_low, limit_high, duration_seconds, detection_source, raised_by, alarm_code, description,"
        " resolution) "
        f"SELECT {common(SITE, MODULE, 'lane_n', 'batch_n', 'at', 'atmp.deviations.v1')},"
        " dev, tr, step_n, param, if(param IS NULL, NULL, 39.2), if(param IS NULL, NULL, 'Cel'),"
        " if(param IS NULL, NULL, 36.0), if(param IS NULL, NULL, 38.0), dur, 'SYSTEM', 'alarm-engine', code,"
        " 'generated', if(tr = 'CLOSED', 'fixed', NULL)"
        " FROM (SELECT d * 3 + indexOf(transitions, tr) AS number, d, lg, dev, code, param, dur, tr, step_n,"
        "   if(module_level, NULL, toUInt16(lg % 4 + 1)) AS lane_n,"
        "   if(module_level, NULL, concat('B-', toString(b))) AS batch_n,"
        "   raised + toIntervalSecond(if(tr = 'RAISED', 0, if(tr = 'UPDATED', 3600, 3600 * (2 + d % 200)))) AS at"
        "  FROM (SELECT number AS d, cityHash64(d) % {batches} AS b, b % {lanes} AS lg,"
        "    concat('DEV-', toString(d)) AS dev,"
        "    ['PRC-T1', 'PRC-DO', 'EQP-PUMP', 'ENV-RH', 'DAT-GAP', 'SNS-NOISE', 'SNS-DRIFT', ''][d % 8 + 1] AS code0,"
        "    if(code0 = '', NULL, code0) AS code,"
        "    if(code0 IN ('PRC-T1', 'SNS-NOISE', 'SNS-DRIFT', ''), 'temperature',"
        "      if(code0 = 'PRC-DO', 'dissolved_oxygen', NULL)) AS param,"
        "    if(startsWith(code0, 'PRC'), toFloat64(cityHash64(d, 'dur') % 3600), NULL) AS dur,"
        "    code0 = 'EQP-PUMP' AND d % 16 = 2 AS module_level,"
        "    ['SELECTION', 'ACTIVATION', 'TRANSDUCTION', 'EXPANSION', 'HARVEST', 'FORMULATION'][d % 6 + 1] AS step_n,"
        "    toDateTime64('{start}', 6, 'UTC') + toIntervalSecond(intDiv(b, {lanes}) * {spacing}"
        "      + 86400 + cityHash64(d, 'r') % 777600) AS raised,"
        "    arrayFilter(t -> t != '', ['RAISED', if(d % 10 < 4, 'UPDATED', ''), if(d % 10 < 8, 'CLOSED', '')])"
        "      AS transitions"
        "   FROM numbers({deviations})) ARRAY JOIN transitions AS tr) WHERE at <= {end}".format(
            batches=batches,
            lanes=LANES_TOTAL,
            start=START,
            spacing=BATCH_SPACING_H * 3600,
            deviations=DEVIATIONS,
            end=end,
        )
    )
    # configurations: every module every 2 weeks; control software rolls out in waves and some
    # modules lag on unvalidated versions for a while
    modules = SITES * MODULES
    client.command(
        f"INSERT INTO module_configs ({COMMON}, module_type, serial_number, lanes, components_kind,"
        " components_name, components_version, components_content_hash, change_reason) "
        f"SELECT {common(SITE, MODULE, 'NULL', 'NULL', 'at', 'atmp.module-configs.v1')},"
        " concat('type-', toString(intDiv(lg, 4) % 3)), concat('SN-', toString(lg)), 4,"
        " ['CONTROL_SOFTWARE', 'FIRMWARE', 'RECIPE'], ['controller', 'pump-fw', 'recipe'],"
        " [ctl, '2.0.7', 'R12'], [hex(SHA256(ctl)), hex(SHA256('2.0.7')), hex(SHA256('R12'))], 'rollout'"
        " FROM (SELECT number, (number % {modules}) * 4 AS lg, intDiv(number, {modules}) AS wave,"
        "   toDateTime64('{start}', 6, 'UTC') + toIntervalDay(wave * 14) + toIntervalHour(number % 48) AS at,"
        "   concat('4.', toString(intDiv(wave, 4) + if(cityHash64(number) % 10 = 0, 1, 0)), '.0') AS ctl"
        "  FROM numbers({n}))".format(modules=modules, start=START, n=modules * (DAYS // 14))
    )
    client.command(
        f"INSERT INTO baselines ({COMMON}, baseline_id, module_type, components_kind, components_name,"
        " components_version, components_content_hash, approved_by, approved_at, effective_from,"
        " change_reference) "
        f"SELECT {common(chr(39) * 2, 'NULL', 'NULL', 'NULL', 'at', 'atmp.baselines.v1')},"
        " concat('VB-', toString(number)), concat('type-', toString(number % 3)),"
        " ['CONTROL_SOFTWARE', 'FIRMWARE', 'RECIPE'], ['controller', 'pump-fw', 'recipe'], [ctl, '2.0.7', 'R12'],"
        " [hex(SHA256(ctl)), hex(SHA256('2.0.7')), hex(SHA256('R12'))], 'qa', at, at, NULL"
        " FROM (SELECT number, toDateTime64('{start}', 6, 'UTC') + toIntervalDay(intDiv(number, 3) * 56) AS at,"
        "   concat('4.', toString(intDiv(number, 3)), '.0') AS ctl FROM numbers({n}))".format(
            start=START, n=3 * (DAYS // 56 + 1)
        )
    )
    so_far = sum(
        int(client.query(f"SELECT count() FROM {t}").result_rows[0][0])
        for t in ("batch_steps", "deviations", "module_configs", "baselines")
    )
    sensors = max(0, events - so_far)
    per_window = LANES_TOTAL * 4
    window_s = DAYS * 86400 // max(1, sensors // per_window)
    window_end = f"ws + toIntervalSecond({window_s})"
    client.command(
        f"INSERT INTO sensor_summaries ({COMMON}, window_start, window_end, parameter, unit, `count`, `min`,"
        " `max`, mean, stddev, `last`, alert_low, alert_high, action_low, action_high, samples_outside_alert,"
        " samples_outside_action) "
        f"SELECT {common(SITE, MODULE, LANE, 'NULL', window_end, 'atmp.sensor-summaries.v1')},"
        " ws, ws + toIntervalSecond({w}), ['temperature', 'ph', 'dissolved_oxygen', 'co2'][p + 1], 'u', 60,"
        " 36.5, 37.5, 37.0, 0.2, 37.0, 36.0, 38.0, 35.5, 38.5, out, 0"
        " FROM (SELECT number, number % {lanes} AS lg, intDiv(number, {lanes}) % 4 AS p,"
        "   toDateTime64('{start}', 6, 'UTC') + toIntervalSecond(intDiv(number, {pw}) * {w}) AS ws,"
        "   if(cityHash64(number) % 50 = 0, toInt64(cityHash64(number, 'o') % 60), 0) AS out"
        "  FROM numbers({n}))".format(lanes=LANES_TOTAL, start=START, pw=per_window, w=window_s, n=sensors)
    )
    return {
        t: int(client.query(f"SELECT count() FROM {t}").result_rows[0][0])
        for t in ("batch_steps", "sensor_summaries", "deviations", "module_configs", "baselines")
    }


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float, float]:
    """p50, p95 and max in milliseconds over ``runs`` calls after one warm-up."""
    fn()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples), p95, samples[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="Keep the data directory.")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="atmpnet-bench-queries-"))
    try:
        client = connect(Settings(data_dir=data_dir), "bench")
        apply_migrations(client)
        t = time.perf_counter()
        rows = generate(client, args.events)
        print(f"generated {sum(rows.values()):,} events in {time.perf_counter() - t:.1f}s: {rows}")
        t = time.perf_counter()
        while (
            client.query("SELECT count() FROM system.merges").result_rows[0][0]
            and time.perf_counter() - t < 300
        ):
            time.sleep(1)  # let background merges of the bulk insert settle: the steady state is measured
        print(f"merges settled after {time.perf_counter() - t:.0f}s", flush=True)
        t = time.perf_counter()
        # the synthetic store numbers sequences across modules, not per stream (every stream would
        # look gapped and go through the integrity rules whole); the integrity views have their
        # own benchmark (bench_integrity.py), so this refresh leaves their input out
        original = views.load_integrity_input
        views.load_integrity_input = lambda _client: ((), (), {}, {})  # type: ignore[assignment]
        try:
            refresh_views(client, reason="bench")
        finally:
            views.load_integrity_input = original
        refresh_s = time.perf_counter() - t
        print(f"views refreshed (atmpnet.warehouse.views, once) in {refresh_s:.1f}s", flush=True)
        wh = Warehouse(client)
        first = wh.deviations(DeviationFilter(), limit=100)
        some = first.items[0]["deviation_id"]
        site = "site-03"
        changes = wh.deviation_changes(None, None, limit=2, newest=True)
        tip = (int(changes[-1]["_cursor"]), str(changes[-1]["deviation_id"])) if changes else None
        # a client one deviation behind: the poll reads the one changed row from the triage view
        one_module = (int(changes[0]["_cursor"]), str(changes[0]["deviation_id"])) if changes else None
        queries: list[tuple[str, Callable[[], Any]]] = [
            (
                "baseline: count() of every event (FINAL)",
                lambda: [
                    client.query(f"SELECT count() FROM {t} FINAL").result_rows
                    for t in ("batch_steps", "sensor_summaries", "deviations", "module_configs", "baselines")
                ],
            ),
            (
                "deviations: first page, newest first (100)",
                lambda: wh.deviations(DeviationFilter(), limit=100),
            ),
            (
                "deviations: first page with its headline counts (the API's list)",
                lambda: wh.deviations_with_counts(DeviationFilter(), limit=100),
            ),
            (
                "deviations: next page by cursor",
                lambda: wh.deviations(DeviationFilter(), cursor=first.next_cursor),
            ),
            (
                "deviations: site + severity + open",
                lambda: wh.deviations(DeviationFilter(site=site, severity="MAJOR", status="OPEN"), limit=100),
            ),
            (
                "deviations: by severity, batch filter",
                lambda: wh.deviations(DeviationFilter(batch="B-1234"), sort="severity"),
            ),
            ("deviation detail with batch context", lambda: wh.deviation(some)),
            ("live stream poll (nothing new)", lambda: wh.deviation_changes(tip, None)),
            ("live stream poll (one deviation behind)", lambda: wh.deviation_changes(one_module, None)),
            ("capacity (network)", lambda: wh.capacity(None)),
            ("capacity (one site)", lambda: wh.capacity(site)),
            ("drift (network)", lambda: wh.drift(None)),
            ("performance (network)", lambda: wh.performance(None)),
        ]
        results = []
        for name, fn in queries:
            p50, p95, worst = timed(fn, args.runs)
            results.append((name, p50, p95, worst))
            print(f"{name:<48} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   max {worst:8.1f} ms", flush=True)
        base = results[0][1]
        print("\n| query | p50 ms | p95 ms | p50 vs baseline |")
        print("|---|---:|---:|---:|")
        for name, p50, p95, _ in results:
            print(f"| {name} | {p50:.1f} | {p95:.1f} | {p50 / base:.2f}x |")
        print(
            f"\npython {platform.python_version()}, chdb {chdb.__version__}, clickhouse-connect"
            f" {clickhouse_connect.__version__}, engine {client.query('SELECT version()').result_rows[0][0]},"
            f" {platform.machine()}, {args.runs} runs per query; view refresh {refresh_s:.1f}s"
        )
        client.close()
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"data kept in {data_dir}")


if __name__ == "__main__":
    main()
