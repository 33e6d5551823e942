"""The ingest core: a batch of raw records -> decoded events + dead letters -> one write.

No faust and no broker here (the faust agent in ``app.py`` is a thin shell around it), so it is
tested with plain records and a real ClickHouse. One call of ``IngestCore.process`` decodes,
validates, checks the site rule, dedupes by event id, sends bad records to the dead-letter
topic and table, writes the events to the event store and runs the post-write hooks; the
caller commits the batch's offsets only after it returned. A failure anywhere raises and
nothing of the batch may be committed: a retry or a re-delivery writes it again, and the
store collapses the copies.
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
from atmpnet.contract.codec import HEADER, AvroCodec
from atmpnet.contract.events import EVENT_TYPE_BY_RECORD, EVENT_TYPES, Event, parse_event
from atmpnet.errors import EventValidationError, PayloadError, UnknownSchemaId
from atmpnet.streams.dead_letter import DeadLetter, DeadLetterReason, RawRecord
from atmpnet.streams.record_rules import FAST_RULES
from atmpnet.warehouse.dead_letters import DeadLetterRow, insert_dead_letters
from atmpnet.warehouse.event_store import StoredEvent, insert_events

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
    "atmpnet.ingest.duplicates", unit="{event}", description="Copies of an event id dropped within a batch."
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

    def __len__(self) -> int:
        return sum(len(v) for v in self.events.values())


@dataclass(frozen=True)
class WrittenBatch:
    """Events (per family) and dead letters of one batch, after the write succeeded.

    Re-delivery after a crash hands the same events to the hooks again: hooks must be
    idempotent (views are, being projections keyed by event id).
    """

    stored: dict[type[Event], list[StoredEvent]]
    dead_letters: list[DeadLetter]
    ingested_at: datetime

    @property
    def events(self) -> dict[type[Event], list[Event]]:
        """The decoded events per family (only families present in the batch)."""
        return {t: [s.event for s in stored] for t, stored in self.stored.items() if stored}

    def of(self, event_type: type[Event]) -> list[Event]:
        """The batch's events of one family."""
        return [s.event for s in self.stored.get(event_type, ())]

    def __len__(self) -> int:
        return sum(len(v) for v in self.stored.values())


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

    def decode(self, records: Iterable[RawRecord]) -> DecodedBatch:  # noqa: PLR0915 - the hot loop, inlined
        """Turn records into stored events (first copy of each event id) and dead letters."""
        out = DecodedBatch()
        seen: set[UUID] = set()
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
            if event_id in seen:
                out.duplicates += 1
                continue
            seen.add(event_id)
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
            out.events.setdefault(event_type, []).append(stored)
        return out

    # -- write ------------------------------------------------------------------------------

    def write(self, batch: DecodedBatch, records: Sequence[RawRecord] = ()) -> WrittenBatch:
        """Dead letters to topic and table, events to the store, then the hooks; raise on any failure."""
        started = time.perf_counter()
        ingested_at = datetime.now(UTC)
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
            attributes={"atmpnet.events": len(batch), "atmpnet.dead_letters": len(batch.dead_letters)},
        ) as span:
            if batch.dead_letters:
                if self.dead_letter_sink is not None:
                    self.dead_letter_sink.publish(batch.dead_letters)
                insert_dead_letters(
                    self.client, [_dead_letter_row(d, ingested_at) for d in batch.dead_letters]
                )
            with _cyclic_gc_paused():
                insert_events(self.client, batch.events, ingested_at)
            stored_at = time.perf_counter()
            written = WrittenBatch(batch.events, batch.dead_letters, ingested_at)
            for hook in self._hooks:
                hook(self.client, written)
            if span.is_recording():
                _event_spans(written, span, started)
        elapsed = time.perf_counter() - started
        self.timings.store_s += stored_at - started
        self.timings.hooks_s += elapsed - (stored_at - started)
        for event_type, stored in batch.events.items():
            _events_processed.add(len(stored), {"family": event_type.__name__})
        for letter in batch.dead_letters:
            _dead_lettered.add(1, {"reason": letter.reason_code.value})
        if batch.duplicates:
            _duplicates.add(batch.duplicates)
        _write_batch_size.record(len(batch))
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
        if batch.dead_letters:
            for letter in batch.dead_letters:
                log.warning(
                    "dead letter %s %s[%d]@%d: %s",
                    letter.reason_code.value,
                    letter.record.topic,
                    letter.record.partition,
                    letter.record.offset,
                    letter.reason,
                )
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
