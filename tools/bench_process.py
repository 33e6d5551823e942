"""Benchmark the ingest processor (issue 4): topics -> event store on one worker.

Runs, on its own embedded broker and chDB directory:

1. throughput: N simulated events published up front, then the processor (each engine: the faust
   agent with ``take_events``, the confluent-kafka batch loop; both run IngestCore: compiled Avro
   reader, record-level validation fast path, one column-oriented insert per family per batch)
   drains them; events/s is measured from the first written batch to the last (the group join is
   excluded);
2. the naive baseline in the same run: a faust agent that decodes each event and inserts it on
   its own (a sample: it is ~100x slower), per-event rate;
3. latency: events published at a steady rate (default 5,000/s) while the processor runs;
   publish -> visible in the event store (the post-write hook runs after the insert returned),
   p50 and p99.

    python tools/bench_process.py [--events 200000] [--naive-events 3000] [--rate 5000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import clickhouse_connect
import faust
from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import EVENT_TYPES, Event
from atmpnet.embedded import EmbeddedBroker
from atmpnet.settings import REPO_ROOT, Settings
from atmpnet.site.simulator import NetworkConfig, Simulation
from atmpnet.streams.app import ProcessorConfig, create_processor, free_port
from atmpnet.streams.ingest import TopicRouter, WrittenBatch
from atmpnet.transport import ensure_topics, producer_config
from atmpnet.warehouse.connection import connect
from atmpnet.warehouse.event_store import StoredEvent, count_events, insert_events
from atmpnet.warehouse.migrations import apply_migrations
from confluent_kafka import Producer


def simulated(count: int, seed: int) -> list[Event]:
    out: list[Event] = []
    days = 1.0
    while len(out) < count:
        out = list(Simulation(NetworkConfig(sites=4, days=days, seed=seed)).events())
        days *= 2
    return out[:count]


def publish(producer: Producer, topics: dict[type[Event], str], encoded: list[tuple[Event, bytes]]) -> None:
    for event, raw in encoded:
        while True:
            try:
                producer.produce(topics[type(event)], key=event.partition_key(), value=raw)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)


def topic_set(tag: str) -> dict[type[Event], str]:
    return {t: f"{t.TOPIC}.bench-{tag}" for t in EVENT_TYPES}


def bench_throughput(
    settings: Settings, bootstrap: str, codec: AvroCodec, events: list[Event], batch_max: int, engine: Any
) -> dict[str, Any]:
    topics = topic_set("tp" + uuid4().hex[:6])
    ensure_topics(settings, bootstrap, list(topics.values()))
    encoded = [(e, codec.encode(e)) for e in events]
    started = time.perf_counter()
    publish(Producer(producer_config(settings, bootstrap)), topics, encoded)
    publish_s = time.perf_counter() - started

    client = connect(settings, f"bench_throughput_{engine}")
    config = ProcessorConfig(
        bootstrap,
        settings.data_dir,
        group_id=f"bench-{uuid4().hex[:6]}",
        batch_max=batch_max,
        engine=engine,
    )
    processor = create_processor(
        settings, bootstrap, client, codec, config=config, router=TopicRouter(topics)
    )
    marks: list[tuple[float, int]] = []
    processor.add_after_write(lambda _c, batch: marks.append((time.perf_counter(), len(batch))))
    processor.start()
    deadline = time.monotonic() + 600
    while sum(n for _, n in marks) < len(events) and time.monotonic() < deadline:
        time.sleep(0.1)
    processor.stop()
    # the first batch's own time is unknown (it began after the join); rate over the rest
    first_t, first_n = marks[0]
    last_t = marks[-1][0]
    total = sum(n for _, n in marks)
    rate = (total - first_n) / (last_t - first_t) if last_t > first_t else float("nan")
    t = processor.core.timings
    stored = count_events(client)
    client.close()
    return {
        "events": len(events),
        "stored": stored,
        "publish_s": publish_s,
        "batches": len(marks),
        "drain_s": last_t - first_t,
        "rate": rate,
        "decode_s": t.decode_s,
        "store_s": t.store_s,
        "hooks_s": t.hooks_s,
        "records": t.records,
    }


def bench_naive(settings: Settings, bootstrap: str, codec: AvroCodec, events: list[Event]) -> dict[str, Any]:
    """A faust agent that decodes one event and inserts it on its own, as INFRA.md's 275 ev/s agent."""
    topics = topic_set("nv" + uuid4().hex[:6])
    ensure_topics(settings, bootstrap, list(topics.values()))
    publish(Producer(producer_config(settings, bootstrap)), topics, [(e, codec.encode(e)) for e in events])
    client = connect(settings, "bench_naive")
    apply_migrations(client)
    app = faust.App(
        f"naive-{uuid4().hex[:6]}",
        broker=f"kafka://{bootstrap}",
        processing_guarantee="at_least_once",
        broker_session_timeout=10,
        web_enabled=False,
        web_port=free_port(),
        datadir=str(settings.data_dir / "naive-faust"),
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
    )
    topic = app.topic(*topics.values(), value_serializer="raw")
    executor = ThreadPoolExecutor(max_workers=1)
    times: list[float] = []
    done = asyncio.Event()

    def insert_one(message: Any) -> None:
        event = codec.decode(message.value)
        stored = StoredEvent(event, 0, message.topic, message.partition, message.offset, message.value)
        insert_events(client, {type(event): [stored]}, datetime.now(UTC))

    @app.agent(topic)
    async def naive(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        async for event in stream.events():
            await loop.run_in_executor(executor, insert_one, event.message)
            times.append(time.perf_counter())
            if len(times) >= len(events):
                done.set()

    async def run() -> None:
        app.finalize()
        await app.start()
        try:
            await asyncio.wait_for(done.wait(), 600)
        finally:
            await app.stop()

    asyncio.run(run())
    executor.shutdown()
    client.close()
    rate = (len(times) - 1) / (times[-1] - times[0])
    return {"events": len(events), "rate": rate}


def bench_latency(
    settings: Settings,
    bootstrap: str,
    codec: AvroCodec,
    events: list[Event],
    rate: int,
    seconds: float,
    engine: Any,
) -> dict[str, Any]:
    topics = topic_set("lt" + uuid4().hex[:6])
    ensure_topics(settings, bootstrap, list(topics.values()))
    wanted = int(rate * seconds)
    encoded = [(e, codec.encode(e)) for e in events[:wanted]]
    client = connect(settings, f"bench_latency_{engine}")
    config = ProcessorConfig(bootstrap, settings.data_dir, group_id=f"lat-{uuid4().hex[:6]}", engine=engine)
    processor = create_processor(
        settings, bootstrap, client, codec, config=config, router=TopicRouter(topics)
    )
    published: dict[UUID, float] = {}
    latencies: list[float] = []

    def visible(_c: Any, batch: WrittenBatch) -> None:
        now = time.perf_counter()
        for family in batch.stored.values():
            for stored in family:  # event_id without building the model (hooks normally need none)
                sent = published.get(stored.event_id)
                if sent is not None:
                    latencies.append(now - sent)

    processor.add_after_write(visible)
    processor.start()
    time.sleep(8)  # let the group join finish before the clock starts
    producer = Producer(producer_config(settings, bootstrap))
    start = time.perf_counter()
    tick = 0.01
    sent = 0
    while sent < len(encoded):
        due = min(len(encoded), int((time.perf_counter() - start) * rate))
        while sent < due:
            event, raw = encoded[sent]
            published[event.envelope.event_id] = time.perf_counter()
            producer.produce(topics[type(event)], key=event.partition_key(), value=raw)
            sent += 1
        producer.poll(0)
        time.sleep(tick)
    producer.flush(30)
    achieved = sent / (time.perf_counter() - start)
    deadline = time.monotonic() + 60
    while len(latencies) < len(encoded) and time.monotonic() < deadline:
        time.sleep(0.1)
    processor.stop()
    client.close()
    latencies.sort()
    return {
        "events": len(encoded),
        "seen": len(latencies),
        "publish_rate": achieved,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "max": latencies[-1],
        "mean": statistics.fmean(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--naive-events", type=int, default=3_000)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch-max", type=int, default=20_000)
    parser.add_argument("--engines", nargs="*", default=["faust", "batch"], choices=["faust", "batch"])
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "naive", "latency"])
    args = parser.parse_args()

    codec = AvroCodec(SchemaCatalog.load(REPO_ROOT / "schemas"))
    events = simulated(max(args.events, int(args.rate * args.seconds)), seed=5)
    families: dict[str, int] = {}
    for e in events[: args.events]:
        families[type(e).__name__] = families.get(type(e).__name__, 0) + 1
    print(
        f"machine: {platform.machine()}, {platform.python_version()}, faust {faust.__version__}, "
        f"clickhouse-connect {clickhouse_connect.__version__}"
    )
    print(f"events: {args.events} ({families})")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp) / "broker.log") as broker:
        settings = Settings(data_dir=Path(tmp) / "data", kafka_bootstrap_servers=broker.bootstrap_servers)
        bootstrap = broker.bootstrap_servers
        rates: dict[str, float] = {}
        if "throughput" not in args.skip:
            for engine in args.engines:
                tp = bench_throughput(
                    settings, bootstrap, codec, events[: args.events], args.batch_max, engine
                )
                rates[engine] = tp["rate"]
                print(
                    f"{engine} engine: {tp['rate']:,.0f} events/s over {tp['drain_s']:.2f}s "
                    f"({tp['batches']} batches; stored {tp['stored']}/{tp['events']}; "
                    f"publish took {tp['publish_s']:.1f}s)"
                )
                per = 1e6 / tp["records"]
                print(
                    f"  per event: decode+validate {tp['decode_s'] * per:.1f} us, "
                    f"store write {tp['store_s'] * per:.1f} us, hooks {tp['hooks_s'] * per:.1f} us; "
                    f"wall {1e6 / tp['rate']:.1f} us"
                )
        if "naive" not in args.skip:
            nv = bench_naive(settings, bootstrap, codec, events[: args.naive_events])
            print(f"naive agent: {nv['rate']:,.0f} events/s ({nv['events']} events)")
            for engine, rate in rates.items():
                print(f"speed-up of the {engine} engine: {rate / nv['rate']:.1f}x")
        if "latency" not in args.skip:
            for engine in args.engines:
                lt = bench_latency(settings, bootstrap, codec, events, args.rate, args.seconds, engine)
                print(
                    f"{engine} engine latency at {lt['publish_rate']:,.0f} events/s "
                    f"({lt['seen']}/{lt['events']} seen): p50 {lt['p50'] * 1000:.0f} ms, "
                    f"p99 {lt['p99'] * 1000:.0f} ms, max {lt['max'] * 1000:.0f} ms"
                )
    print(f"finished {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
