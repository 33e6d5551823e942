"""Benchmark: our wire-format codec against confluent-kafka's stock Avro serde, in one run.

Encodes and decodes the same mixed stream of the five event types (the examples, cycled)
with both, on one core, and prints events per second and ratios against the baseline.
Usage:  python tools/bench_codec.py [--events 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import platform
import time
import uuid
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.examples import example_events
from atmpnet.contract.registry import RegistrySource
from atmpnet.settings import REPO_ROOT
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def best_rate(fn: Callable[[], object], count: int, rounds: int) -> float:
    """Events per second of the fastest of ``rounds`` runs."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    catalog = SchemaCatalog.load(REPO_ROOT / "schemas")
    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    ours = AvroCodec(catalog, RegistrySource(catalog, "mock://", client=client))
    samples = example_events()
    events = [samples[i % len(samples)] for i in range(args.events)]
    records = [(e.TOPIC, e.subject(), e.to_avro()) for e in events]

    import json

    serializers: dict[str, Any] = {}
    for e in samples:
        schema_str = json.dumps(catalog.latest(e.subject()).schema)
        serializers[e.TOPIC] = AvroSerializer(client, schema_str)
    deserializer = AvroDeserializer(client)
    contexts = {t: SerializationContext(t, MessageField.VALUE) for t, _, _ in records}

    baseline_bytes = [serializers[t](r, contexts[t]) for t, _, r in records]
    our_bytes = [ours.encode(e) for e in events]
    assert [b[5:] for b in baseline_bytes[:5]] == [b[5:] for b in our_bytes[:5]], "same Avro body"

    n, k = args.events, args.rounds
    rows = [
        (
            "encode: confluent AvroSerializer (dict)",
            best_rate(lambda: [serializers[t](r, contexts[t]) for t, _, r in records], n, k),
        ),
        (
            "encode: atmpnet encode_record (dict)",
            best_rate(lambda: [ours.encode_record(s, r) for _, s, r in records], n, k),
        ),
        (
            "encode: atmpnet encode (model -> bytes)",
            best_rate(lambda: [ours.encode(e) for e in events], n, k),
        ),
        (
            "decode: confluent AvroDeserializer (dict)",
            best_rate(
                lambda: [
                    deserializer(b, contexts[t]) for b, (t, _, _) in zip(baseline_bytes, records, strict=True)
                ],
                n,
                k,
            ),
        ),
        (
            "decode: atmpnet decode_record (dict)",
            best_rate(lambda: [ours.decode_record(b) for b in our_bytes], n, k),
        ),
        (
            "decode: atmpnet decode (bytes -> validated model)",
            best_rate(lambda: [ours.decode(b) for b in our_bytes], n, k),
        ),
    ]
    print(
        f"python {platform.python_version()}, fastavro {version('fastavro')}, "
        f"confluent-kafka {version('confluent-kafka')}, pydantic {version('pydantic')}, "
        f"{platform.machine()}, {n} events x best of {k}"
    )
    base = {"encode": rows[0][1], "decode": rows[3][1]}
    for name, rate in rows:
        print(f"{name:<52} {rate:>10,.0f} events/s  {rate / base[name[:6]]:5.2f}x baseline")


if __name__ == "__main__":
    main()
