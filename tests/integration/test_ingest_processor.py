"""The faust processor on the real broker: duplicates, dead letters, mirrored topics, clean stop."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

import pytest
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Deviation, Event
from atmpnet.settings import Settings
from atmpnet.site.simulator import NetworkConfig, Simulation
from atmpnet.streams.app import ProcessorConfig, create_processor
from atmpnet.streams.dead_letter import HEADER_REASON_CODE, HEADER_SOURCE_TOPIC
from atmpnet.streams.ingest import TopicRouter, WrittenBatch
from atmpnet.transport import consumer_config, ensure_topics, producer_config
from atmpnet.warehouse.dead_letters import dead_letters
from atmpnet.warehouse.event_store import count_events, event_ids
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, Message, Producer

pytestmark = pytest.mark.integration


def publish(
    producer: Producer, codec: AvroCodec, topics: dict[type[Event], str], events: Iterable[Event]
) -> None:
    for event in events:
        producer.produce(topics[type(event)], key=event.partition_key(), value=codec.encode(event))
        producer.poll(0)
    producer.flush(30)


def wait_until(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


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
    sample = next(
        e for e in Simulation(NetworkConfig(sites=1, days=5, seed=1)).events() if isinstance(e, Deviation)
    )
    own = sample.with_envelope(event_id=uuid.uuid4(), site_id=deviation_site)
    foreign = sample.with_envelope(event_id=uuid.uuid4(), site_id="site-elsewhere")

    producer = Producer(producer_config(settings, kafka_bootstrap))
    publish(producer, codec, topics, events)
    publish(producer, codec, topics, events)  # the whole input delivered twice
    publish(producer, codec, {Deviation: mirrored}, [own, foreign])
    producer.produce(topics[Deviation], key=b"B-x", value=b"\x00\x00\x00\x00\x65definitely not avro")
    producer.flush(30)

    config = ProcessorConfig(kafka_bootstrap, settings.data_dir, group_id=f"ingest-{uuid.uuid4().hex[:8]}")
    processor = create_processor(
        settings,
        kafka_bootstrap,
        clickhouse,
        codec,
        config=config,
        router=TopicRouter(topics),
        dead_letter_topic=dlq,
    )
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
