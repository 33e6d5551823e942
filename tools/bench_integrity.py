"""What the integrity views add to a view refresh (docs/benchmarks.md, "Integrity in the view refresh").

Simulates a network, writes it through the ingest core (real partitions and offsets) into chDB,
then times full refreshes with and without the integrity input in the same run: the baseline
is the four views alone (``load_integrity_facts`` replaced by an empty input).

    python tools/bench_integrity.py --sites 4 --days 30 --window 15
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import zlib
from collections import defaultdict
from pathlib import Path

import chdb
from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.settings import Settings
from atmpnet.site.simulator import NetworkConfig, Simulation
from atmpnet.streams.dead_letter import RawRecord
from atmpnet.streams.ingest import IngestCore
from atmpnet.warehouse import views
from atmpnet.warehouse.connection import connect
from atmpnet.warehouse.migrations import apply_migrations


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--window", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    codec = AvroCodec(SchemaCatalog.load(Path(__file__).parents[1] / "schemas"))
    client = connect(Settings(data_dir=Path(tempfile.mkdtemp())), "bench_integrity")
    apply_migrations(client)
    events = list(
        Simulation(
            NetworkConfig(sites=args.sites, days=args.days, seed=1, sensor_window_minutes=args.window)
        ).events()
    )
    core = IngestCore(client, codec)
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    for start in range(0, len(events), 20_000):
        records = []
        for e in events[start : start + 20_000]:
            key = e.partition_key().encode()
            p = zlib.crc32(key) % 3
            records.append(RawRecord(type(e).TOPIC, p, offsets[(e.TOPIC, p)], key, codec.encode(e), []))
            offsets[(e.TOPIC, p)] += 1
        core.process(records)
    views.refresh_views(client)  # records first arrivals once

    def timed(n: int) -> float:
        runs = []
        for _ in range(n):
            t = time.perf_counter()
            views.refresh_views(client)
            runs.append(time.perf_counter() - t)
        return statistics.median(runs)

    full = timed(args.repeat)
    t = time.perf_counter()
    facts = views.load_facts(client)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    found = views.integrity_findings(facts)
    views.site_completeness(facts)
    rules_s = time.perf_counter() - t
    original = views.load_integrity_input
    views.load_integrity_input = lambda _client: ((), (), {}, {})  # type: ignore[assignment]
    try:
        base = timed(args.repeat)
    finally:
        views.load_integrity_input = original
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, python {sys.version.split()[0]},"
        f" chdb {chdb.__version__}; other helpers' jobs share the 2 cores"
    )
    print(
        f"network: {args.sites} sites x {args.days} days, sensor window {args.window} min:"
        f" {len(events)} events"
    )
    print(f"refresh without integrity (baseline): {base:.2f} s")
    print(f"refresh with integrity:               {full:.2f} s ({full / base:.2f}x the baseline)")
    print(
        f"  all facts incl. integrity input: {load_s:.2f} s; integrity rules: {rules_s:.2f} s;"
        f" findings: {len(found)}; streams checked clean in SQL: {len(facts.clean_streams or {})}"
    )


if __name__ == "__main__":
    main()
