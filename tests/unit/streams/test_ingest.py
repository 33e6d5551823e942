"""The ingest core's decode step: routing, validation, the site rule, dedupe and dead letters."""

from __future__ import annotations

import re
import struct
import uuid
from typing import cast

import pytest
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import BatchStep, Deviation, Event, SensorSummary, StepTransition
from atmpnet.contract.examples import example_events
from atmpnet.streams.dead_letter import (
    HEADER_REASON_CODE,
    HEADER_SOURCE_OFFSET,
    DeadLetter,
    DeadLetterReason,
    RawRecord,
    dead_letter_headers,
)
from atmpnet.streams.ingest import IngestCore, TopicRouter
from atmpnet.transport import DEAD_LETTER_TOPIC
from clickhouse_connect.driver.client import Client


def _example(event_type: type[Event]) -> Event:
    return next(e for e in example_events() if isinstance(e, event_type))


def _record(
    codec: AvroCodec, event: Event, *, topic: str | None = None, offset: int = 0, key: str | None = None
) -> RawRecord:
    return RawRecord(
        topic=topic or type(event).TOPIC,
        partition=0,
        offset=offset,
        key=(key if key is not None else event.partition_key()).encode(),
        value=codec.encode(event),
        headers=[("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
    )


@pytest.fixture
def core(codec: AvroCodec) -> IngestCore:
    return IngestCore(cast(Client, None), codec)  # decode never touches the database


def _reasons(letters: list[DeadLetter]) -> list[DeadLetterReason]:
    return [d.reason_code for d in letters]


def test_router_knows_families_and_mirrored_sites() -> None:
    router = TopicRouter()
    assert router.route("atmp.deviations.v1") == (Deviation, None)
    assert router.route("site-a.atmp.deviations.v1") == (Deviation, "site-a")
    assert router.route("atmp.batch-steps.v1") == (BatchStep, None)
    assert router.route(DEAD_LETTER_TOPIC) is None
    assert router.route("atmp.deviations.v2") is None
    pattern = re.compile(router.pattern)
    assert pattern.match("site-boston.atmp.sensor-summaries.v1")
    assert not pattern.match(DEAD_LETTER_TOPIC)


def test_valid_events_are_stored_per_family(core: IngestCore, codec: AvroCodec) -> None:
    events = example_events()
    batch = core.decode([_record(codec, e, offset=i) for i, e in enumerate(events)])
    assert batch.dead_letters == []
    assert len(batch) == len(events)
    for event in events:
        (stored,) = batch.events[type(event)]
        assert stored.event == event
        assert stored.traceparent is not None
        assert stored.raw == codec.encode(event)
        assert stored.schema_id > 0


def test_copies_of_an_event_id_within_a_batch_are_dropped(core: IngestCore, codec: AvroCodec) -> None:
    event = _example(SensorSummary)
    other = event.with_envelope(event_id=uuid.uuid4())
    batch = core.decode([_record(codec, e, offset=i) for i, e in enumerate([event, other, event, event])])
    assert [s.event for s in batch.events[SensorSummary]] == [event, other]
    assert [s.offset for s in batch.events[SensorSummary]] == [0, 1]  # the first copy is kept
    assert batch.duplicates == 2


def test_undecodable_and_unknown_schema_are_dead_letters(core: IngestCore, codec: AvroCodec) -> None:
    good = _record(codec, _example(Deviation))
    unknown = struct.pack(">bI", 0, 987_654) + good.value[5:]  # type: ignore[index]
    truncated = good.value[:12]  # type: ignore[index]
    records = [
        RawRecord("atmp.deviations.v1", 1, 7, b"k", b"not avro at all"),
        RawRecord("atmp.deviations.v1", 1, 8, good.key, unknown),
        RawRecord("atmp.deviations.v1", 1, 9, good.key, truncated),
        RawRecord("atmp.deviations.v1", 1, 10, good.key, None),
        RawRecord("somewhere.else", 1, 11, good.key, good.value),
        good,
    ]
    batch = core.decode(records)
    assert _reasons(batch.dead_letters) == [
        DeadLetterReason.UNDECODABLE,
        DeadLetterReason.UNKNOWN_SCHEMA,
        DeadLetterReason.UNDECODABLE,
        DeadLetterReason.EMPTY,
        DeadLetterReason.UNKNOWN_TOPIC,
    ]
    assert batch.dead_letters[1].schema_id == 987_654
    assert "987654" in batch.dead_letters[1].reason
    assert len(batch) == 1  # the good record flows on


def test_invalid_event_names_the_field(core: IngestCore, codec: AvroCodec) -> None:
    step = cast(BatchStep, _example(BatchStep))
    record = step.to_avro() | {"transition": StepTransition.FAILED.value, "failure_reason": None}
    raw = codec.encode_record(BatchStep.subject(), record)
    batch = core.decode([RawRecord(BatchStep.TOPIC, 0, 3, step.partition_key().encode(), raw)])
    (letter,) = batch.dead_letters
    assert letter.reason_code is DeadLetterReason.INVALID
    assert "failure_reason" in letter.reason
    assert letter.event_id == step.envelope.event_id  # what could be read is kept
    assert letter.site_id == step.envelope.site_id


def test_event_on_another_familys_topic_is_refused(core: IngestCore, codec: AvroCodec) -> None:
    deviation = _example(Deviation)
    batch = core.decode([_record(codec, deviation, topic=BatchStep.TOPIC)])
    assert _reasons(batch.dead_letters) == [DeadLetterReason.WRONG_TOPIC]


def test_key_must_be_the_partition_key(core: IngestCore, codec: AvroCodec) -> None:
    step = _example(BatchStep)
    batch = core.decode([_record(codec, step, key="some-other-batch")])
    (letter,) = batch.dead_letters
    assert letter.reason_code is DeadLetterReason.KEY_MISMATCH
    assert "some-other-batch" in letter.reason


def test_mirrored_topic_must_carry_its_own_sites_events(core: IngestCore, codec: AvroCodec) -> None:
    deviation = _example(Deviation)
    site = deviation.envelope.site_id
    assert site is not None
    own = _record(codec, deviation, topic=f"{site}.{Deviation.TOPIC}")
    foreign = _record(
        codec, deviation.with_envelope(event_id=uuid.uuid4()), topic=f"site-zz.{Deviation.TOPIC}"
    )
    batch = core.decode([own, foreign])
    assert [s.event for s in batch.events[Deviation]] == [deviation]
    assert _reasons(batch.dead_letters) == [DeadLetterReason.SITE_MISMATCH]


def test_dead_letter_headers_carry_reason_and_source(codec: AvroCodec) -> None:
    record = RawRecord("atmp.deviations.v1", 2, 41, b"k", b"x", [("traceparent", b"tp")])
    headers = dict(dead_letter_headers(DeadLetter(record, DeadLetterReason.UNDECODABLE, "bad magic byte")))
    assert headers[HEADER_REASON_CODE] == b"UNDECODABLE"
    assert headers[HEADER_SOURCE_OFFSET] == b"41"
    assert headers["traceparent"] == b"tp"  # the original headers stay
