"""The ingest core against a real ClickHouse: replay-safe store, dead-letter table, hooks, traces."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from atmpnet import telemetry
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import (
    EVENT_TYPES,
    BatchStep,
    Event,
    ModuleConfiguration,
    SensorSummary,
)
from atmpnet.contract.examples import example_events
from atmpnet.site.simulator import NetworkConfig, Simulation
from atmpnet.streams.dead_letter import DeadLetterReason, RawRecord
from atmpnet.streams.ingest import IngestCore, WrittenBatch
from atmpnet.warehouse.dead_letters import dead_letters
from atmpnet.warehouse.event_store import TABLES, count_events, event_ids, raw_events
from atmpnet.warehouse.migrations import apply_migrations
from clickhouse_connect.driver.client import Client
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

pytestmark = pytest.mark.integration


def _records(
    codec: AvroCodec, events: list[Event], headers: list[tuple[str, bytes]] | None = None
) -> list[RawRecord]:
    return [
        RawRecord(type(e).TOPIC, i % 3, i, e.partition_key().encode(), codec.encode(e), headers or [])
        for i, e in enumerate(events)
    ]


@pytest.fixture(scope="module")
def simulated() -> list[Event]:
    return list(Simulation(NetworkConfig(sites=2, days=1, seed=7)).events())


@pytest.fixture
def core(clickhouse: Client, codec: AvroCodec) -> IngestCore:
    apply_migrations(clickhouse)
    return IngestCore(clickhouse, codec)


def test_replays_leave_one_row_per_event_id(
    core: IngestCore, codec: AvroCodec, simulated: list[Event]
) -> None:
    client = core.client
    records = _records(codec, simulated)
    half = len(records) // 2
    core.process(records[:half])
    core.process(records)  # the first half again, as after a crash before the commit
    core.process(records[half // 2 :])
    expected = Counter(type(e) for e in simulated)
    for event_type in EVENT_TYPES:
        assert count_events(client, event_type) == expected[event_type]
    ids = event_ids(client)
    assert sorted(ids) == sorted(e.envelope.event_id for e in simulated)
    # the other way to read: GROUP BY event_id gives the same answer as FINAL
    grouped = client.query("SELECT count() FROM (SELECT event_id FROM sensor_summaries GROUP BY event_id)")
    assert grouped.result_rows[0][0] == expected[SensorSummary]


def test_rows_hold_the_event_and_its_original_bytes(core: IngestCore, codec: AvroCodec) -> None:
    events = example_events()
    core.process(_records(codec, events))
    stored = raw_events(core.client, [e.envelope.event_id for e in events])
    for event in events:
        event_type, raw = stored[event.envelope.event_id]
        assert event_type is type(event)
        assert codec.decode(raw) == event
    step = next(e for e in events if isinstance(e, BatchStep))
    assert step.results is not None
    row = core.client.query(
        "SELECT results_viable_cell_count, step, site_id, occurred_at FROM batch_steps FINAL"
    ).result_rows[0]
    assert row[0] == step.results.viable_cell_count
    assert row[1] == step.step.value
    assert row[2] == step.envelope.site_id
    assert row[3] == step.envelope.occurred_at.replace(tzinfo=None)
    config = next(e for e in events if isinstance(e, ModuleConfiguration))
    names, hashes = core.client.query(
        "SELECT components_name, components_content_hash FROM module_configs FINAL"
    ).result_rows[0]
    assert names == [c.name for c in config.components]
    assert hashes == [c.content_hash for c in config.components]


def test_dead_letters_land_in_the_table_once(core: IngestCore, codec: AvroCodec) -> None:
    good = _records(codec, example_events())
    bad = RawRecord(BatchStep.TOPIC, 2, 99, b"B-1", b"\x00\x00\x00\x00\x65garbage", [])
    core.process([*good, bad])
    core.process([bad])  # re-delivered
    (row,) = dead_letters(core.client)
    assert (row.topic, row.partition, row.offset) == (BatchStep.TOPIC, 2, 99)
    assert row.reason_code == DeadLetterReason.UNDECODABLE.value
    assert row.reason
    assert row.value == bad.value
    assert row.key == b"B-1"
    assert count_events(core.client) == len(good)


def test_hooks_see_each_written_batch_and_a_failing_hook_fails_it(core: IngestCore, codec: AvroCodec) -> None:
    seen: list[WrittenBatch] = []
    core.add_after_write(lambda _client, batch: seen.append(batch))
    events = example_events()
    core.process(_records(codec, events))
    (batch,) = seen
    assert len(batch) == len(events)
    assert {t: len(v) for t, v in batch.events.items()} == {type(e): 1 for e in events}
    assert batch.of(BatchStep) == [e for e in events if isinstance(e, BatchStep)]

    def broken(_client: Client, _batch: WrittenBatch) -> None:
        raise RuntimeError("view refresh failed")

    core.add_after_write(broken)
    more = [e.with_envelope(event_id=uuid.uuid4()) for e in events]
    with pytest.raises(RuntimeError, match="view refresh failed"):
        core.process(_records(codec, more))
    # the caller does not commit; the retry writes the batch again and the store still holds one copy
    core._hooks.remove(broken)
    core.process(_records(codec, more))
    assert count_events(core.client) == 2 * len(events)
    assert len(seen) == 3


def test_processing_continues_the_publish_trace(core: IngestCore, codec: AvroCodec) -> None:
    telemetry.configure("atmpnet-tests")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = telemetry.tracer("test.publisher")
    events = example_events()[:2]
    records = []
    with tracer.start_as_current_span("publish") as publish_span:
        headers = telemetry.inject_headers()
        records = _records(codec, events, headers)
    core.process(records)
    spans = exporter.get_finished_spans()
    publish_ctx = publish_span.get_span_context()
    per_event = [s for s in spans if s.name == "atmpnet.ingest.event"]
    assert len(per_event) == len(events)
    for span in per_event:
        assert span.context.trace_id == publish_ctx.trace_id  # the same trace, continued
        assert span.parent is not None and span.parent.span_id == publish_ctx.span_id
    (write,) = [s for s in spans if s.name == "atmpnet.ingest.write"]
    assert any(link.context.trace_id == publish_ctx.trace_id for link in write.links)
    assert all(span.links[0].context.span_id == write.context.span_id for span in per_event)


def test_tables_cover_every_family() -> None:
    assert set(TABLES) == set(EVENT_TYPES)
