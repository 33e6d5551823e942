"""``atmpnet verify`` against a real event store: clean run clean; one altered stored event found exactly."""

from __future__ import annotations

import pytest
from atmpnet.cli import app
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import BatchStep, Event
from atmpnet.settings import Settings
from atmpnet.site.simulator import NetworkConfig, Simulation
from atmpnet.streams.ingest import IngestCore
from atmpnet.warehouse.event_store import TABLES
from atmpnet.warehouse.migrations import apply_migrations
from atmpnet.warehouse.verify import verify_store
from atmpnet.warehouse.views import read_views, refresh_views
from clickhouse_connect.driver.client import Client
from typer.testing import CliRunner

from tests.integration.integrity_support import chained, ingest, stream_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(codec: AvroCodec) -> list[Event]:
    events = list(Simulation(NetworkConfig(sites=2, days=3, seed=5, sensor_window_minutes=60)).events())
    return chained(events, codec)


@pytest.fixture
def stored(clickhouse: Client, codec: AvroCodec, run: list[Event]) -> Client:
    apply_migrations(clickhouse)
    ingest(IngestCore(clickhouse, codec), codec, run)
    return clickhouse


def test_a_clean_store_verifies_and_an_altered_event_is_found_exactly(
    stored: Client, run: list[Event]
) -> None:
    clean = verify_store(stored)
    assert clean.findings == ()
    assert clean.events == len(run)
    assert clean.streams == len({stream_of(e) for e in run})

    # alter one stored batch step in the middle of its module's stream (its raw body: one byte)
    module = run[0].envelope.module_id
    stream = sorted(
        (e for e in run if isinstance(e, BatchStep) and e.envelope.module_id == module),
        key=lambda e: e.envelope.sequence,
    )
    victim = stream[len(stream) // 2]
    n = victim.envelope.sequence
    successor = next(e for e in run if stream_of(e) == stream_of(victim) and e.envelope.sequence == n + 1)
    stored.command(
        "ALTER TABLE batch_steps UPDATE raw = concat(substring(raw, 1, length(raw) - 1),"
        " char((reinterpretAsUInt8(substring(raw, length(raw), 1)) + 1) % 256))"
        f" WHERE event_id = '{victim.envelope.event_id}' SETTINGS mutations_sync = 2"
    )
    found = verify_store(stored)
    assert len(found.findings) == 1, found.findings
    (brk,) = found.breaks
    assert brk.module_id == module
    assert brk.sequences == (n, n + 1)
    assert set(brk.evidence) == {str(victim.envelope.event_id), str(successor.envelope.event_id)}
    assert f"module {module}" in brk.message and f"sequence {n} and {n + 1}" in brk.message


def test_verify_command_exits_1_on_a_break(
    stored: Client, run: list[Event], clickhouse_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATMPNET_DATA_DIR", str(clickhouse_settings.data_dir))
    monkeypatch.setenv("ATMPNET_CLICKHOUSE_DATABASE", str(stored.database))
    if clickhouse_settings.clickhouse_url:
        monkeypatch.setenv("ATMPNET_CLICKHOUSE_URL", clickhouse_settings.clickhouse_url)
    # settings are read once per process: this test's environment must be read
    monkeypatch.setattr("atmpnet.cli.get_settings", Settings)
    runner = CliRunner()
    ok = runner.invoke(app, ["verify"])
    assert ok.exit_code == 0, ok.output
    assert f"verified {len(run)} events" in ok.output and "0 chain breaks" in ok.output
    # a changed copy of a stored event with a later ingestion (the store keeps the last row)
    stored.command(
        "INSERT INTO sensor_summaries SELECT * REPLACE (concat(raw, 'x') AS raw, now64(6) AS ingested_at)"
        " FROM sensor_summaries FINAL ORDER BY module_id, sequence LIMIT 1 OFFSET 3"
    )
    broken = runner.invoke(app, ["verify"])
    assert broken.exit_code == 1, broken.output
    assert "CHAIN_BREAK" in broken.output and "1 chain breaks" in broken.output


def _last_of_a_module(run: list[Event]) -> Event:
    module = run[0].envelope.module_id
    return max((e for e in run if e.envelope.module_id == module), key=lambda e: e.envelope.sequence)


@pytest.mark.parametrize("tamper", ["alter", "delete"])
def test_the_last_event_of_a_stream_is_protected_by_its_recorded_head(
    stored: Client, run: list[Event], tamper: str
) -> None:
    """No successor names the newest event's hash: the head the ingest recorded does."""
    victim = _last_of_a_module(run)
    table = TABLES[type(victim)]
    if tamper == "alter":
        stored.command(
            f"ALTER TABLE {table} UPDATE raw = concat(substring(raw, 1, length(raw) - 1),"
            " char((reinterpretAsUInt8(substring(raw, length(raw), 1)) + 1) % 256))"
            f" WHERE event_id = '{victim.envelope.event_id}' SETTINGS mutations_sync = 2"
        )
    else:
        stored.command(
            f"ALTER TABLE {table} DELETE WHERE event_id = '{victim.envelope.event_id}'"
            " SETTINGS mutations_sync = 2"
        )
    found = verify_store(stored)
    (brk,) = found.breaks
    assert brk.module_id == victim.envelope.module_id
    assert "recorded chain head" in brk.message
    n = victim.envelope.sequence
    assert brk.sequences == ((n, n) if tamper == "alter" else (n - 1, n - 1))
    # the integrity view finds the same break (the stream is no longer clean)
    refresh_views(stored)
    breaks = [r for r in read_views(stored)["integrity_findings"] if r[1] == "CHAIN_BREAK"]
    assert len(breaks) == 1 and breaks[0][5] == victim.envelope.module_id, breaks
