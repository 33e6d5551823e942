"""An event id is stored once: identical re-deliveries collapse, a copy with other content is refused.

GMP data must never be altered silently. The event store keeps the row inserted last for an
event id, so the ingest checks each batch (within itself and against the store) before it
writes: the first stored copy stays, a conflicting copy becomes an EVENT_ID_CONFLICT dead letter.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

import pytest
from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Deviation, Event, SensorSummary
from atmpnet.contract.examples import example_events
from atmpnet.contract.registry import CatalogSource
from atmpnet.streams.dead_letter import DeadLetterReason, RawRecord
from atmpnet.streams.ingest import IngestCore, WrittenBatch
from atmpnet.warehouse.dead_letters import DeadLetterRow, dead_letters
from atmpnet.warehouse.event_store import count_events, raw_events
from atmpnet.warehouse.migrations import apply_migrations
from clickhouse_connect.driver.client import Client

pytestmark = pytest.mark.integration


@pytest.fixture
def core(clickhouse: Client, codec: AvroCodec) -> IngestCore:
    apply_migrations(clickhouse)
    return IngestCore(clickhouse, codec)


def _example(event_type: type[Event]) -> Event:
    return next(e for e in example_events() if isinstance(e, event_type))


def _record(
    codec: AvroCodec, event: Event, offset: int, topic: str | None = None, partition: int = 0
) -> RawRecord:
    return RawRecord(
        topic or type(event).TOPIC, partition, offset, event.partition_key().encode(), codec.encode(event)
    )


def _others(n: int) -> list[Event]:
    """Events with fresh ids (the rest of a batch)."""
    base = _example(SensorSummary)
    return [base.with_envelope(event_id=uuid.uuid4()) for _ in range(n)]


def _edited(deviation: Event) -> Event:
    """The same event id with other content (a producer bug, or tampering upstream)."""
    assert isinstance(deviation, Deviation)
    return deviation.model_copy(update={"description": deviation.description + " (edited)"})


def _stored_raw(core: IngestCore, event: Event) -> bytes:
    return raw_events(core.client, [event.envelope.event_id])[event.envelope.event_id][1]


def _conflicts(core: IngestCore) -> list[DeadLetterRow]:
    return [r for r in dead_letters(core.client) if r.reason_code == DeadLetterReason.EVENT_ID_CONFLICT.value]


def test_identical_copies_collapse_silently_within_and_across_batches(
    core: IngestCore, codec: AvroCodec
) -> None:
    deviation = _example(Deviation)
    others = _others(3)
    first = core.process(
        [
            _record(codec, deviation, 0),
            _record(codec, deviation, 1),
            *[_record(codec, e, 10 + i) for i, e in enumerate(others)],
        ]
    )
    assert first.duplicates == 1  # the second copy in the batch
    # an outbox resend (new offset), a replay (same offset) and a MirrorMaker copy: the same bytes
    site = deviation.envelope.site_id
    assert site is not None
    mirrored = f"{site}.{Deviation.TOPIC}"
    again = core.process(
        [_record(codec, deviation, 2), _record(codec, deviation, 0), _record(codec, deviation, 5, mirrored)]
    )
    assert again.duplicates == 3
    # still handed to the hooks (a retry after a failed hook must reach them), never inserted again
    assert again.of(Deviation) == [deviation]
    assert count_events(core.client, Deviation) == 1
    assert count_events(core.client) == 1 + len(others)
    assert dead_letters(core.client) == []
    (row,) = core.client.query(
        "SELECT topic, `partition`, `offset`, count() FROM deviations GROUP BY topic, `partition`, `offset`"
    ).result_rows
    assert row == (Deviation.TOPIC, 0, 0, 1)  # one physical row: where the first copy came from


def test_a_conflicting_copy_in_a_later_batch_is_a_dead_letter(core: IngestCore, codec: AvroCodec) -> None:
    deviation = _example(Deviation)
    core.process([_record(codec, deviation, 0, partition=2)])
    original = _stored_raw(core, deviation)
    edited = _edited(deviation)
    rest = _others(4)
    written = core.process(
        [_record(codec, edited, 7), *[_record(codec, e, 20 + i) for i, e in enumerate(rest)]]
    )
    assert _stored_raw(core, deviation) == original == codec.encode(deviation)  # unchanged
    assert written.of(Deviation) == []  # the conflicting copy reaches no hook
    assert len(written.of(SensorSummary)) == len(rest)  # the rest of the batch is written
    assert count_events(core.client) == 1 + len(rest)
    (letter,) = _conflicts(core)
    assert (letter.topic, letter.partition, letter.offset) == (Deviation.TOPIC, 0, 7)
    assert letter.value == codec.encode(edited)
    assert letter.key == edited.partition_key().encode()
    assert letter.event_id == deviation.envelope.event_id
    assert str(deviation.envelope.event_id) in letter.reason
    assert "Deviation" in letter.reason
    assert f"{Deviation.TOPIC}[2]@0" in letter.reason  # where the kept copy came from
    # re-delivered (the batch was not committed): still refused, still one dead-letter row
    core.process([_record(codec, edited, 7)])
    assert _stored_raw(core, deviation) == original
    assert len(_conflicts(core)) == 1


def test_a_conflicting_copy_within_a_batch_is_a_dead_letter(core: IngestCore, codec: AvroCodec) -> None:
    deviation = _example(Deviation)
    edited = _edited(deviation)
    rest = _others(2)
    records = [
        _record(codec, deviation, 3),
        _record(codec, edited, 4),
        _record(codec, deviation, 5),  # identical to the first: a duplicate
        *[_record(codec, e, 10 + i) for i, e in enumerate(rest)],
    ]
    written = core.process(records)
    assert written.duplicates == 1
    assert _stored_raw(core, deviation) == codec.encode(deviation)
    assert count_events(core.client) == 1 + len(rest)
    (letter,) = _conflicts(core)
    assert letter.offset == 4
    assert letter.value == codec.encode(edited)
    assert str(deviation.envelope.event_id) in letter.reason
    assert f"{Deviation.TOPIC}[0]@3" in letter.reason


def test_a_batch_holding_both_versions_keeps_the_stored_one(core: IngestCore, codec: AvroCodec) -> None:
    """The stored copy is the first: a batch whose first copy is the edited one changes nothing."""
    deviation = _example(Deviation)
    edited = _edited(deviation)
    core.process([_record(codec, deviation, 0)])
    written = core.process([_record(codec, edited, 1), _record(codec, deviation, 2)])
    assert written.duplicates == 1  # the copy equal to the stored one
    assert _stored_raw(core, deviation) == codec.encode(deviation)
    (letter,) = _conflicts(core)
    assert letter.offset == 1
    assert f"{Deviation.TOPIC}[0]@0" in letter.reason


def test_a_failed_hook_is_retried_without_a_second_insert(core: IngestCore, codec: AvroCodec) -> None:
    seen: list[WrittenBatch] = []
    failing = [True]

    def hook(_client: Client, batch: WrittenBatch) -> None:
        if failing[0]:
            failing[0] = False
            raise RuntimeError("view refresh failed")
        seen.append(batch)

    core.add_after_write(hook)
    records = [_record(codec, e, i) for i, e in enumerate(_others(3))]
    with pytest.raises(RuntimeError):
        core.process(records)
    retried = core.process(records)
    assert len(retried) == 3 and retried.duplicates == 3  # stored by the failed attempt
    assert seen == [retried]
    assert core.client.query("SELECT count() FROM sensor_summaries").result_rows[0][0] == 3


class _Renumbered(CatalogSource):
    """A registry that also knows every schema under a second id (id + 1000)."""

    def writer_schema(self, schema_id: int) -> dict[str, Any]:
        return super().writer_schema(schema_id - 1000 if schema_id > 1000 else schema_id)


def test_only_the_schema_id_differs(catalog: SchemaCatalog) -> None:
    """Same body under another id of the same writer schema: a duplicate; of another schema: not."""
    codec = AvroCodec(catalog, _Renumbered(catalog))
    core = IngestCore(None, codec)  # type: ignore[arg-type]  # same_content needs no database
    raw = codec.encode(_example(Deviation))
    _magic, schema_id = struct.unpack_from(">bI", raw)
    renumbered = struct.pack(">bI", 0, schema_id + 1000) + raw[5:]
    own = catalog.by_id(schema_id).fingerprint
    other_schema = next(
        v.schema_id for s in catalog.subjects() for v in catalog.versions(s) if v.fingerprint != own
    )
    assert core.same_content(raw, raw)
    assert core.same_content(raw, renumbered)
    assert not core.same_content(raw, struct.pack(">bI", 0, other_schema) + raw[5:])
    assert not core.same_content(raw, struct.pack(">bI", 0, 987_654) + raw[5:])  # unknown: cannot prove
    assert not core.same_content(raw, raw[:-1] + bytes([raw[-1] ^ 1]))
