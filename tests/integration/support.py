"""Helpers shared by the processor tests on the real broker: publish, wait, a sample deviation."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Deviation, Event
from atmpnet.settings import Settings
from atmpnet.site.simulator import NetworkConfig, Simulation
from atmpnet.streams.app import Processor, ProcessorConfig, create_processor
from atmpnet.streams.ingest import TopicRouter
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer


def publish(
    producer: Producer, codec: AvroCodec, topics: dict[type[Event], str], events: Iterable[Event]
) -> None:
    """Produce ``events`` to their type's topic, keyed as the publisher keys them, and flush."""
    for event in events:
        producer.produce(topics[type(event)], key=event.partition_key(), value=codec.encode(event))
        producer.poll(0)
    producer.flush(30)


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until it is true; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def sample_deviation() -> Deviation:
    """The first deviation of a small simulated run (re-stamp its envelope for each use)."""
    events = Simulation(NetworkConfig(sites=1, days=5, seed=1)).events()
    return next(e for e in events if isinstance(e, Deviation))


def processor_on(
    settings: Settings,
    bootstrap: str,
    clickhouse: Client,
    codec: AvroCodec,
    topics: dict[type[Event], str],
    config: ProcessorConfig,
    dead_letter_topic: str,
) -> Processor:
    """A processor (not started) reading the test's ``topics`` into ``clickhouse``."""
    return create_processor(
        settings,
        bootstrap,
        clickhouse,
        codec,
        config=config,
        router=TopicRouter(topics),
        dead_letter_topic=dead_letter_topic,
    )
