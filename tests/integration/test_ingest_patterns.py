"""A site's mirrored topic created after the processor started is consumed, by both engines."""

from __future__ import annotations

import uuid

import pytest
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Deviation, Event
from atmpnet.settings import Settings
from atmpnet.streams.app import ProcessorConfig
from atmpnet.transport import ensure_topics, producer_config
from atmpnet.warehouse.dead_letters import dead_letters
from atmpnet.warehouse.event_store import event_ids
from clickhouse_connect.driver.client import Client
from confluent_kafka import Producer

from tests.integration.support import processor_on, publish, sample_deviation, wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("engine", ["batch", "faust"])
def test_mirrored_topic_created_later_is_consumed(
    engine: str,
    settings: Settings,
    kafka_bootstrap: str,
    topics: dict[type[Event], str],
    clickhouse: Client,
    codec: AvroCodec,
) -> None:
    sample = sample_deviation()
    local = sample.with_envelope(event_id=uuid.uuid4(), site_id="site-a")
    own = sample.with_envelope(event_id=uuid.uuid4(), site_id="site-z")
    foreign = sample.with_envelope(event_id=uuid.uuid4(), site_id="site-y")
    producer = Producer(producer_config(settings, kafka_bootstrap))
    publish(producer, codec, topics, [local])

    config = ProcessorConfig(
        kafka_bootstrap,
        settings.data_dir,
        group_id=f"pattern-{uuid.uuid4().hex[:8]}",
        engine=engine,  # type: ignore[arg-type]
        batch_within_s=0.1,
        topic_refresh_s=1.0,
    )
    dlq = f"atmp.dead-letter.v1.test-{uuid.uuid4().hex[:8]}"
    processor = processor_on(settings, kafka_bootstrap, clickhouse, codec, topics, config, dlq)
    mirrored = f"site-z.{topics[Deviation]}"  # e.g. site-z.atmp.deviations.v1
    assert mirrored not in processor.topics
    processor.start()
    try:
        wait_until(lambda: local.envelope.event_id in event_ids(clickhouse), 60, "the local deviation")
        ensure_topics(settings, kafka_bootstrap, [mirrored])  # MirrorMaker mirrors a new site in
        publish(producer, codec, {Deviation: mirrored}, [own, foreign])
        wait_until(
            lambda: own.envelope.event_id in event_ids(clickhouse) and len(dead_letters(clickhouse)) >= 1,
            90,
            "the mirrored topic's records",
        )
    finally:
        processor.stop()

    # the mirrored topic is treated like the local one: stored when the prefix is the event's site
    assert sorted(event_ids(clickhouse, Deviation)) == sorted(
        [local.envelope.event_id, own.envelope.event_id]
    )
    [letter] = dead_letters(clickhouse)
    assert (letter.reason_code, letter.topic, letter.event_id) == (
        "SITE_MISMATCH",
        mirrored,
        foreign.envelope.event_id,
    )
