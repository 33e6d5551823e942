"""SitePublisher: the Python SDK site systems publish events with, losing none.

validate -> stamp sequence and ``previous_hash`` (the stream's hash chain) -> encode (Confluent
wire format) -> durable outbox (SQLite, WAL; sequence, chain head and record in one transaction)
-> idempotent produce (acks=all), keyed by ``partition_key()``, with W3C
trace context in the headers -> deleted from the outbox only in the broker's acknowledgement.
Records still in the outbox when a publisher starts are produced again first, in outbox order.

Threads: callers publish from any thread; one delivery thread per publisher polls the producer,
marks acknowledged records delivered, and produces the backlog (records committed while the
producer's local queue was full, or left over from an earlier run). See docs/publishing.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation

from atmpnet import telemetry
from atmpnet.contract.codec import HEADER, AvroCodec
from atmpnet.contract.events import Event
from atmpnet.errors import OutboxFull, PublishRefused
from atmpnet.settings import Settings
from atmpnet.site.outbox import Durability, Outbox
from atmpnet.site.record_writer import EventEncoder, EventWriter
from atmpnet.transport import producer_config

__all__ = ["OutboxFull", "PublishRefused", "SitePublisher"]

log = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)
_meter = telemetry.meter(__name__)
_published = _meter.create_counter("atmpnet.publisher.events.published", description="Events in the outbox")
_delivered = _meter.create_counter(
    "atmpnet.publisher.events.delivered", description="Events acknowledged by the broker"
)
_failed = _meter.create_counter(
    "atmpnet.publisher.events.failed", description="Delivery attempts that failed (the event is retried)"
)

_BACKLOG_CHUNK = 5_000
_RETRY_AFTER_S = 1.0
# acknowledgements ride on the next publish's commit; without one, the delivery thread commits them
_APPLY_ACKS_AFTER_S = 0.05


_new = object.__new__
_set = object.__setattr__
_sha256 = hashlib.sha256
_BODY = HEADER.size  # the chain hash covers the Avro body: the payload after its wire-format header


def _with_link(event: Event, sequence: int, previous_hash: str | None) -> Event:
    """``event.with_envelope(sequence=..., previous_hash=...)`` without pydantic's slower copy machinery.

    The event is already valid; the sequence and the hash the outbox stamps are valid by construction.
    """
    envelope = event.envelope
    stamped = _new(type(envelope))
    _set(stamped, "__dict__", {**envelope.__dict__, "sequence": sequence, "previous_hash": previous_hash})
    fields_set = envelope.__pydantic_fields_set__  # sequence is required, so always in it
    if "previous_hash" not in fields_set:
        fields_set = fields_set | {"previous_hash"}
    _set(stamped, "__pydantic_fields_set__", fields_set)
    _set(stamped, "__pydantic_extra__", None)
    _set(stamped, "__pydantic_private__", None)
    copy = _new(type(event))
    _set(copy, "__dict__", {**event.__dict__, "envelope": stamped})
    _set(copy, "__pydantic_fields_set__", event.__pydantic_fields_set__)
    _set(copy, "__pydantic_extra__", None)
    _set(copy, "__pydantic_private__", None)
    return copy


def _default_topic(event_type: type[Event]) -> str:
    return event_type.TOPIC


class SitePublisher:
    """Publishes events of one site (or, with ``site_id=None``, of any site) without loss."""

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap_servers: str,
        outbox_path: Path,
        codec: AvroCodec,
        site_id: str | None = None,
        assign_sequences: bool = True,
        max_pending: int = 1_000_000,
        when_full: Literal["raise", "block"] = "raise",
        block_timeout_s: float = 30.0,
        topic_of: Callable[[type[Event]], str] | None = None,
        durability: Durability = "FULL",
        delivery_timeout_s: float = 60.0,
        producer_overrides: dict[str, Any] | None = None,
    ) -> None:
        """Open the outbox, start the producer and the delivery thread, and resend leftovers.

        ``durability`` is the outbox's SQLite ``synchronous`` mode: ``FULL`` (default) survives
        power loss, ``NORMAL`` only a killed process. After ``delivery_timeout_s`` without an
        acknowledgement the producer is replaced and every undelivered event is resent from the
        outbox (a broker that lost its state never acknowledges the old producer id).
        ``producer_overrides`` are merged into the confluent-kafka configuration.
        """
        if when_full not in ("raise", "block"):
            raise ValueError(f"when_full must be 'raise' or 'block', not {when_full!r}")
        self.site_id = site_id
        self.assign_sequences = assign_sequences
        self.when_full = when_full
        self.block_timeout_s = block_timeout_s
        self._encoder = EventEncoder(codec)
        self._topic_of = topic_of or _default_topic
        self._routes: dict[type[Event], tuple[str, EventWriter]] = {}
        self._config = (
            producer_config(settings, bootstrap_servers)
            | {
                # librdkafka retries in order until the delivery timeout; then the whole producer
                # session is replaced and the outbox resends (see _handle_failures)
                "message.timeout.ms": max(1, int(delivery_timeout_s * 1000)),
                "queue.buffering.max.messages": 500_000,
                "queue.buffering.max.kbytes": 1_048_576,
                "batch.num.messages": 10_000,
                "linger.ms": 20,
            }
            | (producer_overrides or {})
        )
        self._message_limit = int(self._config.get("message.max.bytes", 1_000_000))
        self._outbox = Outbox(outbox_path, max_pending=max_pending, durability=durability)
        try:
            self._producer = Producer(self._config)
        except BaseException:
            self._outbox.close()  # else its lock is held until the process ends
            raise
        self._generation = 0
        # written by delivery callbacks (delivery thread), drained by the same thread
        self._acked: list[tuple[int, str | None]] = []
        self._failures: list[tuple[int, KafkaError]] = []
        # held while committing and producing, so records reach the producer in outbox order
        self._send_lock = threading.Lock()
        # records with id > backlog_after are committed but not yet handed to the producer
        self._backlog_after: int | None = 0 if self._outbox.pending() else None
        self._retry_at: float | None = None
        self._stop = threading.Event()
        self._closed = False
        _LIVE.add(self)
        self._thread = threading.Thread(
            target=self._deliver_loop, name=f"atmpnet-delivery-{outbox_path.name}", daemon=True
        )
        self._thread.start()

    # -- publishing ---------------------------------------------------------------

    def publish(self, event: Event) -> Event:
        """Publish one event; return it as stored (with its stamped sequence and previous_hash)."""
        return self.publish_many((event,))[0]

    def publish_many(self, events: Iterable[Event]) -> list[Event]:
        """Publish events in one outbox transaction; return them as stored (stamped), in order.

        Raises PublishRefused (nothing is stored) when an event belongs to another site, and
        OutboxFull when the outbox has no room (at once, or after ``block_timeout_s``).
        """
        batch = list(events)
        if not batch:
            return []
        if self._closed:
            raise PublishRefused("the publisher is closed")
        site = self.site_id
        if site is not None:
            for event in batch:
                if event.envelope.site_id != site:
                    raise PublishRefused(
                        f"event {event.envelope.event_id} belongs to site {event.envelope.site_id!r}; "
                        f"this publisher publishes only as site {site!r}"
                    )
        self._outbox.wait_for_room(
            len(batch), block=self.when_full == "block", timeout_s=self.block_timeout_s
        )
        with _tracer.start_as_current_span(
            "atmpnet.publish",
            kind=trace.SpanKind.PRODUCER,
            attributes=telemetry.span_attributes(
                **{"messaging.system": "kafka", "messaging.batch.message_count": len(batch)},
                site=site,
            ),
        ):
            headers = telemetry.inject_headers()
            traceparent = telemetry.traceparent(headers)
            stored = self._store_and_send(batch, headers, traceparent)
        _published.add(len(batch))
        return stored

    def _route(self, event_type: type[Event]) -> tuple[str, EventWriter]:
        route = self._routes.get(event_type)
        if route is None:
            route = self._routes[event_type] = (self._topic_of(event_type), self._encoder.writer(event_type))
        return route

    def _store_and_send(
        self, batch: list[Event], headers: list[tuple[str, bytes]], traceparent: str | None
    ) -> list[Event]:
        # the hot path: per event only a sequence, a link, an encode, a hash, a key and a tuple
        stored: list[Event] = []
        routes = self._routes
        assign = self.assign_sequences
        max_bytes = self._message_limit - 4_096  # headroom for the key, headers and record overhead
        with self._send_lock:
            with self._outbox.transaction() as tx:
                add = tx.add
                next_sequence = tx.next_sequence
                last_hash = tx.last_hash
                stamp_hash = tx.stamp_hash
                stream = ""
                for event in batch:
                    if assign:
                        # the link is stamped before encoding, so the hash below covers the exact
                        # bytes stored and produced, previous_hash included
                        envelope = event.envelope
                        stream = envelope.module_id or envelope.producer.id
                        sequence = next_sequence(stream)
                        previous = last_hash(stream)
                        if envelope.sequence != sequence or envelope.previous_hash != previous:
                            event = _with_link(event, sequence, previous)  # noqa: PLW2901
                    route = routes.get(type(event)) or self._route(type(event))
                    value = route[1](event)
                    if len(value) > max_bytes:  # the broker would refuse it for ever: refuse it now
                        raise PublishRefused(
                            f"event {event.envelope.event_id} encodes to {len(value)} bytes, over the "
                            f"message.max.bytes {self._message_limit} less 4096 for key and headers"
                        )
                    if assign:
                        stamp_hash(stream, _sha256(memoryview(value)[_BODY:]).hexdigest())
                    add(route[0], event.partition_key().encode(), value, traceparent)
                    stored.append(event)
            rows = tx.rows
            if self._backlog_after is None:
                self._produce_rows(rows, headers)
        return stored

    def _produce_rows(self, rows: Iterable[tuple[int, str, bytes, bytes, str | None]], headers: Any) -> bool:
        """Hand committed rows to the producer in order; the rest become backlog if its queue fills.

        Caller holds the send lock.
        """
        produce = self._producer.produce
        callback = self._on_delivery
        generation = self._generation
        for row_id, topic, key, value, traceparent in rows:
            try:
                produce(
                    topic,
                    value,
                    key,
                    headers=headers,
                    on_delivery=partial(callback, generation, row_id, traceparent),
                )
            except BufferError:
                self._backlog_after = row_id - 1
                return False
            except BaseException as exc:
                # committed, so published: never raise it to the caller (a retry would store it
                # twice) and never leave it unsent; the delivery thread retries from the outbox
                self._backlog_after = row_id - 1
                self._retry_at = time.monotonic() + _RETRY_AFTER_S
                if not isinstance(exc, Exception):
                    raise  # KeyboardInterrupt and the like: the row is in the backlog already
                error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
                fatal = isinstance(error, KafkaError) and error.fatal()
                log.warning("cannot produce to %s (%s); retrying from the outbox", topic, exc)
                if fatal:  # this producer never produces again: a new session resends everything
                    self._rebuild_producer()
                    self._backlog_after = 0
                return False
        return True

    def _on_delivery(
        self, generation: int, row_id: int, traceparent: str | None, err: KafkaError | None, _msg: Message
    ) -> None:
        if generation != self._generation:
            return  # a report from a producer that was replaced; its records are resent
        if err is None:
            self._acked.append((row_id, traceparent))
        else:
            self._failures.append((row_id, err))

    # -- the delivery thread ------------------------------------------------------

    def _deliver_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._producer.poll(0.02)
                self._after_poll()
            except Exception:  # the thread must survive: the outbox keeps every record meanwhile
                log.exception("delivery thread: unexpected error; retrying")
                self._stop.wait(_RETRY_AFTER_S)
        # last reports in, so records acknowledged before close are not sent again on restart
        with contextlib.suppress(Exception):
            self._producer.poll(0)
            self._after_poll()
            self._outbox.apply_acknowledged()

    def _after_poll(self) -> None:
        if self._acked:
            self._mark_delivered()
        if self._outbox.acknowledged_age() >= _APPLY_ACKS_AFTER_S:
            self._outbox.apply_acknowledged()
        if self._failures:
            self._handle_failures()
        if self._backlog_after is not None and (self._retry_at is None or self._retry_at <= time.monotonic()):
            self._retry_at = None
            self._produce_backlog()

    def _mark_delivered(self) -> None:
        acked, self._acked = self._acked, []
        with _tracer.start_as_current_span(
            "atmpnet.deliver",
            kind=trace.SpanKind.PRODUCER,
            context=telemetry.extract_context(_traceparent_header(acked[-1][1])),
            attributes={"messaging.system": "kafka", "messaging.batch.message_count": len(acked)},
        ):
            self._outbox.acknowledge([row_id for row_id, _ in acked])
        _delivered.add(len(acked))

    def _handle_failures(self) -> None:
        """Any failed delivery ends the producer's session: resend every undelivered record in order.

        A failure means librdkafka gave up on a record (its delivery timeout passed, or a fatal
        error such as a broker that no longer knows the producer id after losing its state).
        Records after it may be in flight; resending them all from the outbox, in outbox order,
        on a new producer keeps each key's order, at the cost of duplicates (consumers dedupe
        by event id).
        """
        failures, self._failures = self._failures, []
        _failed.add(len(failures))
        log.warning(
            "%d deliveries failed (first: %s); resending every undelivered event on a new producer",
            len(failures),
            failures[0][1],
        )
        with self._send_lock:
            self._rebuild_producer()
            self._backlog_after = 0
            self._retry_at = time.monotonic() + _RETRY_AFTER_S

    def _rebuild_producer(self) -> None:
        """Replace a producer that hit a fatal error; its unacknowledged records are resent."""
        old = self._producer
        self._generation += 1
        self._producer = Producer(self._config)
        with contextlib.suppress(Exception):
            old.purge(in_queue=True, in_flight=True)
            old.flush(0)

    def _produce_backlog(self) -> None:
        with self._send_lock:
            after = self._backlog_after
            if after is None:
                return
            rows = self._outbox.undelivered(after, _BACKLOG_CHUNK)
            headers_of: dict[str | None, list[tuple[str, bytes]]] = {}
            for row in rows:
                headers = headers_of.get(row.traceparent)
                if headers is None:
                    headers = headers_of[row.traceparent] = _traceparent_header(row.traceparent)
                if not self._produce_rows(
                    [(row.id, row.topic, row.key, row.value, row.traceparent)], headers
                ):
                    return  # queue full (or refused): the rest waits for the next round
                self._backlog_after = row.id
            if len(rows) < _BACKLOG_CHUNK:
                self._backlog_after = None

    # -- waiting and closing ------------------------------------------------------

    def flush(self, timeout: float | None = None) -> int:
        """Wait for the broker's acknowledgements; return how many events are still undelivered."""
        return self._outbox.wait_until_empty(timeout)

    def pending(self) -> int:
        """Events in the outbox not yet acknowledged by the broker."""
        return self._outbox.pending()

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush up to ``timeout``, then stop; undelivered events stay in the outbox for the next start."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush(timeout)
        finally:
            self._stop.set()
            self._thread.join()
            with contextlib.suppress(Exception):
                self._producer.purge(in_queue=True, in_flight=True)
                self._producer.flush(0)
            self._outbox.close()

    def __enter__(self) -> SitePublisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _traceparent_header(traceparent: str | None) -> list[tuple[str, bytes]]:
    return [("traceparent", traceparent.encode("ascii"))] if traceparent else []


_LIVE: weakref.WeakSet[SitePublisher] = weakref.WeakSet()


def _observe_depth(_options: CallbackOptions) -> Iterator[Observation]:
    for publisher in list(_LIVE):
        if not publisher._closed:
            yield Observation(publisher.pending(), {"outbox": str(publisher._outbox.path)})


# one instrument for every publisher of the process: a second registration of a name is ignored
_meter.create_observable_gauge(
    "atmpnet.publisher.outbox.depth",
    callbacks=[_observe_depth],
    description="Events in the outbox not yet acknowledged by the broker",
)
