"""The sample run: publish one event of every type through Kafka and read each one back.

The main job of the foundation stage; it proves the contract end to end on whatever stack
the settings choose (model -> bytes -> broker -> bytes -> model).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Event
from atmpnet.errors import AtmpError
from atmpnet.settings import Settings
from atmpnet.transport import TransportError, consumer_config, ensure_topics, producer_config


@dataclass(frozen=True)
class Delivered:
    """One event as read back from its topic."""

    topic: str
    partition: int
    offset: int
    key: str
    size: int
    event: Event


def publish(
    settings: Settings,
    bootstrap: str,
    codec: AvroCodec,
    events: Iterable[Event],
    topic_of: dict[type[Event], str] | None = None,
    timeout_s: float = 15.0,
) -> int:
    """Produce ``events`` (idempotent, acks=all) and wait for every acknowledgement."""
    producer = Producer(producer_config(settings, bootstrap))
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    count = 0
    for event in events:
        topic = (topic_of or {}).get(type(event), event.TOPIC)
        producer.produce(
            topic, key=event.partition_key().encode(), value=codec.encode(event), on_delivery=on_delivery
        )
        count += 1
    try:
        remaining = producer.flush(timeout_s)
    finally:
        producer.close()
    if remaining or failures:
        raise TransportError(f"{remaining} events unacknowledged, {len(failures)} failed: {failures[:3]}")
    return count


def read_back(
    settings: Settings,
    bootstrap: str,
    codec: AvroCodec,
    topics: list[str],
    expected: int,
    timeout_s: float = 30.0,
) -> list[Delivered]:
    """Consume ``expected`` events from the start of every partition of ``topics``.

    Partitions are assigned directly: a reader that commits nothing needs no group join.
    """
    consumer = Consumer(consumer_config(settings, bootstrap, f"atmpnet-sample-{uuid.uuid4()}"))
    metadata = consumer.list_topics(timeout=timeout_s)
    consumer.assign(
        [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in metadata.topics[t].partitions]
    )
    out: list[Delivered] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise TransportError(f"consume failed: {msg.error()}")
            value = msg.value() or b""
            out.append(
                Delivered(
                    msg.topic() or "",
                    msg.partition() or 0,
                    msg.offset() or 0,
                    (msg.key() or b"").decode(),
                    len(value),
                    codec.decode(value),
                )
            )
    finally:
        consumer.close()
    if len(out) < expected:
        raise AtmpError(f"read back {len(out)} of {expected} events within {timeout_s}s")
    return out


def round_trip(
    settings: Settings,
    bootstrap: str,
    codec: AvroCodec,
    events: list[Event],
    topic_of: dict[type[Event], str] | None = None,
) -> list[Delivered]:
    """Publish ``events`` and return them as read back, in the order they were given."""
    topics = sorted({(topic_of or {}).get(type(e), e.TOPIC) for e in events})
    ensure_topics(settings, bootstrap, topics)
    publish(settings, bootstrap, codec, events, topic_of)
    delivered = {
        d.event.envelope.event_id: d for d in read_back(settings, bootstrap, codec, topics, len(events))
    }
    return [delivered[e.envelope.event_id] for e in events]
