"""Cost of the ingest's event-id conflict lookup as the event store grows.

Before each write the ingest asks the store which of the batch's event ids it already holds
(``event_store.stored_copies``; docs/processing.md): that is how a replay with altered content
is caught instead of silently replacing the stored event. This times that lookup for a batch of
new ids (the common case) on sensor-summary tables of growing size, against a baseline measured
in the same run: the write the lookup guards, ``insert_events`` of that batch of simulated
sensor summaries into a table of the same size. The stored rows are generated inside
ClickHouse (random ids, as the simulator's), one site.

    python tools/bench_id_lookup.py [--sizes 100000,1000000,5000000] [--batch 20000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from atmpnet.contract.events import Event, SensorSummary
from atmpnet.settings import Settings
from atmpnet.site.simulator import NetworkConfig, Simulation
from atmpnet.warehouse.connection import connect
from atmpnet.warehouse.event_store import StoredEvent, insert_events, stored_copies
from atmpnet.warehouse.migrations import apply_migrations
from clickhouse_connect.driver.client import Client

FILL = (
    "INSERT INTO sensor_summaries (event_id, site_id, module_id, occurred_at, published_at, sequence,"
    " producer_kind, producer_id, producer_software_version, schema_version, schema_id, topic,"
    " `partition`, `offset`, ingested_at, raw, window_start, window_end, parameter, unit, `count`)"
    " SELECT generateUUIDv4(number), 'site-a', concat('a-m', toString(number % 6)),"
    " now64(6), now64(6), number, 'MODULE', 'm', '1', 2, 102, 'atmp.sensor-summaries.v1', 0, number,"
    " now64(6), randomString(120), now64(6), now64(6), 'temperature', 'C', 60 FROM numbers({n})"
)


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    """Median seconds of ``repeat`` calls."""
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def _grow_to(client: Client, rows: int) -> None:
    have = int(client.query("SELECT count() FROM sensor_summaries").result_rows[0][0])
    while have < rows:
        step = min(1_000_000, rows - have)
        client.command(FILL.format(n=step))
        have += step
    client.command("OPTIMIZE TABLE sensor_summaries FINAL")  # a settled store: merged parts


def main() -> None:
    """Print a markdown table: lookup and baseline insert per store size."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000,5000000")
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args()
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="bench-ids-")))
    client = connect(settings, "ids")
    apply_migrations(client)
    print(f"# {platform.machine()}, Python {platform.python_version()}, batch of {args.batch:,} new ids")
    print("| stored events | lookup (ms) | baseline: insert the batch (ms) | lookup / insert |")
    print("|---:|---:|---:|---:|")
    network = Simulation(NetworkConfig(sites=1, days=30, seed=1, sensor_window_minutes=15))
    sensors = [e for e in network.events() if isinstance(e, SensorSummary)][: args.batch]
    batch: dict[type[Event], list[StoredEvent]] = {
        SensorSummary: [
            StoredEvent(e, 102, SensorSummary.TOPIC, 0, i, b"x" * 120) for i, e in enumerate(sensors)
        ]
    }
    ids = [s.event_id for s in batch[SensorSummary]]
    for size in (int(s) for s in args.sizes.split(",")):
        _grow_to(client, size)
        lookup = timed(lambda: stored_copies(client, SensorSummary, ids, ["site-a"]))
        # the write into a copy of the store (same size and parts), so the store itself stays put
        client.command("DROP TABLE IF EXISTS scratch")
        client.command("CREATE TABLE scratch AS sensor_summaries")
        client.command("INSERT INTO scratch SELECT * FROM sensor_summaries")
        client.command("RENAME TABLE sensor_summaries TO kept, scratch TO sensor_summaries")
        insert = timed(lambda: insert_events(client, batch, datetime.now(UTC)), repeat=3)
        client.command("DROP TABLE sensor_summaries")
        client.command("RENAME TABLE kept TO sensor_summaries")
        print(
            f"| {size:,} | {lookup * 1000:.1f} | {insert * 1000:.1f} | {lookup / insert:.2f}x |", flush=True
        )


if __name__ == "__main__":
    main()
