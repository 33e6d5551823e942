"""The ingest core: a batch of raw records -> decoded events + dead letters -> one write.

No faust and no broker here (the faust agent in ``app.py`` is a thin shell around it), so it is
tested with plain records and a real ClickHouse. One call of ``IngestCore.process`` decodes,
validates, checks the site rule, dedupes by event id, sends bad records to the dead-letter
topic and table, writes the events to the event store and runs the post-write hooks; the
caller commits the batch's offsets only after it returned. A failure anywhere raises and
nothing of the batch may be committed: a retry or a re-delivery processes it again.

Stored events are never altered: an event id is inserted once. A later copy with the same
content (an outbox resend, a replay after a crash, a MirrorMaker copy) is a duplicate and is
dropped; a copy with other content is an EVENT_ID_CONFLICT dead letter and the first copy
stays. Both within a batch (``decode``) and against the store (``write``, before anything of
the batch is written).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from clickhouse_connect.driver.client import Client
from opentelemetry import trace
from opentelemetry.trace import Link

from atmpnet import telemetry
from atmpnet.contract.catalog import fingerprint
from atmpnet.contract.codec import HEADER, MAGIC_BYTE, AvroCodec
from atmpnet.contract.events import EVENT_TYPE_BY_RECORD, EVENT_TYPES, Event, parse_event
from atmpnet.errors import EventValidationError, PayloadError, UnknownSchemaId
from atmpnet.streams.dead_letter import DeadLetter, DeadLetterReason, RawRecord
from atmpnet.streams.record_rules import FAST_RULES
from atmpnet.warehouse.chain_heads import record_chain_heads
from atmpnet.warehouse.dead_letters import DeadLetterRow, insert_dead_letters
from atmpnet.warehouse.event_store import StoredCopy, StoredEvent, insert_events, stored_copies

log = logging.getLogger(__name__)
_tracer = telemetry.tracer("atmpnet.streams.ingest")
_meter = telemetry.meter("atmpnet.streams.ingest")
_events_processed = _meter.create_counter(
    "atmpnet.ingest.events", unit="{event}", description="Events written to the event store."
)
_dead_lettered = _meter.create_counter(
    "atmpnet.ingest.dead_letters", unit="{record}", description="Records sent to the dead-letter topic."
)
_duplicates = _meter.create_counter(
    "atmpnet.ingest.duplicates",
    unit="{event}",
    description="Identical copies of an event id dropped (within a batch or already stored).",
)
_write_batch_size = _meter.create_histogram(
    "atmpnet.ingest.write_batch_size", unit="{event}", description="Events per event-store write."
)
_write_latency = _meter.create_histogram(
    "atmpnet.ingest.write_latency",
    unit="s",
    description="Time to write one batch (store, dead letters, hooks).",
)

# per-event spans are capped per batch: tracing must not cost more than the write it describes
MAX_EVENT_SPANS_PER_BATCH = 1000


class TopicRouter:
    """Which event family a topic carries, and the site a mirrored topic's prefix names.

    ``atmp.deviations.v1`` and its MirrorMaker copy ``site-a.atmp.deviations.v1`` both carry
    deviations; the second only for site ``site-a``. ``pattern`` subscribes to both.
    """

    def __init__(self, topics: dict[type[Event], str] | None = None) -> None:
        self.topics = dict(topics or {t: t.TOPIC for t in EVENT_TYPES})
        self._by_base = {name: t for t, name in self.topics.items()}
        ordered = sorted(self._by_base, key=len, reverse=True)
        bases = "|".join(re.escape(name) for name in ordered)
        self.pattern = rf"^(?:[a-z0-9][a-z0-9-]{{0,62}}\.)?(?:{bases})$"
        # the same set as a POSIX extended regex (librdkafka's subscription syntax: no (?:...),
        # only "." and "-" to escape in topic names): a consumer subscribed to it picks up a
        # site's mirrored topic created later, at its next metadata refresh
        posix_bases = "|".join(name.replace(".", "\\.") for name in ordered)
        self.subscription = rf"^([a-z0-9][a-z0-9-]{{0,62}}\.)?({posix_bases})$"
        self._regex = re.compile(rf"^(?:(?P<site>[a-z0-9][a-z0-9-]{{0,62}})\.)?(?P<base>{bases})$")
        self._cache: dict[str, tuple[type[Event], str | None] | None] = {}

    def route(self, topic: str) -> tuple[type[Event], str | None] | None:
        """``(event type, site prefix or None)`` of a topic, or None when it carries no family."""
        if topic not in self._cache:
            match = self._regex.match(topic)
            self._cache[topic] = (self._by_base[match["base"]], match["site"]) if match else None
        return self._cache[topic]


@dataclass
class IngestTimings:
    """Where the core's time went (seconds, cumulative): for the benchmark and logs."""

    batches: int = 0
    records: int = 0
    decode_s: float = 0.0
    store_s: float = 0.0
    hooks_s: float = 0.0


@dataclass
class DecodedBatch:
    """What one batch of records turned into."""

    events: dict[type[Event], list[StoredEvent]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0
    # the records decoded (a store conflict found by ``write`` is dead-lettered with its own)
    records: Sequence[RawRecord] = ()

    def __len__(self) -> int:
        return sum(len(v) for v in self.events.values())


@dataclass(frozen=True)
class WrittenBatch:
    """Events (per family) and dead letters of one batch, after the write succeeded.

    Re-delivery after a crash hands the same events to the hooks again: hooks must be
    idempotent (views are, being projections keyed by event id). ``stored`` holds the batch's
    events also when an identical copy was already stored and this one was not inserted (so a
    batch whose hooks failed reaches them again on the retry); never a conflicting copy.
    """

    stored: dict[type[Event], list[StoredEvent]]
    dead_letters: list[DeadLetter]
    ingested_at: datetime
    duplicates: int = 0  # identical copies dropped: within the batch, or already in the store

    @property
    def events(self) -> dict[type[Event], list[Event]]:
        """The decoded events per family (only families present in the batch)."""
        return {t: [s.event for s in stored] for t, stored in self.stored.items() if stored}

    def of(self, event_type: type[Event]) -> list[Event]:
        """The batch's events of one family."""
        return [s.event for s in self.stored.get(event_type, ())]

    def __len__(self) -> int:
        return sum(len(v) for v in self.stored.values())


@dataclass
class StorePlan:
    """What ``write`` does with a decoded batch after comparing it with the store."""

    insert: dict[type[Event], list[StoredEvent]] = field(default_factory=dict)  # new event ids
    written: dict[type[Event], list[StoredEvent]] = field(default_factory=dict)  # for the hooks
    dead_letters: list[DeadLetter] = field(default_factory=list)  # the batch's and the conflicts
    duplicates: int = 0  # identical copies already stored


AfterWriteHook = Callable[[Client, WrittenBatch], None]


class DeadLetterSink(Protocol):
    """Where dead letters go besides the table (the dead-letter topic)."""

    def publish(self, letters: Sequence[DeadLetter], timeout_s: float = ...) -> None:
        """Deliver the letters or raise."""


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> str | None:
    for k, v in headers:
        if k == name and v is not None:
            return v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)
    return None


def _envelope_hint(record: dict[str, Any] | None) -> tuple[UUID | None, str | None]:
    env = (record or {}).get("envelope") or {}
    event_id = env.get("event_id")
    if isinstance(event_id, str):
        try:
            event_id = UUID(event_id)
        except ValueError:
            event_id = None
    return (event_id if isinstance(event_id, UUID) else None), env.get("site_id")


class IngestCore:
    """Decode, validate, dedupe and write batches of records; run hooks after each write."""

    def __init__(
        self,
        client: Client,
        codec: AvroCodec,
        *,
        router: TopicRouter | None = None,
        dead_letter_sink: DeadLetterSink | None = None,
        fast_rules: bool = True,
    ) -> None:
        self.client = client
        # validate sensor summaries on the record (record_rules.py); False: pydantic for every event
        self.fast_rules = fast_rules
        self.codec = codec
        self.router = router or TopicRouter()
        self.dead_letter_sink = dead_letter_sink
        self._hooks: list[AfterWriteHook] = []
        self.timings = IngestTimings()

    def add_after_write(self, hook: AfterWriteHook) -> None:
        """Run ``hook(client, written_batch)`` after every successful write, in registration order.

        A hook that raises fails the batch: its offsets are not committed and it is written
        (and handed to every hook) again, so hooks must be idempotent.
        """
        self._hooks.append(hook)

    # -- decode -----------------------------------------------------------------------------

    def _reject(
        self,
        out: DecodedBatch,
        record: RawRecord,
        code: DeadLetterReason,
        reason: str,
        schema_id: int | None = None,
        avro: dict[str, Any] | None = None,
    ) -> None:
        event_id, site_id = _envelope_hint(avro)
        out.dead_letters.append(DeadLetter(record, code, reason, schema_id, event_id, site_id))

    def decode(self, records: Iterable[RawRecord]) -> DecodedBatch:  # noqa: PLR0912, PLR0915 - the hot loop, inlined
        """Turn records into stored events (first copy of each event id) and dead letters.

        A later copy of an event id is a duplicate when it has the same content as the first,
        else an EVENT_ID_CONFLICT dead letter (``same_content``).
        """
        records = records if isinstance(records, Sequence) else list(records)
        out = DecodedBatch(records=records)
        seen: dict[UUID, StoredEvent] = {}
        same_content = self.same_content
        route_of = self.router.route
        decode_record = self.codec.decode_record
        fast = self.fast_rules
        fast_rules = FAST_RULES
        for record in records:
            value = record.value
            if value is None:
                self._reject(out, record, DeadLetterReason.EMPTY, "record has no value")
                continue
            route = route_of(record.topic)
            if route is None:
                self._reject(
                    out, record, DeadLetterReason.UNKNOWN_TOPIC, f"topic {record.topic} carries no events"
                )
                continue
            topic_type, site_prefix = route
            magic, schema_id = HEADER.unpack_from(value) if len(value) >= HEADER.size else (None, None)
            schema_id = schema_id if magic == 0 else None
            try:
                record_name, avro = decode_record(value)
            except UnknownSchemaId as exc:
                self._reject(out, record, DeadLetterReason.UNKNOWN_SCHEMA, str(exc), schema_id)
                continue
            except PayloadError as exc:
                self._reject(out, record, DeadLetterReason.UNDECODABLE, str(exc), schema_id)
                continue
            event_type = EVENT_TYPE_BY_RECORD[record_name]
            if event_type is not topic_type:
                reason = f"a {record_name} event on {record.topic}, which carries {topic_type.RECORD}"
                self._reject(out, record, DeadLetterReason.WRONG_TOPIC, reason, schema_id, avro)
                continue
            rules = fast_rules.get(event_type) if fast else None
            event: Event | None = None
            if rules is not None and rules.valid(avro):
                # the contract's rules hold (record_rules.py): no model until something reads it
                expected_key = rules.partition_key(avro)
                envelope = avro["envelope"]
                site_id, event_id = envelope["site_id"], envelope["event_id"]
            else:
                try:
                    event = parse_event(event_type, avro)
                except EventValidationError as exc:
                    self._reject(out, record, DeadLetterReason.INVALID, str(exc), schema_id, avro)
                    continue
                expected_key = event.partition_key()
                site_id, event_id = event.envelope.site_id, event.envelope.event_id
            key = record.key.decode("utf-8", "replace") if record.key is not None else None
            if key != expected_key:
                reason = f"record key {key!r} is not the event's partition key {expected_key!r}"
                self._reject(out, record, DeadLetterReason.KEY_MISMATCH, reason, schema_id, avro)
                continue
            if site_prefix is not None and site_id is not None and site_id != site_prefix:
                reason = f"event of site {site_id!r} on {record.topic}, mirrored from site {site_prefix!r}"
                self._reject(out, record, DeadLetterReason.SITE_MISMATCH, reason, schema_id, avro)
                continue
            first = seen.get(event_id)
            if first is not None:
                if same_content(first.raw, value):
                    out.duplicates += 1
                else:
                    where = f"earlier in this batch from {_source(first)}"
                    reason = _conflict_reason(event_id, event_type, first.event_type, where)
                    self._reject(out, record, DeadLetterReason.EVENT_ID_CONFLICT, reason, schema_id, avro)
                continue
            stored = StoredEvent(
                event,
                schema_id or 0,
                record.topic,
                record.partition,
                record.offset,
                value,
                _header(record.headers, "traceparent") if record.headers else None,
                record=avro if event is None else None,
                event_type=event_type,
            )
            seen[event_id] = stored
            out.events.setdefault(event_type, []).append(stored)
        return out

    def same_content(self, first: bytes, other: bytes) -> bool:
        """Whether two records of one event id carry the same event (then ``other`` is a duplicate).

        The record bytes decide, header included: the outbox resends the bytes it stored, a
        replay re-reads them and MirrorMaker copies them, so every honest re-delivery is
        byte-identical. The chain hash (contract/chain.py) leaves the 5-byte header out; it is
        not used alone because the header's schema id says how the body is read: the same body
        under another writer schema can be another event, and calling it a duplicate would drop
        it silently. So a copy whose only difference is the schema id (a registry that
        renumbered, a replicator translating ids) is a duplicate only when both ids name the
        same writer schema (same fingerprint); anything else is a conflict, which is loud
        (a dead letter to review), never silent.
        """
        if first == other:
            return True
        size = HEADER.size
        if len(first) != len(other) or len(first) < size or first[size:] != other[size:]:
            return False
        try:
            (magic_a, id_a), (magic_b, id_b) = HEADER.unpack_from(first), HEADER.unpack_from(other)
            if magic_a != MAGIC_BYTE or magic_b != MAGIC_BYTE:
                return False
            source = self.codec.source
            return fingerprint(source.writer_schema(id_a)) == fingerprint(source.writer_schema(id_b))
        except Exception:  # an unknown id cannot prove sameness: a conflict, for review
            return False

    def against_store(self, batch: DecodedBatch, records: Sequence[RawRecord] = ()) -> StorePlan:
        """Compare the batch's events with the copies already stored under their event ids.

        One query per family present (``stored_copies``: the ids, within the batch's sites).
        Not stored: insert. Stored with the same content: a duplicate, not inserted again (the
        engine would keep the copy inserted last, changing where the row says it came from),
        but still handed to the hooks. Stored with other content: an EVENT_ID_CONFLICT dead
        letter naming the stored copy. The batch's own conflicts (from ``decode``) are judged
        against the stored copy too when there is one: the stored copy is the first.
        """
        plan = StorePlan()
        stored_by_family: dict[type[Event], dict[UUID, StoredCopy]] = {}
        conflicting: list[tuple[StoredEvent, StoredCopy]] = []
        for event_type, events in batch.events.items():
            if not events:
                continue
            stored = stored_copies(
                self.client, event_type, [s.event_id for s in events], {s.site_id for s in events}
            )
            if not stored:
                plan.insert[event_type] = events
                plan.written[event_type] = events
                continue
            stored_by_family[event_type] = stored
            fresh: list[StoredEvent] = []
            kept: list[StoredEvent] = []
            for event in events:
                copy = stored.get(event.event_id)
                if copy is None:
                    fresh.append(event)
                    kept.append(event)
                elif self.same_content(copy.raw, event.raw):
                    plan.duplicates += 1
                    kept.append(event)
                else:
                    conflicting.append((event, copy))
            plan.insert[event_type] = fresh
            plan.written[event_type] = kept
        self._judge_batch_conflicts(batch.dead_letters, stored_by_family, plan)
        if conflicting:
            self._store_conflicts(conflicting, records or batch.records, plan)
        return plan

    def _judge_batch_conflicts(
        self,
        letters: Sequence[DeadLetter],
        stored_by_family: dict[type[Event], dict[UUID, StoredCopy]],
        plan: StorePlan,
    ) -> None:
        """The batch's dead letters into the plan; its conflicts judged against a stored copy."""
        for letter in letters:
            route = self.router.route(letter.record.topic)
            copy = (
                stored_by_family.get(route[0], {}).get(letter.event_id)
                if route and letter.event_id and letter.reason_code is DeadLetterReason.EVENT_ID_CONFLICT
                else None
            )
            if copy is None or route is None:  # not a conflict, or one with the batch's first copy only
                plan.dead_letters.append(letter)
            elif self.same_content(copy.raw, letter.record.value or b""):
                plan.duplicates += 1  # other than the batch's first copy, but what the store holds
            else:
                reason = _conflict_reason(copy.event_id, route[0], route[0], f"stored from {copy.source}")
                plan.dead_letters.append(
                    DeadLetter(
                        letter.record,
                        letter.reason_code,
                        reason,
                        letter.schema_id,
                        letter.event_id,
                        letter.site_id,
                    )
                )

    @staticmethod
    def _store_conflicts(
        conflicting: list[tuple[StoredEvent, StoredCopy]], records: Sequence[RawRecord], plan: StorePlan
    ) -> None:
        """A dead letter, with its original record, for each event that conflicts with the store."""
        by_position = {(r.topic, r.partition, r.offset): r for r in records}
        for event, copy in conflicting:
            record = by_position.get((event.topic, event.partition, event.offset))
            if record is None:  # write() called without its records: rebuild what is known
                headers = [("traceparent", event.traceparent.encode())] if event.traceparent else []
                record = RawRecord(event.topic, event.partition, event.offset, None, event.raw, headers)
            reason = _conflict_reason(
                event.event_id, event.event_type, event.event_type, f"stored from {copy.source}"
            )
            plan.dead_letters.append(
                DeadLetter(
                    record,
                    DeadLetterReason.EVENT_ID_CONFLICT,
                    reason,
                    event.schema_id,
                    event.event_id,
                    event.site_id or None,
                )
            )

    # -- write ------------------------------------------------------------------------------

    def write(self, batch: DecodedBatch, records: Sequence[RawRecord] = ()) -> WrittenBatch:
        """Check against the store, then dead letters, new events, hooks; raise on any failure.

        Dead letters go to the topic and the table, events not stored yet to the store, then
        every hook runs (``against_store`` says which events are new and which conflict).
        """
        started = time.perf_counter()
        ingested_at = datetime.now(UTC)
        plan = self.against_store(batch, records)
        for letter in plan.dead_letters:
            log.warning(
                "dead letter %s %s[%d]@%d: %s",
                letter.reason_code.value,
                letter.record.topic,
                letter.record.partition,
                letter.record.offset,
                letter.reason,
            )
        links = [
            Link(ctx)
            for ctx in (
                trace.get_current_span(telemetry.extract_context(r.headers)).get_span_context()
                for r in records[:128]
                if r.headers
            )
            if ctx.is_valid
        ]
        with _tracer.start_as_current_span(
            "atmpnet.ingest.write",
            links=links,
            attributes={"atmpnet.events": len(batch), "atmpnet.dead_letters": len(plan.dead_letters)},
        ) as span:
            if plan.dead_letters:
                if self.dead_letter_sink is not None:
                    self.dead_letter_sink.publish(plan.dead_letters)
                insert_dead_letters(
                    self.client, [_dead_letter_row(d, ingested_at) for d in plan.dead_letters]
                )
            with _cyclic_gc_paused():
                insert_events(self.client, plan.insert, ingested_at)
            # after the events: a crash in between leaves the heads of a batch that will be
            # re-delivered (stored duplicates count too), never a head without its event
            record_chain_heads(
                self.client, (s for family in plan.written.values() for s in family), ingested_at
            )
            stored_at = time.perf_counter()
            duplicates = batch.duplicates + plan.duplicates
            written = WrittenBatch(plan.written, plan.dead_letters, ingested_at, duplicates)
            for hook in self._hooks:
                hook(self.client, written)
            if span.is_recording():
                _event_spans(written, span, started)
        elapsed = time.perf_counter() - started
        self.timings.store_s += stored_at - started
        self.timings.hooks_s += elapsed - (stored_at - started)
        for event_type, stored in plan.insert.items():
            _events_processed.add(len(stored), {"family": event_type.__name__})
        for letter in plan.dead_letters:
            _dead_lettered.add(1, {"reason": letter.reason_code.value})
        if duplicates:
            _duplicates.add(duplicates)
        _write_batch_size.record(sum(len(v) for v in plan.insert.values()))
        _write_latency.record(elapsed)
        return written

    def process(self, records: Sequence[RawRecord]) -> WrittenBatch:
        """Decode and write one batch; after it returns, the records' offsets may be committed."""
        started = time.perf_counter()
        with _cyclic_gc_paused():
            batch = self.decode(records)
        self.timings.decode_s += time.perf_counter() - started
        self.timings.batches += 1
        self.timings.records += len(records)
        return self.write(batch, records)


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a batch is decoded or turned into rows.

    A batch allocates ~10 objects per event and keeps them all alive, so the collector would
    walk the growing heap again and again (measured: decoding 1.5-2x slower). Decoding and row
    building create no reference cycles, so nothing is freed late; hooks run with it on.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _event_spans(written: WrittenBatch, batch_span: trace.Span, started: float) -> None:
    """One ``atmpnet.ingest.event`` span per traced event, a child of its publish span.

    The batch write is one span (it links to the first records' contexts); each event's own
    trace continues with a child span covering its decode and write, linked to that batch span.
    """
    start_ns = time.time_ns() - int((time.perf_counter() - started) * 1e9)
    link = Link(batch_span.get_span_context())
    made = 0
    for stored in (s for family in written.stored.values() for s in family):
        if stored.traceparent is None:
            continue
        if made >= MAX_EVENT_SPANS_PER_BATCH:
            break
        parent = telemetry.extract_context([("traceparent", stored.traceparent.encode())])
        span = _tracer.start_span(
            "atmpnet.ingest.event",
            context=parent,
            links=[link],
            start_time=start_ns,
            attributes={
                "atmpnet.event_id": str(stored.event_id),
                "messaging.destination.name": stored.topic,
                "messaging.kafka.partition": stored.partition,
                "messaging.kafka.offset": stored.offset,
            },
        )
        span.end()
        made += 1


def _source(event: StoredEvent) -> str:
    return f"{event.topic}[{event.partition}]@{event.offset}"


def _conflict_reason(event_id: UUID, family: type[Event], first_family: type[Event], where: str) -> str:
    """The EVENT_ID_CONFLICT text: which event id, which family, where the kept copy came from."""
    kept = "" if first_family is family else f" (as a {first_family.__name__})"
    return (
        f"event id {event_id} ({family.__name__}) conflicts with the copy {where}{kept}: "
        "same event id, different content; the first copy is kept and this one is not stored"
    )


def _dead_letter_row(letter: DeadLetter, received_at: datetime) -> DeadLetterRow:
    record = letter.record
    return DeadLetterRow(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        received_at=received_at,
        reason_code=letter.reason_code.value,
        reason=letter.reason,
        schema_id=letter.schema_id,
        event_id=letter.event_id,
        site_id=letter.site_id if isinstance(letter.site_id, str) else None,
        key=record.key,
        value=record.value or b"",
        traceparent=_header(record.headers, "traceparent") if record.headers else None,
    )
