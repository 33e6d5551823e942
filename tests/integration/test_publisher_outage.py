"""Nothing lost through outages (issue 3, item 2): a broker that goes away, a publisher killed.

Both tests publish from a child process (the code below), so the test can freeze it (SIGSTOP)
or kill it (SIGKILL) mid-stream. Event ids are derived from their index, so the test knows
every id the child was asked to publish and counts each id's arrivals.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import IO, Any
from uuid import UUID

import pytest
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Event
from atmpnet.embedded import EmbeddedBroker, free_port
from atmpnet.settings import Settings
from atmpnet.site.outbox import Outbox
from atmpnet.transport import consumer_config, ensure_topics
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tests.integration.test_publisher import Arrived, read_records

NAMESPACE = UUID("0b5d1f0e-8c1e-4a53-9d4e-2f7c6a3b9e01")

# The publishing process: events [start, count) in batches; "ok <next index>" after each batch
# returns (it is then in the outbox), "done <pending>" after the final flush.
CHILD = r"""
import json, sys, time, uuid
from pathlib import Path
from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.examples import example_events
from atmpnet.contract.events import EVENT_TYPES
from atmpnet.settings import Settings
from atmpnet.site.publisher import SitePublisher

args = json.loads(sys.argv[1])
settings = Settings(data_dir=Path(args["outbox"]).parent, kafka_bootstrap_servers=args["bootstrap"])
codec = AvroCodec(SchemaCatalog.load(settings.schema_dir))
topics = {t: args["topics"][t.__name__] for t in EVENT_TYPES if t.__name__ in args["topics"]}
examples = [e for e in example_events() if e.envelope.site_id is not None]
namespace = uuid.UUID(args["namespace"])

def event(i):
    base = examples[i % len(examples)]
    return base.with_envelope(event_id=uuid.uuid5(namespace, str(i)), module_id=f"bos-m{i % 3:02d}")

publisher = SitePublisher(
    settings, bootstrap_servers=args["bootstrap"], outbox_path=Path(args["outbox"]), codec=codec,
    site_id="site-boston", topic_of=topics.__getitem__, durability="NORMAL",
    delivery_timeout_s=args["delivery_timeout_s"], producer_overrides=args["producer"],
)
i = args["start"]
while i < args["count"]:
    end = min(i + args["batch"], args["count"])
    publisher.publish_many([event(n) for n in range(i, end)])
    i = end
    print("ok", i, flush=True)
    time.sleep(args["pause_s"])
left = publisher.flush(args["flush_s"])
publisher.close(timeout=0)
print("done", left, flush=True)
"""


def event_id(index: int) -> UUID:
    """The id the child gives event ``index``."""
    return uuid.uuid5(NAMESPACE, str(index))


class Child:
    """A publishing child process and the progress it reports."""

    def __init__(self, bootstrap: str, outbox: Path, topics: dict[type[Event], str], **options: Any) -> None:
        args: dict[str, Any] = {
            "bootstrap": bootstrap,
            "outbox": str(outbox),
            "topics": {t.__name__: name for t, name in topics.items()},
            "namespace": str(NAMESPACE),
            "start": 0,
            "count": 3000,
            "batch": 20,
            "pause_s": 0.005,
            "flush_s": 60,
            "delivery_timeout_s": 3.0,
            "producer": {},
        } | options
        # librdkafka logs every refused connection during the outage: keep that out of the output
        self.log = outbox.with_name(f"child-{args['start']}.log")
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", CHILD, json.dumps(args)], stdout=subprocess.PIPE, stderr=log, text=True
            )
        self.published = args["start"]  # events [0, published) are in the outbox (or delivered)
        self.left: int | None = None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            word, number = line.split()
            if word == "ok":
                self.published = int(number)
            elif word == "done":
                self.left = int(number)

    def wait_published(self, at_least: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.published < at_least:
            assert self.process.poll() is None, f"child exited with {self.process.returncode}: {self.tail()}"
            assert time.monotonic() < deadline, f"child published only {self.published} in {timeout_s}s"
            time.sleep(0.005)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait(self, timeout_s: float = 120) -> int:
        code = self.process.wait(timeout=timeout_s)
        self._reader.join(5)
        return code


class ContinuousReader:
    """Reads every partition of some topics from the start, in a thread, until stopped."""

    def __init__(self, settings: Settings, bootstrap: str, codec: AvroCodec, topics: list[str]) -> None:
        self.arrived: list[Arrived] = []
        self.last_record = time.monotonic()
        self._stop = threading.Event()
        config = consumer_config(settings, bootstrap, f"test-{uuid.uuid4()}") | {"fetch.wait.max.ms": 20}
        self._consumer = Consumer(config)
        metadata = self._consumer.list_topics(timeout=10)
        self._consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in metadata.topics[t].partitions]
        )
        self._codec = codec
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.05)
            if msg is None or msg.error() is not None:
                continue
            self.last_record = time.monotonic()
            event = self._codec.decode(msg.value() or b"")
            self.arrived.append(
                Arrived(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, "", {}, event)
            )
        self._consumer.close()

    def drain(self, idle_s: float = 1.0, timeout_s: float = 30) -> list[Arrived]:
        """Wait until no record came for ``idle_s``, then stop and return what arrived."""
        started = time.monotonic()
        deadline = started + timeout_s
        while time.monotonic() - max(self.last_record, started) < idle_s and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(10)
        return self.arrived


def _count(arrived: list[Arrived]) -> Counter[UUID]:
    return Counter(a.event.envelope.event_id for a in arrived)


@pytest.mark.integration
def test_no_event_is_lost_when_the_broker_goes_away_mid_stream(
    tmp_path: Path, codec: AvroCodec, record_property: Any
) -> None:
    """The broker stops while a child process publishes; it keeps publishing; a new broker starts.

    The embedded broker (tansu) keeps records in memory only, so whatever broker 1 stored dies
    with it, and broker 2 starts empty (its topics are created again). A real Kafka cluster
    keeps what it acknowledged; to judge the publisher and not tansu, every record broker 1
    ever stored must be read before it stops. So, at the outage: the publisher process is
    frozen (SIGSTOP) mid-stream, broker 1 is read until idle (it can store nothing more: its
    only producer is frozen), broker 1 is stopped, and the publisher resumes at once, still
    mid-stream, into a dead address. It goes on publishing through the outage, a new broker
    comes up on the same port, and the publisher delivers its outbox there.

    No loss: every id the child published arrived at broker 1 or broker 2. Duplicates (records
    broker 1 stored but whose acknowledgement never reached the publisher, resent to broker 2)
    are counted and reported, not forbidden: delivery is at-least-once, consumers dedupe.
    """
    port = free_port()
    count = 4000
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=f"127.0.0.1:{port}")
    topics = {t: f"{t.TOPIC}.outage" for t in (*_site_event_types(),)}
    broker1 = EmbeddedBroker(tmp_path / "broker1.log", port=port)
    broker1.start()
    broker2 = EmbeddedBroker(tmp_path / "broker2.log", port=port)
    child: Child | None = None
    try:
        ensure_topics(settings, broker1.bootstrap_servers, list(topics.values()))
        reader1 = ContinuousReader(settings, broker1.bootstrap_servers, codec, list(topics.values()))
        child = Child(broker1.bootstrap_servers, tmp_path / "outbox.db", topics, count=count, pause_s=0.01)

        child.wait_published(500)
        deadline = time.monotonic() + 30
        while not reader1.arrived and time.monotonic() < deadline:  # deliveries are flowing
            time.sleep(0.01)
        child.process.send_signal(signal.SIGSTOP)
        before_outage = child.published
        from_broker1 = reader1.drain(idle_s=1.0)
        broker1.stop()
        child.process.send_signal(signal.SIGCONT)

        child.wait_published(before_outage + 1000)  # published while no broker runs
        during_outage = child.published - before_outage
        time.sleep(1.0)
        broker2.start()
        ensure_topics(settings, broker2.bootstrap_servers, list(topics.values()))

        assert child.wait() == 0, child.tail()
        assert child.left == 0, f"{child.left} events still undelivered after the final flush"
        ids = {event_id(i) for i in range(count)}
        from_broker2 = read_records(
            settings, broker2.bootstrap_servers, codec, topics.values(), ids - set(_count(from_broker1))
        )
    finally:
        if child is not None and child.process.poll() is None:
            child.process.kill()
        broker1.stop()
        broker2.stop()

    arrivals = _count(from_broker1) + _count(from_broker2)
    lost = ids - set(arrivals)
    duplicates = sum(arrivals.values()) - len(arrivals)
    record_property("duplicates", duplicates)
    print(
        f"\noutage: {len(from_broker1)} records read from broker 1 before it stopped, "
        f"{during_outage} events published during the outage, {len(from_broker2)} records on broker 2, "
        f"lost {len(lost)}, duplicates {duplicates}"
    )
    assert not lost, f"{len(lost)} events lost"
    assert set(arrivals) == ids  # and nothing else arrived
    assert from_broker1, "broker 1 received nothing: the outage was not mid-stream"
    assert during_outage > 0


@pytest.mark.integration
def test_no_event_is_lost_when_the_publisher_is_killed(
    tmp_path: Path,
    settings: Settings,
    kafka_bootstrap: str,
    codec: AvroCodec,
    topics: dict[type[Event], str],
    record_property: Any,
) -> None:
    """A publishing process is SIGKILLed mid-stream; a new one restarts on the same outbox.

    The first process acknowledges events slowly (linger.ms=300), so the kill finds events that
    are in the outbox but not delivered. The restarted process resends them first and then
    publishes from the last event the first one reported as published; events committed after
    that report but before the kill are published twice (counted as duplicates). Every id
    arrives; per-module sequences, stamped by the outbox, have no gaps across the kill.
    """
    count = 3000
    outbox_path = tmp_path / "outbox.db"
    site_topics = {t: topics[t] for t in _site_event_types()}
    first = Child(
        kafka_bootstrap, outbox_path, site_topics, count=count, pause_s=0.01, producer={"linger.ms": 300}
    )
    first.wait_published(count // 3)
    first.process.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = first.published

    undelivered = Outbox(outbox_path)
    left_by_the_dead = undelivered.pending()
    undelivered.close()
    assert left_by_the_dead > 0, "the kill found nothing undelivered: the test proves nothing"

    second = Child(kafka_bootstrap, outbox_path, site_topics, count=count, start=killed_at)
    assert second.wait() == 0, second.tail()
    assert second.left == 0

    ids = {event_id(i) for i in range(count)}
    arrived = read_records(settings, kafka_bootstrap, codec, site_topics.values(), ids)
    arrivals = _count(arrived)
    lost = ids - set(arrivals)
    duplicates = sum(arrivals.values()) - len(arrivals)
    record_property("duplicates", duplicates)
    print(
        f"\nSIGKILL after {killed_at} events reported published, {left_by_the_dead} undelivered in the "
        f"outbox; lost {len(lost)}, duplicates {duplicates}"
    )
    assert not lost, f"{len(lost)} events lost"
    assert set(arrivals) == ids

    sequences: dict[str, set[int]] = defaultdict(set)
    for a in arrived:
        sequences[str(a.event.envelope.module_id)].add(a.event.envelope.sequence)
    for module, seen in sequences.items():
        assert seen == set(range(1, max(seen) + 1)), f"sequence gap on {module}"


def _site_event_types() -> tuple[type[Event], ...]:
    from atmpnet.contract.events import BatchStep, Deviation, ModuleConfiguration, SensorSummary

    return (BatchStep, SensorSummary, Deviation, ModuleConfiguration)
