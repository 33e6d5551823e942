"""Benchmark: events/s published with acks=all to the embedded broker, SitePublisher vs a stock loop.

Baseline: confluent-kafka's stock ``AvroSerializer`` (mock:// Schema Registry) + ``Producer``
(the same idempotent acks=all configuration), one ``produce`` per event, flushed at the end.
SitePublisher: ``publish_many`` in batches with the durable outbox on (SQLite WAL, fsync per
commit), sequences stamped by the outbox, trace context in headers, flushed at the end.
Both publish the same events to their own topics on one embedded broker, in the same run.

    .venv/bin/python tools/bench_publish.py --events 100000 --batch 1000
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import itertools
import json
import os
import platform
import pstats
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import confluent_kafka
import fastavro
import pydantic
from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import EVENT_TYPES, Event
from atmpnet.contract.examples import example_events
from atmpnet.embedded import EmbeddedBroker
from atmpnet.settings import Settings
from atmpnet.site.publisher import SitePublisher
from atmpnet.transport import ensure_topics, producer_config
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def simulated_events(count: int, sites: int, seed: int) -> list[Event]:
    """The simulator's mixed stream (mostly per-minute sensor summaries), first ``count`` events."""
    from atmpnet.site.simulation.engine import Simulation
    from atmpnet.site.simulation.network import NetworkConfig

    simulation = Simulation(NetworkConfig(sites=sites, days=30.0, seed=seed))
    return list(itertools.islice(simulation.events(), count))


def example_mix(count: int) -> list[Event]:
    """The five example events cycled, each with its own id: heavier records, every type equally."""
    examples = example_events()
    return [
        examples[i % len(examples)].with_envelope(event_id=uuid.uuid4(), module_id=f"bos-m{i % 40:02d}")
        for i in range(count)
    ]


def topics_for(tag: str) -> dict[type[Event], str]:
    suffix = uuid.uuid4().hex[:6]
    return {t: f"{t.TOPIC}.bench-{tag}-{suffix}" for t in EVENT_TYPES}


Result = tuple[float, float]  # (events/s including the final flush, CPU-s of all threads per 100k events)


def run_baseline(settings: Settings, bootstrap: str, catalog: SchemaCatalog, events: list[Event]) -> Result:
    """Stock serializer + producer, one produce per event, flushed at the end."""
    topics = topics_for("baseline")
    ensure_topics(settings, bootstrap, list(topics.values()))
    registry = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    serializers = {
        t: AvroSerializer(
            registry,
            json.dumps(catalog.latest(t.subject()).schema),
            lambda event, _ctx: event.to_avro(),
        )
        for t in EVENT_TYPES
    }
    contexts = {t: SerializationContext(topics[t], MessageField.VALUE) for t in EVENT_TYPES}
    producer = Producer(producer_config(settings, bootstrap))
    failed: list[Any] = []
    first, events = events[0], events[1:]
    producer.produce(topics[type(first)], serializers[type(first)](first, contexts[type(first)]))
    producer.flush(30)  # connected and warm

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    cpu = time.process_time()
    started = time.perf_counter()
    for n, event in enumerate(events):
        t = type(event)
        value = serializers[t](event, contexts[t])
        while True:
            try:
                producer.produce(topics[t], value, event.partition_key().encode(), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if n % 1000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    assert left == 0, f"{left} events unacknowledged"
    assert not failed, failed[:3]
    return len(events) / elapsed, cpu / len(events) * 100_000


def run_publisher(
    settings: Settings,
    bootstrap: str,
    codec: AvroCodec,
    events: list[Event],
    batch: int,
    workdir: Path,
    *,
    durability: str = "FULL",
    assign_sequences: bool = True,
    profile: cProfile.Profile | None = None,
) -> Result:
    """SitePublisher with the outbox on, ``publish_many`` per ``batch`` events, flushed at the end."""
    topics = topics_for("sdk")
    ensure_topics(settings, bootstrap, list(topics.values()))
    outbox = workdir / f"outbox-{uuid.uuid4().hex[:6]}.sqlite"
    with SitePublisher(
        settings,
        bootstrap_servers=bootstrap,
        outbox_path=outbox,
        codec=codec,
        site_id=None,
        assign_sequences=assign_sequences,
        topic_of=topics.__getitem__,
        durability=durability,  # type: ignore[arg-type]
    ) as publisher:
        publisher.publish(events[0])  # connected and warm, as the baseline's producer is
        publisher.flush(30)
        events = events[1:]
        cpu = time.process_time()
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        for i in range(0, len(events), batch):
            publisher.publish_many(events[i : i + batch])
        left = publisher.flush(120)
        if profile is not None:
            profile.disable()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    assert left == 0, f"{left} events undelivered"
    return len(events) / elapsed, cpu / len(events) * 100_000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile-events", type=int, default=30_000)
    args = parser.parse_args()

    catalog = SchemaCatalog.load(Settings().schema_dir)
    codec = AvroCodec(catalog)
    streams = {
        "simulator stream": simulated_events(args.events, args.sites, args.seed),
        "example mix (5 types equally)": example_mix(args.events),
    }
    # the inputs are not part of the work measured: keep the collector from scanning them
    gc.collect()
    gc.freeze()
    print(
        f"python {platform.python_version()}, confluent-kafka {confluent_kafka.version()[0]} "
        f"(librdkafka {confluent_kafka.libversion()[0]}), fastavro {fastavro.__version__}, "
        f"pydantic {pydantic.VERSION}, {platform.machine()}, {os.cpu_count()} cores, "
        f"load average before {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp) / "broker.log") as broker:
        workdir = Path(tmp)
        settings = Settings(data_dir=workdir, kafka_bootstrap_servers=broker.bootstrap_servers)
        bootstrap = broker.bootstrap_servers
        runs: dict[str, Callable[[list[Event]], Result]] = {
            "baseline: AvroSerializer + Producer": lambda ev: run_baseline(settings, bootstrap, catalog, ev),
            "SitePublisher, outbox fsync per commit (default)": lambda ev: run_publisher(
                settings, bootstrap, codec, ev, args.batch, workdir
            ),
            "SitePublisher, outbox synchronous=NORMAL": lambda ev: run_publisher(
                settings, bootstrap, codec, ev, args.batch, workdir, durability="NORMAL"
            ),
            "SitePublisher, caller's sequences (as the simulator)": lambda ev: run_publisher(
                settings, bootstrap, codec, ev, args.batch, workdir, assign_sequences=False
            ),
        }
        for name, events in streams.items():
            mix = Counter(type(e).__name__ for e in events)
            print(f"\n{name}: {len(events)} events: {dict(mix.most_common())}")
            print(f"  {'path':<54} {'events/s':>9} {'ratio':>6} {'CPU-s/100k':>10} {'ratio':>6}")
            best: dict[str, Result] = {}
            for _ in range(args.rounds):  # interleaved, best of rounds: other processes load the machine
                for label, run in runs.items():
                    rate, cpu = run(events)
                    old = best.get(label)
                    best[label] = (max(rate, old[0]), min(cpu, old[1])) if old else (rate, cpu)
            base_rate, base_cpu = best[next(iter(runs))]
            for label, (rate, cpu) in best.items():
                print(
                    f"  {label:<54} {rate:>9,.0f} {rate / base_rate:>5.2f}x {cpu:>10.2f} "
                    f"{base_cpu / cpu:>5.2f}x"
                )

        profile = cProfile.Profile()
        events = streams["example mix (5 types equally)"][: args.profile_events]
        run_publisher(settings, bootstrap, codec, events, args.batch, workdir, profile=profile)
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(14)
        print(f"\nprofile of SitePublisher, {len(events)} events of the example mix (tottime):")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:4000])
    print(f"\nload average after {os.getloadavg()[0]:.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
