"""End to end against the simulator's ground truth: publish -> broker -> ingest -> event store -> views.

A simulated month of four sites is published through the SitePublisher to the session broker,
the ingest processor (faust) writes it to its own ClickHouse database and refreshes the views
after every write (ViewProjector), which also publishes the derived triage and drift streams.
Then every view is compared with the ground truth, and the same views must come out when the
whole input is delivered again, when it arrives shuffled within the lateness bound (another
processor, database and topic set), and when they are rebuilt from the event store.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import DERIVED_EVENT_TYPES, EVENT_TYPES, Event
from atmpnet.settings import Settings
from atmpnet.site.publisher import SitePublisher
from atmpnet.streams.app import Processor, ProcessorConfig, create_processor
from atmpnet.streams.derived import BackgroundProjector, DerivedPublisher, ViewProjector, derived_events
from atmpnet.streams.ingest import TopicRouter
from atmpnet.transport import consumer_config, ensure_topics, producer_config
from atmpnet.warehouse.connection import connect
from atmpnet.warehouse.views import read_views, rebuild_views
from clickhouse_connect.driver.client import Client
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tests.integration.ground_truth_checks import assert_views_match_truth
from tests.integration.test_views import LATENESS, shuffled_within, simulate

pytestmark = pytest.mark.integration

SITES, DAYS, WINDOW_MINUTES = 4, 30, 240


@dataclass
class Pipeline:
    """One processor with its own topics, database and derived topics."""

    settings: Settings
    bootstrap: str
    codec: AvroCodec
    client: Client
    topics: dict[type[Event], str]
    processor: Processor
    projector: ViewProjector | BackgroundProjector

    def publish(self, events: list[Event] | tuple[Event, ...], outbox: Path) -> None:
        with SitePublisher(
            self.settings,
            bootstrap_servers=self.bootstrap,
            outbox_path=outbox,
            codec=self.codec,
            assign_sequences=False,
            durability="NORMAL",
            topic_of=lambda t: self.topics[t],
        ) as publisher:
            for i in range(0, len(events), 5000):
                publisher.publish_many(events[i : i + 5000])
            assert publisher.flush(120) == 0

    def wait_for(self, records: int, events: int, timeout_s: float = 150.0) -> None:
        """Until ``records`` were consumed and the views were refreshed over ``events`` distinct events."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            last = self.projector.last
            if self.processor.records_processed >= records and last and last.views.facts.events == events:
                return
            time.sleep(0.2)
        raise AssertionError(
            f"processed {self.processor.records_processed}/{records} records, "
            f"views over {self.projector.last and self.projector.last.views.facts.events}/{events} events"
        )


@pytest.fixture
def pipelines(
    settings: Settings,
    kafka_bootstrap: str,
    codec: AvroCodec,
    clickhouse: Client,
    clickhouse_settings: Settings,
) -> Iterator[Any]:
    started: list[Pipeline] = []
    extra: list[Client] = []

    def make(background: bool = False) -> Pipeline:
        client = clickhouse
        if started:
            client = connect(clickhouse_settings, f"{clickhouse.database}_{len(extra)}")
            extra.append(client)
        suffix = uuid.uuid4().hex[:8]
        topics = {t: f"{t.TOPIC}.test-{suffix}" for t in (*EVENT_TYPES, *DERIVED_EVENT_TYPES)}
        ensure_topics(settings, kafka_bootstrap, list(topics.values()))
        router = TopicRouter({t: topics[t] for t in EVENT_TYPES})
        config = ProcessorConfig(kafka_bootstrap, settings.data_dir / suffix, group_id=f"views-{suffix}")
        processor = create_processor(
            settings,
            kafka_bootstrap,
            client,
            codec,
            config=config,
            router=router,
            dead_letter_topic=f"atmp.dead-letter.v1.test-{suffix}",
        )
        publisher = DerivedPublisher(producer_config(settings, kafka_bootstrap), codec, topics)
        projector: ViewProjector | BackgroundProjector = ViewProjector(publisher)
        if background:  # refreshes on a thread of its own, with a client of its own
            own = connect(clickhouse_settings, client.database)
            extra.append(own)
            projector = BackgroundProjector(own, publisher).start()
        processor.add_after_write(projector)
        processor.start()
        pipeline = Pipeline(settings, kafka_bootstrap, codec, client, topics, processor, projector)
        started.append(pipeline)
        return pipeline

    yield make
    for p in started:
        p.processor.stop()
        if isinstance(p.projector, BackgroundProjector):
            p.projector.stop()
        p.projector.publisher = None  # its producer goes before the session's broker does
    for c in extra:
        with contextlib.suppress(Exception):
            c.command(f"DROP DATABASE IF EXISTS `{c.database}`")
        c.close()


def consume_all(settings: Settings, bootstrap: str, topics: list[str], codec: AvroCodec) -> list[Event]:
    """Every record on the topics (read until the broker has nothing more for a few seconds)."""
    consumer = Consumer(consumer_config(settings, bootstrap, f"reader-{uuid.uuid4().hex[:8]}"))
    # assigned, not subscribed: no group join to wait for
    consumer.assign(
        [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(settings.topic_partitions)]
    )
    out: list[Event] = []
    idle_since = time.monotonic()
    try:
        while time.monotonic() - idle_since < 4.0:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            value = msg.value()
            assert value is not None
            out.append(codec.decode(value))
            idle_since = time.monotonic()
    finally:
        consumer.close()
    return out


def test_views_equal_the_ground_truth_through_duplicates_shuffles_and_rebuild(
    pipelines: Any, tmp_path: Path, settings: Settings, kafka_bootstrap: str, codec: AvroCodec
) -> None:
    events, truth = simulate(SITES, DAYS, WINDOW_MINUTES)
    assert len(events) == truth.total_events
    live = pipelines()
    live.publish(events, tmp_path / "outbox-1.sqlite")
    started = time.monotonic()
    live.wait_for(len(events), len(events))
    print(f"published and processed {len(events)} events in {time.monotonic() - started:.1f}s")
    views = read_views(live.client)
    assert_views_match_truth(views, truth, WINDOW_MINUTES)

    # every derived event the views imply is on its topic, each id once
    derived_topics = [live.topics[t] for t in DERIVED_EVENT_TYPES]
    assert live.projector.last is not None
    expected_ids = {e.envelope.event_id for e in derived_events(live.projector.last.views)}
    published = consume_all(settings, kafka_bootstrap, derived_topics, codec)
    assert {e.envelope.event_id for e in published} == expected_ids
    assert len(published) == len(expected_ids)

    # the whole input delivered a second time: same views, no new derived event
    live.publish(events, tmp_path / "outbox-2.sqlite")
    live.wait_for(2 * len(events), len(events))
    assert read_views(live.client) == views
    assert len(consume_all(settings, kafka_bootstrap, derived_topics, codec)) == len(expected_ids)

    # shuffled within the lateness bound, into another processor and database whose views are
    # refreshed on a background thread: same views
    other = pipelines(background=True)
    other.publish(shuffled_within(events, LATENESS, seed=11), tmp_path / "outbox-3.sqlite")
    other.wait_for(len(events), len(events))
    assert isinstance(other.projector, BackgroundProjector)
    assert other.projector.wait_idle(60)
    assert read_views(other.client) == views

    # rebuilt from the event store: same views
    rebuild_views(live.client)
    assert read_views(live.client) == views
