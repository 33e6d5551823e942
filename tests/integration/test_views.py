"""The view projector on a real ClickHouse engine: idempotent, order-free, live == rebuild.

Events go straight into the event store here (no broker): test_ground_truth.py runs the same
views end to end through the broker and the ingest processor.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import pytest
from atmpnet.contract.events import Event, SensorSummary
from atmpnet.site.simulator import GroundTruth, NetworkConfig, Simulation
from atmpnet.warehouse.event_store import StoredEvent, insert_events
from atmpnet.warehouse.migrations import apply_migrations
from atmpnet.warehouse.views import (
    VIEW_NAMES,
    compute_views,
    load_facts,
    read_views,
    rebuild_views,
    refresh_views,
)
from clickhouse_connect.driver.client import Client

pytestmark = pytest.mark.integration

# how late an event may arrive after events that occurred later than it (docs/views.md)
LATENESS = timedelta(hours=2)


@lru_cache(maxsize=4)
def simulate(sites: int, days: float, window_minutes: int) -> tuple[tuple[Event, ...], GroundTruth]:
    """A deterministic simulated network (cached: several tests share one run)."""
    sim = Simulation(NetworkConfig(sites=sites, days=days, seed=1, sensor_window_minutes=window_minutes))
    events = tuple(sim.events())
    return events, sim.ground_truth


def shuffled_within(events: tuple[Event, ...] | list[Event], bound: timedelta, seed: int) -> list[Event]:
    """The events in an arrival order where none arrives more than ``bound`` after a later one."""
    rng = random.Random(seed)
    span = bound.total_seconds()
    keyed = [
        (e.envelope.occurred_at + timedelta(seconds=rng.uniform(0, span)), i, e) for i, e in enumerate(events)
    ]
    return [e for _, _, e in sorted(keyed, key=lambda k: (k[0], k[1]))]


def store(client: Client, events: list[Event] | tuple[Event, ...]) -> None:
    """Write events to the event store the way the ingest does (no source offsets here)."""
    by_type: dict[type[Event], list[StoredEvent]] = {}
    for e in events:
        by_type.setdefault(type(e), []).append(StoredEvent(e, 0, type(e).TOPIC, 0, 0, b""))
    insert_events(client, by_type, datetime.now(UTC))


def _generations(client: Client) -> set[str]:
    rows = client.query(
        "SELECT DISTINCT partition_id FROM system.parts WHERE database = currentDatabase()"
        " AND active AND startsWith(table, 'vt_')"
    ).result_rows
    return {r[0] for r in rows}


@pytest.fixture
def warehouse(clickhouse: Client) -> Client:
    apply_migrations(clickhouse)
    return clickhouse


def test_empty_store_gives_empty_views(warehouse: Client) -> None:
    result = rebuild_views(warehouse)
    assert result.generation == 1
    assert all(rows == [] for rows in read_views(warehouse).values())


def test_views_are_unchanged_by_duplicates_and_arrival_order(warehouse: Client) -> None:
    events, _ = simulate(2, 8, 240)
    store(warehouse, events)
    rebuild_views(warehouse)
    first = read_views(warehouse)
    assert first["deviation_triage"]
    assert first["capacity_lane_days"]
    assert first["drift_intervals"]
    assert {r[2] for r in first["performance"]} >= {"success_rate", "sensor_control", "cycle_time_p50_hours"}

    store(warehouse, shuffled_within(events, LATENESS, seed=7))  # every event again, another order
    result = refresh_views(warehouse)
    assert result is not None
    assert result.generation == 2
    assert read_views(warehouse) == first
    # readers see only the committed generation; older ones but the last are dropped
    assert _generations(warehouse) == {"1", "2"}
    assert refresh_views(warehouse) is not None
    assert _generations(warehouse) == {"2", "3"}


def test_live_refreshes_in_arrival_chunks_end_equal_to_rebuild(
    warehouse: Client, clickhouse_settings: Any
) -> None:
    from atmpnet.warehouse.connection import connect

    events, _ = simulate(2, 8, 240)
    arrival = shuffled_within(events, LATENESS, seed=3)
    for i in range(0, len(arrival), 1500):
        store(warehouse, arrival[i : i + 1500])
        refresh_views(warehouse, [SensorSummary])
    live = read_views(warehouse)

    other = connect(clickhouse_settings, f"{warehouse.database}_rebuild")
    try:
        apply_migrations(other)
        store(other, events)
        rebuild_views(other)
        assert read_views(other) == live
    finally:
        other.command(f"DROP DATABASE IF EXISTS `{other.database}`")
        other.close()


def test_a_refresh_that_died_before_committing_is_never_seen(warehouse: Client) -> None:
    events, _ = simulate(2, 8, 240)
    store(warehouse, events)
    rebuild_views(warehouse)
    before = read_views(warehouse)
    # a refresh wrote generation 2 rows and died before its commit row
    warehouse.insert(
        "vt_capacity_site_days",
        [[2, "site-a", datetime(2026, 1, 6).date(), 99, 99, 99]],
        column_names=[
            "generation",
            "site_id",
            "day",
            "batches_started",
            "batches_completed",
            "batches_failed",
        ],
    )
    assert read_views(warehouse) == before
    result = refresh_views(warehouse)
    assert result is not None
    assert result.generation == 2
    assert read_views(warehouse) == before  # the orphan rows were dropped before generation 2 was written
    assert _generations(warehouse) == {"1", "2"}


def test_refresh_skips_a_write_that_stored_nothing(warehouse: Client) -> None:
    assert refresh_views(warehouse, []) is None


def test_computed_rows_match_what_readers_see(warehouse: Client) -> None:
    events, _ = simulate(2, 8, 240)
    store(warehouse, events)
    computed = compute_views(load_facts(warehouse))
    rebuild_views(warehouse)
    seen = read_views(warehouse)
    for name in VIEW_NAMES:
        assert len(seen[name]) == len(computed.rows[name]), name


def test_background_projector_catches_up_with_every_write(
    warehouse: Client, clickhouse_settings: Any
) -> None:
    from atmpnet.streams.derived import BackgroundProjector, projector_for
    from atmpnet.streams.ingest import WrittenBatch
    from atmpnet.warehouse.connection import connect

    events, _ = simulate(2, 8, 240)
    own = connect(clickhouse_settings, warehouse.database)
    projector = projector_for(clickhouse_settings, None, background_client=own)
    assert isinstance(projector, BackgroundProjector)
    try:
        for i in range(0, len(events), 2000):
            chunk = events[i : i + 2000]
            store(warehouse, chunk)
            stored = {type(e): [StoredEvent(e, 0, "t", 0, 0, b"")] for e in chunk}
            projector(warehouse, WrittenBatch(stored, [], datetime.now(UTC)))
        assert projector.wait_idle(60)
        assert projector.last is not None
        assert projector.last.views.facts.events == len(events)
        live = read_views(warehouse)
    finally:
        projector.stop()
        own.close()
    rebuild_views(warehouse)
    assert read_views(warehouse) == live
