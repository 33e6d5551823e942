"""Helpers for the integrity tests: chain a simulated run and write it through the ingest core.

Records get real partitions (by key, as the producer would) and per-partition offsets in the
order given, so the event store holds what a consumer of the topics would have read.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence

from atmpnet.contract.chain import payload_hash
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Event
from atmpnet.streams.dead_letter import RawRecord
from atmpnet.streams.ingest import IngestCore

PARTITIONS = 3


def stream_of(e: Event) -> str:
    env = e.envelope
    return f"module/{env.module_id}" if env.module_id else f"producer/{env.producer.id}"


def chained(events: Sequence[Event], codec: AvroCodec) -> list[Event]:
    """The events with ``previous_hash`` (re)stamped as the publisher does (per stream, by sequence).

    Faults a site itself causes (a lane mix-up) are made before this, so the chain covers them.
    """
    by_stream: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(events):
        by_stream[stream_of(e)].append(i)
    out = list(events)
    for indexes in by_stream.values():
        indexes.sort(key=lambda i: events[i].envelope.sequence)
        previous: str | None = None
        last_sequence = 0
        for i in indexes:
            e = events[i]
            if e.envelope.sequence != last_sequence + 1:
                previous = None  # across a gap the publisher's chain is unknown here
            stamped = e.with_envelope(previous_hash=previous)
            out[i] = stamped
            previous = payload_hash(codec.encode(stamped))
            last_sequence = e.envelope.sequence
    return out


def ingest(core: IngestCore, codec: AvroCodec, events: Sequence[Event], chunk: int = 2000) -> None:
    """Write ``events`` through the ingest core in arrival order, ``chunk`` records per batch.

    Offsets continue from the previous call on the same core, as a topic's would.
    """
    offsets: dict[tuple[str, int], int] = core.__dict__.setdefault("test_offsets", defaultdict(int))
    for start in range(0, len(events), chunk):
        records = []
        for e in events[start : start + chunk]:
            key = e.partition_key().encode()
            partition = zlib.crc32(key) % PARTITIONS
            offset = offsets[(type(e).TOPIC, partition)]
            offsets[(type(e).TOPIC, partition)] += 1
            records.append(RawRecord(type(e).TOPIC, partition, offset, key, codec.encode(e), []))
        core.process(records)


def drop_sensor_run(events: Sequence[Event], length: int = 3) -> tuple[list[Event], list[Event]]:
    """Lose ``length`` consecutive (by sequence) sensor summaries in the middle of one module stream."""
    from atmpnet.contract.events import SensorSummary

    streams: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        streams[stream_of(e)].append(e)
    stream = sorted(s for s in streams if s.startswith("module/"))[0]
    ordered = sorted(streams[stream], key=lambda e: e.envelope.sequence)
    for i in range(len(ordered) // 2, len(ordered) - length):
        run = ordered[i : i + length]
        if all(isinstance(e, SensorSummary) for e in run):
            lost = {e.envelope.event_id for e in run}
            return [e for e in events if e.envelope.event_id not in lost], run
    raise AssertionError("no run of sensor summaries to drop")


def move_one_step_to_another_lane(events: Sequence[Event]) -> tuple[list[Event], Event]:
    """A lane mix-up: one on-module step event (not a start of the batch) published with another lane."""
    from atmpnet.contract.events import BatchStep, ProcessStep, StepTransition

    for i, e in enumerate(events):
        if (
            isinstance(e, BatchStep)
            and e.step is ProcessStep.ACTIVATION
            and e.transition is StepTransition.COMPLETED
        ):
            lane = e.envelope.lane or 1
            moved = e.with_envelope(lane=2 if lane == 1 else 1)
            return [*events[:i], moved, *events[i + 1 :]], moved
    raise AssertionError("no ACTIVATION COMPLETED to move")


def continue_offsets(core: IngestCore) -> None:
    """Let ``ingest`` on this core continue each partition after what the store already holds."""
    offsets: dict[tuple[str, int], int] = core.__dict__.setdefault("test_offsets", defaultdict(int))
    for table in ("batch_steps", "sensor_summaries", "deviations", "module_configs", "baselines"):
        rows = core.client.query(
            f"SELECT topic, `partition`, max(`offset`) + 1 FROM {table} GROUP BY topic, `partition`"
        ).result_rows
        for topic, partition, after in rows:
            offsets[(topic, partition)] = max(offsets[(topic, partition)], int(after))
