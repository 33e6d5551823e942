"""Cost of one view refresh (full recompute from the event store) as the stored history grows.

Simulated networks of 4 sites (60-minute sensor windows) are written straight into an embedded
chDB event store; each refresh is timed against a baseline measured in the same run on the same
store: one FINAL scan counting every stored event (the least any projection of the whole store
must read). Then the one aggregate whose cost grows with sensor volume (sensor control) is
timed on synthetic sensor rows.

    python tools/bench_views.py [--sensor-rows 2000000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from atmpnet.contract.events import Event
from atmpnet.settings import Settings
from atmpnet.site.simulator import NetworkConfig, Simulation
from atmpnet.warehouse.connection import connect
from atmpnet.warehouse.event_store import TABLES, StoredEvent, insert_events
from atmpnet.warehouse.migrations import apply_migrations
from atmpnet.warehouse.views import compute_views, load_facts, refresh_views
from clickhouse_connect.driver.client import Client

SENSOR_SQL = (
    "SELECT site_id, sum(`count`), sum(samples_outside_alert), count(), max(occurred_at)"
    " FROM sensor_summaries FINAL GROUP BY site_id"
)


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sensor-rows", type=int, default=2_000_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-views-"))
    settings = Settings(data_dir=root)
    print(f"# {platform.machine()}, Python {platform.python_version()}")
    print("| history | events | refresh (s) | of which rules (s) | baseline FINAL count (s) | ratio |")
    print("|---|---|---|---|---|---|")
    for days in (7, 14, 30):
        client = connect(settings, f"views_{days}")
        apply_migrations(client)
        events = list(
            Simulation(NetworkConfig(sites=4, days=days, seed=1, sensor_window_minutes=60)).events()
        )
        by_type: dict[type[Event], list[StoredEvent]] = {}
        for e in events:
            by_type.setdefault(type(e), []).append(StoredEvent(e, 0, type(e).TOPIC, 0, 0, b""))
        insert_events(client, by_type, datetime.now(UTC))
        refresh = timed(partial(refresh_views, client))
        rules = timed(partial(compute_views, load_facts(client)))

        def scan(c: Client = client) -> None:
            for table in TABLES.values():
                c.query(f"SELECT count() FROM {table} FINAL")  # noqa: S608 (constant names)

        baseline = timed(scan)
        print(
            f"| {days} days | {len(events):,} | {refresh:.3f} | {rules:.3f} | {baseline:.3f} "
            f"| {refresh / baseline:.1f}x |"
        )
    client = connect(settings, "sensors")
    apply_migrations(client)
    client.command(
        "INSERT INTO sensor_summaries (event_id, site_id, occurred_at, published_at, sequence,"
        " producer_kind, producer_id, schema_version, schema_id, topic, partition, offset, ingested_at, raw,"
        " window_start, window_end, parameter, unit, count, samples_outside_alert, samples_outside_action)"
        " SELECT generateUUIDv4(), concat('site-', toString(number % 4)), now64(6), now64(6), number,"
        " 'SIMULATOR', 'x', 1, 201, 't', 0, number, now64(6), '', now64(6), now64(6), 'temperature', 'Cel',"
        " 60, number % 3, 0 FROM numbers({rows:UInt64})",
        parameters={"rows": args.sensor_rows},
    )
    sensor = timed(lambda: client.query(SENSOR_SQL))
    plain = timed(lambda: client.query(SENSOR_SQL.replace(" FINAL", "")))
    print(
        f"\nsensor control over {args.sensor_rows:,} sensor summaries: {sensor:.3f}s with FINAL,"
        f" {plain:.3f}s without ({sensor / plain:.1f}x)"
    )


if __name__ == "__main__":
    main()
