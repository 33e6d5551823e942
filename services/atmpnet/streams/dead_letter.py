"""Dead letters: records the processors reject, sent to the dead-letter topic with the reason.

A bad record is data, not a crash: it goes to ``atmp.dead-letter.v1`` under its original key
and value, with the reason and its source (topic, partition, offset) in headers, and to the
``dead_letters`` table; the stream flows on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from uuid import UUID

from confluent_kafka import KafkaError, Producer

from atmpnet.transport import DEAD_LETTER_TOPIC, TransportError


class DeadLetterReason(StrEnum):
    """Why a record was rejected (the ``atmp.dlq.reason-code`` header and table column)."""

    EMPTY = "EMPTY"  # no value (a tombstone): events are never deleted
    UNKNOWN_TOPIC = "UNKNOWN_TOPIC"  # read from a topic that carries no event family
    UNDECODABLE = "UNDECODABLE"  # not Confluent wire-format Avro of its writer schema
    UNKNOWN_SCHEMA = "UNKNOWN_SCHEMA"  # names a schema id neither the catalog nor the registry knows
    WRONG_TOPIC = "WRONG_TOPIC"  # an event of one family on another family's topic
    INVALID = "INVALID"  # decodes but fails the event model's validation
    KEY_MISMATCH = "KEY_MISMATCH"  # the record key is not the event's partition key
    SITE_MISMATCH = "SITE_MISMATCH"  # the topic's site prefix is not the event's site_id
    # an event id already stored (or earlier in the batch) with other content: the first copy stays
    EVENT_ID_CONFLICT = "EVENT_ID_CONFLICT"


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record as read from Kafka: where from, key, value and headers, untouched."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected record, the reason, and what could be read of it."""

    record: RawRecord
    reason_code: DeadLetterReason
    reason: str
    schema_id: int | None = None
    event_id: UUID | None = None
    site_id: str | None = None


HEADER_REASON = "atmp.dlq.reason"
HEADER_REASON_CODE = "atmp.dlq.reason-code"
HEADER_SOURCE_TOPIC = "atmp.dlq.source-topic"
HEADER_SOURCE_PARTITION = "atmp.dlq.source-partition"
HEADER_SOURCE_OFFSET = "atmp.dlq.source-offset"


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The record's own headers plus the reason and its source position."""
    record = letter.record
    return [
        *[(k, v) for k, v in record.headers if not k.startswith("atmp.dlq.")],
        (HEADER_REASON, letter.reason.encode("utf-8", "replace")[:4000]),
        (HEADER_REASON_CODE, letter.reason_code.value.encode()),
        (HEADER_SOURCE_TOPIC, record.topic.encode()),
        (HEADER_SOURCE_PARTITION, str(record.partition).encode()),
        (HEADER_SOURCE_OFFSET, str(record.offset).encode()),
    ]


class DeadLetterPublisher:
    """Produces dead letters and waits until the broker has them (before the source is committed)."""

    def __init__(self, producer_conf: dict[str, Any], topic: str = DEAD_LETTER_TOPIC) -> None:
        self.topic = topic
        self._producer = Producer(producer_conf)

    def publish(self, letters: Sequence[DeadLetter], timeout_s: float = 30.0) -> None:
        """Send every letter and flush; raise TransportError if any was not delivered."""
        if not letters:
            return
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                failures.append(str(err))

        for letter in letters:
            self._producer.produce(
                self.topic,
                key=letter.record.key,
                value=letter.record.value,
                headers=dead_letter_headers(letter),  # type: ignore[arg-type]  # list is invariant
                on_delivery=on_delivery,
            )
            self._producer.poll(0)
        remaining = self._producer.flush(timeout_s)
        if remaining or failures:
            raise TransportError(
                f"{remaining or len(failures)} dead letters not delivered to {self.topic}: "
                f"{failures[:1] or 'flush timed out'}"
            )

    def close(self) -> None:
        """Deliver what is queued."""
        self._producer.flush(10)
