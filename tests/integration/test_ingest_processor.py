"""The processor on the real broker: duplicates, dead letters, mirrored topics, clean stop;
derived publication that fails holds no ingest back."""

from __future__ import annotations

import time
import uuid

import pytest
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import DERIVED_EVENT_TYPES, Deviation, Event
from atmpnet.settings import Settings
from atmpnet.site.simulator import NetworkConfig, Simulation
from atmpnet.streams.app import ProcessorConfig, free_port
from atmpnet.streams.dead_letter import HEADER_REASON_CODE, HEADER_SOURCE_TOPIC
from atmpnet.streams.derived import DerivedPublisher, ViewProjector, derived_events
from atmpnet.streams.ingest import WrittenBatch
from atmpnet.transport import consumer_config, ensure_topics, producer_config
from atmpnet.warehouse.dead_letters import dead_letters
from atmpnet.warehouse.event_store import count_events, event_ids
from atmpnet.warehouse.migrations import apply_migrations
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from tests.integration.support import processor_on, publish, sample_deviation, wait_until
from tests.integration.test_ground_truth import consume_all

pytestmark = pytest.mark.integration


def read_topic(
    settings: Settings, bootstrap: str, topic: str, count: int, timeout_s: float = 20.0
) -> list[Message]:
    consumer = Consumer(consumer_config(settings, bootstrap, f"reader-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                out.append(msg)
    finally:
        consumer.close()
    return out


def headers_of(message: Message) -> dict[str, object]:
    return dict(message.headers() or [])


def test_duplicates_dead_letters_and_mirrored_topics(
    settings: Settings,
    kafka_bootstrap: str,
    topics: dict[type[Event], str],
    clickhouse: Client,
    codec: AvroCodec,
) -> None:
    events = list(Simulation(NetworkConfig(sites=2, days=0.5, seed=3)).events())
    deviation_site = "site-mirror"
    mirrored = f"{deviation_site}.{topics[Deviation]}"
    dlq = f"atmp.dead-letter.v1.test-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, kafka_bootstrap, [mirrored])
    # a mirrored copy of another site's cluster: its deviation belongs there, a foreign one does not
    sample = sample_deviation()
    own = sample.with_envelope(event_id=uuid.uuid4(), site_id=deviation_site)
    foreign = sample.with_envelope(event_id=uuid.uuid4(), site_id="site-elsewhere")

    producer = Producer(producer_config(settings, kafka_bootstrap))
    publish(producer, codec, topics, events)
    publish(producer, codec, topics, events)  # the whole input delivered twice
    publish(producer, codec, {Deviation: mirrored}, [own, foreign])
    producer.produce(topics[Deviation], key=b"B-x", value=b"\x00\x00\x00\x00\x65definitely not avro")
    producer.flush(30)

    config = ProcessorConfig(kafka_bootstrap, settings.data_dir, group_id=f"ingest-{uuid.uuid4().hex[:8]}")
    processor = processor_on(settings, kafka_bootstrap, clickhouse, codec, topics, config, dlq)
    assert mirrored in processor.topics
    written: list[WrittenBatch] = []
    processor.add_after_write(lambda _c, batch: written.append(batch))
    processor.start()
    try:
        expected = len(events) + 1
        wait_until(
            lambda: count_events(clickhouse) >= expected and len(dead_letters(clickhouse)) >= 2, 60, "ingest"
        )
        wait_until(lambda: processor.records_processed >= 2 * len(events) + 3, 30, "every record")
    finally:
        processor.stop()

    assert count_events(clickhouse) == len(events) + 1
    assert sorted(event_ids(clickhouse)) == sorted(
        [e.envelope.event_id for e in events] + [own.envelope.event_id]
    )
    letters = {d.reason_code: d for d in dead_letters(clickhouse)}
    assert set(letters) == {"UNDECODABLE", "SITE_MISMATCH"}
    assert letters["SITE_MISMATCH"].topic == mirrored
    assert letters["SITE_MISMATCH"].event_id == foreign.envelope.event_id
    assert letters["UNDECODABLE"].value == b"\x00\x00\x00\x00\x65definitely not avro"
    assert sum(len(b) for b in written) >= len(events) + 1

    on_topic = read_topic(settings, kafka_bootstrap, dlq, 2)
    by_reason = {headers_of(m)[HEADER_REASON_CODE]: m for m in on_topic}
    assert set(by_reason) == {b"UNDECODABLE", b"SITE_MISMATCH"}
    undecodable = by_reason[b"UNDECODABLE"]
    assert undecodable.key() == b"B-x"
    assert undecodable.value() == b"\x00\x00\x00\x00\x65definitely not avro"
    assert headers_of(undecodable)[HEADER_SOURCE_TOPIC] == topics[Deviation].encode()


def test_ingest_goes_on_while_derived_events_cannot_be_published_and_sends_them_once_later(
    settings: Settings,
    kafka_bootstrap: str,
    topics: dict[type[Event], str],
    clickhouse: Client,
    codec: AvroCodec,
) -> None:
    apply_migrations(clickhouse)
    events = list(Simulation(NetworkConfig(sites=1, days=3, seed=3)).events())
    assert any(isinstance(e, Deviation) for e in events)
    half = len(events) // 2
    suffix = uuid.uuid4().hex[:8]
    derived = {t: f"{t.TOPIC}.test-{suffix}" for t in DERIVED_EVENT_TYPES}
    ensure_topics(settings, kafka_bootstrap, list(derived.values()))
    # the derived producer points at a broker nobody listens on
    unreachable = producer_config(settings, f"127.0.0.1:{free_port()}")
    projector = ViewProjector(DerivedPublisher(unreachable, codec, derived, timeout_s=0.5), retry_s=0.1)
    group = f"ingest-{uuid.uuid4().hex[:8]}"
    config = ProcessorConfig(kafka_bootstrap, settings.data_dir, group_id=group, engine="batch")
    processor = processor_on(
        settings, kafka_bootstrap, clickhouse, codec, topics, config, f"atmp.dead-letter.v1.test-{suffix}"
    )
    processor.add_after_write(projector)
    producer = Producer(producer_config(settings, kafka_bootstrap))
    processor.start()
    try:
        publish(producer, codec, topics, events[:half])
        wait_until(lambda: count_events(clickhouse) >= half, 60, "ingest while publishing fails")
        wait_until(lambda: processor.records_processed >= half, 30, "the batches to be done")
        assert processor.batch_loop is not None  # the batch engine commits after each write
        wait_until(lambda: committed(settings, kafka_bootstrap, group, topics) >= half, 30, "the commits")
        assert projector.last is not None and projector.last.views.facts.events == half
        assert projector.pending
        assert projector.publisher is not None and projector.publisher.failures >= 1

        # the broker is back (a publisher on it): the next writes send what was missed
        projector.publisher = DerivedPublisher(producer_config(settings, kafka_bootstrap), codec, derived)
        publish(producer, codec, topics, events[half:])
        wait_until(lambda: count_events(clickhouse) >= len(events), 60, "the rest")
        wait_until(lambda: processor.records_processed >= len(events), 30, "the rest to be done")
        wait_until(lambda: not projector.pending, 30, "the derived events")
    finally:
        processor.stop()
    assert committed(settings, kafka_bootstrap, group, topics) == len(events)
    assert projector.last is not None
    expected = {e.envelope.event_id for e in derived_events(projector.last.views)}
    assert expected
    seen = consume_all(settings, kafka_bootstrap, list(derived.values()), codec)
    assert sorted(str(e.envelope.event_id) for e in seen) == sorted(str(i) for i in expected)
    projector.publisher = None  # its producer goes before the session's broker does


def committed(settings: Settings, bootstrap: str, group: str, topics: dict[type[Event], str]) -> int:
    """Records the group has committed on the topics (offsets start at 0 on fresh test topics)."""
    consumer = Consumer(consumer_config(settings, bootstrap, group))
    try:
        parts = [TopicPartition(t, p) for t in topics.values() for p in range(settings.topic_partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()
