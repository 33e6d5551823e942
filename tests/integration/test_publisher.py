"""SitePublisher against a real broker: every event arrives, keyed, traced, sequenced; refusals."""

from __future__ import annotations

import itertools
import socket
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from atmpnet import telemetry
from atmpnet.contract.chain import ChainLink, payload_hash, verify_chain
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Event, StepTransition
from atmpnet.contract.examples import example_events
from atmpnet.embedded import free_port
from atmpnet.errors import OutboxFull, PublishRefused
from atmpnet.settings import Settings
from atmpnet.site.outbox import Outbox
from atmpnet.site.publisher import SitePublisher
from atmpnet.transport import consumer_config
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

SITE = "site-boston"


@dataclass(frozen=True)
class Arrived:
    """One record as read from a topic, decoded."""

    topic: str
    partition: int
    offset: int
    key: str
    headers: dict[str, bytes]
    event: Event
    value: bytes = b""  # the record's bytes as they arrived (wire format)


def read_records(
    settings: Settings,
    bootstrap: str,
    codec: AvroCodec,
    topics: Iterable[str],
    expected_ids: set[UUID],
    timeout_s: float = 30.0,
    idle_s: float = 1.0,
) -> list[Arrived]:
    """Every record of ``topics`` from the beginning: until all ``expected_ids`` came and then
    ``idle_s`` passed without a record (so duplicates are counted too), or until ``timeout_s``."""
    consumer = Consumer(consumer_config(settings, bootstrap, f"test-{uuid.uuid4()}"))
    topics = sorted(topics)
    metadata = consumer.list_topics(timeout=10)
    consumer.assign(
        [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in metadata.topics[t].partitions]
    )
    out: list[Arrived] = []
    missing = set(expected_ids)
    deadline = time.monotonic() + timeout_s
    last_record = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                if not missing and time.monotonic() - last_record >= idle_s:
                    break
                continue
            assert msg.error() is None, msg.error()
            last_record = time.monotonic()
            event = codec.decode(msg.value() or b"")
            missing.discard(event.envelope.event_id)
            out.append(
                Arrived(
                    msg.topic() or "",
                    msg.partition() or 0,
                    msg.offset() or 0,
                    _text(msg.key()),
                    _headers(msg.headers()),
                    event,
                    msg.value() or b"",
                )
            )
    finally:
        consumer.close()
    return out


def _text(key: str | bytes | None) -> str:
    return key.decode() if isinstance(key, bytes) else key or ""


def _headers(headers: object) -> dict[str, bytes]:
    pairs = headers if isinstance(headers, list) else []
    return {str(k): v for k, v in pairs if isinstance(v, bytes)}


def mixed_events(count: int, *, site: str = SITE, modules: int = 3) -> list[Event]:
    """``count`` distinct site events (no baselines), cycling the examples over a few modules."""
    examples = [e for e in example_events() if e.envelope.site_id is not None]
    out = []
    for i in range(count):
        base = examples[i % len(examples)]
        out.append(
            base.with_envelope(
                event_id=uuid.uuid4(),
                site_id=site,
                module_id=f"bos-m{i % modules:02d}",
                batch_id=None if base.envelope.batch_id is None else f"B-{i % 7}",
                sequence=1,
            )
        )
    return out


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """Finished spans of this module's tests (added to the process's tracer provider)."""
    telemetry.configure("atmpnet-tests")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def _publisher(
    settings: Settings,
    bootstrap: str,
    codec: AvroCodec,
    topics: dict[type[Event], str],
    path: Path,
    **kw: object,
) -> SitePublisher:
    return SitePublisher(
        settings,
        bootstrap_servers=bootstrap,
        outbox_path=path,
        codec=codec,
        topic_of=topics.__getitem__,
        durability="NORMAL",
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.integration
def test_every_event_arrives_keyed_traced_and_sequenced(
    settings: Settings,
    kafka_bootstrap: str,
    codec: AvroCodec,
    topics: dict[type[Event], str],
    tmp_path: Path,
    spans: InMemorySpanExporter,
) -> None:
    events = mixed_events(400)
    with _publisher(settings, kafka_bootstrap, codec, topics, tmp_path / "o.db", site_id=SITE) as publisher:
        stored = publisher.publish_many(events[:300])
        stored += [publisher.publish(e) for e in events[300:]]
        assert publisher.flush(20) == 0
        assert publisher.pending() == 0

    assert [s.envelope.event_id for s in stored] == [e.envelope.event_id for e in events]
    arrived = read_records(
        settings, kafka_bootstrap, codec, topics.values(), {e.envelope.event_id for e in events}
    )
    by_id = {a.event.envelope.event_id: a for a in arrived}
    assert len(arrived) == len(by_id) == len(events)  # all arrived, none twice
    for sent in stored:
        got = by_id[sent.envelope.event_id]
        assert got.event == sent  # the stored form, stamped sequence included
        assert got.topic == topics[type(sent)]
        assert got.key == sent.partition_key()
        assert got.headers["traceparent"].startswith(b"00-")

    # per module: sequences 1..n without gaps, in publish order
    per_stream: dict[str, list[int]] = defaultdict(list)
    for sent in stored:
        per_stream[str(sent.envelope.module_id)].append(sent.envelope.sequence)
    for sequences in per_stream.values():
        assert sequences == list(range(1, len(sequences) + 1))
    # per key: records arrive in publish order (offsets rise with sequence)
    per_key: dict[tuple[str, str], list[Arrived]] = defaultdict(list)
    for a in sorted(arrived, key=lambda a: (a.topic, a.partition, a.offset)):
        per_key[a.topic, a.key].append(a)
    for records in per_key.values():
        seqs = [
            a.event.envelope.sequence
            for a in records
            if a.event.envelope.module_id == records[0].event.envelope.module_id
        ]
        assert seqs == sorted(seqs)

    names = Counter(s.name for s in spans.get_finished_spans())
    assert names["atmpnet.publish"] >= 101  # one per publish_many / publish call
    assert names["atmpnet.deliver"] >= 1
    publish_trace_ids = {
        f"{s.context.trace_id:032x}" for s in spans.get_finished_spans() if s.name == "atmpnet.publish"
    }
    header_trace_ids = {a.headers["traceparent"].split(b"-")[1].decode() for a in arrived}
    assert header_trace_ids <= publish_trace_ids


@pytest.mark.integration
def test_a_site_publisher_refuses_other_sites_and_stores_nothing(
    settings: Settings, kafka_bootstrap: str, codec: AvroCodec, topics: dict[type[Event], str], tmp_path: Path
) -> None:
    ours = mixed_events(3)
    theirs = mixed_events(1, site="site-basel")[0]
    baseline = next(e for e in example_events() if e.envelope.site_id is None)
    with _publisher(settings, kafka_bootstrap, codec, topics, tmp_path / "o.db", site_id=SITE) as publisher:
        with pytest.raises(PublishRefused, match="site-basel"):
            publisher.publish_many([*ours, theirs])
        with pytest.raises(PublishRefused, match="None"):
            publisher.publish(baseline)  # network-level events need a network-level publisher
        assert publisher.pending() == 0
        stored = publisher.publish_many(ours)
        assert [e.envelope.sequence for e in stored] == [1, 1, 1]  # the refused batch burnt no sequence

    with _publisher(settings, kafka_bootstrap, codec, topics, tmp_path / "network.db") as network:
        assert network.publish(baseline).envelope.event_id == baseline.envelope.event_id
        assert network.publish(theirs).envelope.site_id == "site-basel"
        assert network.flush(20) == 0


@pytest.mark.integration
def test_caller_sequences_are_kept_when_the_outbox_does_not_assign(
    settings: Settings, kafka_bootstrap: str, codec: AvroCodec, topics: dict[type[Event], str], tmp_path: Path
) -> None:
    # the caller's sequences and chain are kept as given (here: every event names the same hash)
    named = "ab" * 32
    events = [e.with_envelope(sequence=1000 + i, previous_hash=named) for i, e in enumerate(mixed_events(5))]
    with _publisher(
        settings, kafka_bootstrap, codec, topics, tmp_path / "o.db", assign_sequences=False
    ) as publisher:
        stored = publisher.publish_many(events)
        assert publisher.flush(20) == 0
    assert stored == events
    arrived = read_records(
        settings, kafka_bootstrap, codec, topics.values(), {e.envelope.event_id for e in events}
    )
    assert sorted(a.event.envelope.sequence for a in arrived) == list(range(1000, 1005))
    assert {a.event.envelope.previous_hash for a in arrived} == {named}


def _unreachable_bootstrap() -> str:
    """An address where nothing listens (the port is released right after it is chosen)."""
    port = free_port()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    return f"127.0.0.1:{port}"


def test_backpressure_raises_or_blocks_as_the_caller_chose(
    settings: Settings, codec: AvroCodec, tmp_path: Path
) -> None:
    bootstrap = _unreachable_bootstrap()
    events = mixed_events(12)
    topics = {type(e): "never" for e in events}
    with _publisher(settings, bootstrap, codec, topics, tmp_path / "raise.db", max_pending=10) as publisher:
        publisher.publish_many(events[:10])
        with pytest.raises(OutboxFull, match="holds 10 undelivered"):
            publisher.publish(events[10])
        assert publisher.pending() == 10
        publisher.close(timeout=0)

    with _publisher(
        settings,
        bootstrap,
        codec,
        topics,
        tmp_path / "block.db",
        max_pending=10,
        when_full="block",
        block_timeout_s=0.3,
    ) as publisher:
        publisher.publish_many(events[:10])
        started = time.monotonic()
        with pytest.raises(OutboxFull, match=r"waited 0\.3s"):
            publisher.publish(events[10])
        assert time.monotonic() - started >= 0.3
        publisher.close(timeout=0)


@pytest.mark.integration
def test_undelivered_events_are_sent_on_restart_and_sequences_continue(
    settings: Settings, kafka_bootstrap: str, codec: AvroCodec, topics: dict[type[Event], str], tmp_path: Path
) -> None:
    path = tmp_path / "o.db"
    events = mixed_events(60, modules=1)
    # first run: no broker answers, so everything stays in the outbox
    offline = _publisher(settings, _unreachable_bootstrap(), codec, topics, path, site_id=SITE)
    first = offline.publish_many(events[:40])
    assert offline.flush(0.2) == 40
    offline.close(timeout=0)

    with _publisher(settings, kafka_bootstrap, codec, topics, path, site_id=SITE) as publisher:
        assert publisher.pending() == 40
        second = publisher.publish_many(events[40:])
        assert publisher.flush(20) == 0
    assert [e.envelope.sequence for e in first + second] == list(range(1, 61))

    arrived = read_records(
        settings, kafka_bootstrap, codec, topics.values(), {e.envelope.event_id for e in events}
    )
    assert sorted(a.event.envelope.sequence for a in arrived) == list(range(1, 61))
    # one module, one key per batch id: within a key, the old run's events come first
    for key in {a.key for a in arrived}:
        records = sorted(
            (a for a in arrived if a.key == key and a.topic == arrived[0].topic), key=lambda a: a.offset
        )
        seqs = [a.event.envelope.sequence for a in records]
        assert seqs == sorted(seqs)


@pytest.mark.integration
def test_the_hash_chain_continues_across_a_restart_and_holds_on_the_topic(
    settings: Settings, kafka_bootstrap: str, codec: AvroCodec, topics: dict[type[Event], str], tmp_path: Path
) -> None:
    path = tmp_path / "o.db"
    events = mixed_events(90, modules=2)
    # first run offline, in two transactions: everything stays in the outbox, chained
    offline = _publisher(settings, _unreachable_bootstrap(), codec, topics, path, site_id=SITE)
    stored = offline.publish_many(events[:30]) + offline.publish_many(events[30:60])
    offline.close(timeout=0)
    with _publisher(settings, kafka_bootstrap, codec, topics, path, site_id=SITE) as publisher:
        stored += publisher.publish_many(events[60:])  # the chain goes on from the stored heads
        assert publisher.flush(20) == 0

    arrived = read_records(
        settings, kafka_bootstrap, codec, topics.values(), {e.envelope.event_id for e in events}
    )
    by_id = {a.event.envelope.event_id: a for a in arrived}
    assert len(by_id) == len(events)
    streams: dict[str, list[Arrived]] = defaultdict(list)
    for a in arrived:
        streams[str(a.event.envelope.module_id)].append(a)
    heads = Outbox(path)
    for module, records in streams.items():
        records.sort(key=lambda a: a.event.envelope.sequence)
        links = [
            ChainLink(a.event.envelope.sequence, a.event.envelope.previous_hash, payload_hash(a.value))
            for a in records
        ]
        assert [link.sequence for link in links] == list(range(1, 46))
        assert verify_chain(links, head=heads.last_hash(module)) == []
        # genesis unchained, every later event chained: the restart did not restart the chain
        assert links[0].previous_hash is None
        assert all(link.previous_hash == before.hash for before, link in itertools.pairwise(links))
        # an altered event breaks its successor's link: the check above could fail
        forged = [*links[:9], ChainLink(10, links[9].previous_hash, "0" * 64), *links[10:]]
        assert [(b.before, b.after) for b in verify_chain(forged)] == [(10, 11)]
    heads.close()
    for sent in stored:
        got = by_id[sent.envelope.event_id]
        assert got.event == sent  # what the caller got back is what went on the wire
        # the hash covers canonical bytes: re-encoding the decoded event reproduces it
        assert payload_hash(codec.encode(got.event)) == payload_hash(got.value)


@pytest.mark.integration
def test_a_full_producer_queue_leaves_a_backlog_that_is_sent_in_order(
    settings: Settings, kafka_bootstrap: str, codec: AvroCodec, topics: dict[type[Event], str], tmp_path: Path
) -> None:
    events = mixed_events(600, modules=1)
    with _publisher(
        settings,
        kafka_bootstrap,
        codec,
        topics,
        tmp_path / "o.db",
        producer_overrides={"queue.buffering.max.messages": 50},
    ) as publisher:
        stored = publisher.publish_many(events)  # the producer takes 50; the outbox keeps the rest
        assert publisher.flush(30) == 0
    arrived = read_records(
        settings, kafka_bootstrap, codec, topics.values(), {e.envelope.event_id for e in events}
    )
    assert len(arrived) == len(events)
    order = {e.envelope.event_id: n for n, e in enumerate(stored)}
    per_partition: dict[tuple[str, int], list[int]] = defaultdict(list)
    for a in sorted(arrived, key=lambda a: (a.topic, a.partition, a.offset)):
        per_partition[a.topic, a.partition].append(order[a.event.envelope.event_id])
    for positions in per_partition.values():
        assert positions == sorted(positions)  # outbox order kept through the backlog


class _ProducerThatFails:
    """A real producer whose next ``produce`` calls raise ``error`` (what librdkafka or a bug may do)."""

    def __init__(self, real: Producer, error: BaseException, times: int = 1) -> None:
        self.real = real
        self.error = error
        self.times = times

    def produce(self, *args: Any, **kw: Any) -> None:
        if self.times:
            self.times -= 1
            raise self.error
        self.real.produce(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("error", "times"),
    [
        (RuntimeError("unexpected"), 3),
        # a fatal error: this producer never produces again, only a new one can
        (KafkaException(KafkaError(KafkaError._FATAL, "fenced", fatal=True)), 10**9),
    ],
    ids=["unexpected", "fatal"],
)
def test_an_event_stored_but_not_handed_to_the_producer_is_still_delivered(
    settings: Settings,
    kafka_bootstrap: str,
    codec: AvroCodec,
    topics: dict[type[Event], str],
    tmp_path: Path,
    error: BaseException,
    times: int,
) -> None:
    # the commit came first, so the event is published: it must not sit in the outbox until a
    # restart, nor on a producer that failed for good
    events = mixed_events(20, modules=1)
    with _publisher(settings, kafka_bootstrap, codec, topics, tmp_path / "o.db") as publisher:
        publisher._producer = _ProducerThatFails(publisher._producer, error, times)  # type: ignore[assignment]
        stored = publisher.publish_many(events)
        assert len(stored) == len(events)
        assert publisher.flush(20) == 0
    arrived = read_records(
        settings, kafka_bootstrap, codec, topics.values(), {e.envelope.event_id for e in events}
    )
    assert {a.event.envelope.event_id for a in arrived} == {e.envelope.event_id for e in events}


def test_a_publisher_that_cannot_start_releases_its_outbox(
    settings: Settings, codec: AvroCodec, topics: dict[type[Event], str], tmp_path: Path
) -> None:
    path = tmp_path / "o.db"
    with pytest.raises(KafkaException):
        _publisher(settings, _unreachable_bootstrap(), codec, topics, path, producer_overrides={"no.such": 1})
    _publisher(settings, _unreachable_bootstrap(), codec, topics, path).close(timeout=0)


def test_an_event_the_broker_would_refuse_is_refused_before_it_is_stored(
    settings: Settings, codec: AvroCodec, tmp_path: Path
) -> None:
    event = mixed_events(1)[0]
    with _publisher(
        settings,
        _unreachable_bootstrap(),
        codec,
        {type(event): "never"},
        tmp_path / "o.db",
        producer_overrides={"message.max.bytes": 5_000},
    ) as publisher:
        with pytest.raises(PublishRefused, match=r"message\.max\.bytes"):
            publisher.publish(_oversized(event))
        assert publisher.pending() == 0
        publisher.close(timeout=0)


def _oversized(event: Event) -> Event:
    """The batch step with a failure reason long enough to exceed a small message limit."""
    from atmpnet.contract.events import BatchStep

    assert isinstance(event, BatchStep)
    return event.model_copy(update={"transition": StepTransition.FAILED, "failure_reason": "x" * 2_000})


@pytest.mark.integration
def test_metrics_count_published_and_delivered_events_and_the_outbox_depth(
    settings: Settings,
    kafka_bootstrap: str,
    codec: AvroCodec,
    topics: dict[type[Event], str],
    tmp_path: Path,
    spans: InMemorySpanExporter,
    metric_reader: InMemoryMetricReader,
) -> None:
    before = _metric_points(metric_reader)
    with _publisher(settings, kafka_bootstrap, codec, topics, tmp_path / "o.db") as publisher:
        publisher.publish_many(mixed_events(25))
        assert publisher.flush(20) == 0
        after = _metric_points(metric_reader)
    assert (
        after.get("atmpnet.publisher.events.published", 0)
        - before.get("atmpnet.publisher.events.published", 0)
        == 25
    )
    assert (
        after.get("atmpnet.publisher.events.delivered", 0)
        - before.get("atmpnet.publisher.events.delivered", 0)
        == 25
    )
    assert "atmpnet.publisher.outbox.depth" in after


def _metric_points(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    out: dict[str, float] = {}
    if data is None:
        return out
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points: Any = metric.data.data_points
                # Histograms (e.g. write latency) carry a count, not a value.
                out[metric.name] = sum(
                    float(p.value) if hasattr(p, "value") else float(p.count) for p in points
                )
    return out
