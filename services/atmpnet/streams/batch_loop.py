"""The batch engine: a confluent-kafka consumer loop around the same IngestCore.

faust's per-message machinery (aiokafka's consumer thread parsing every record in Python, then
one stream event per message) competes with decoding for the GIL. librdkafka fetches and
parses in C threads without the GIL, and ``consume(num_messages=N)`` hands over a whole batch,
so this loop spends its Python time on decoding and the write (docs/processing.md compares the
two). Semantics are the faust engine's: consume a batch, ``IngestCore.process`` it (retried
until it succeeds or the processor stops), then commit its offsets synchronously; nothing is
committed that was not written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from atmpnet.streams.dead_letter import RawRecord
from atmpnet.streams.ingest import IngestCore

log = logging.getLogger(__name__)


def write_failed(records: int, attempt: int, exc: BaseException, max_backoff_s: float) -> float:
    """Log the failed write of a batch; return the wait before the next attempt.

    Both engines (this loop and the faust agent in ``app.py``) retry a failed write until it
    succeeds or the processor stops, and commit nothing meanwhile; only how they wait differs
    (a thread event here, asyncio there). The wait doubles from 1s up to ``max_backoff_s``.
    """
    backoff = min(max_backoff_s, 0.5 * 2.0**attempt)
    log.error(
        "write of %d records failed (attempt %d), retrying in %.1fs: %s", records, attempt, backoff, exc
    )
    return backoff


class BatchLoop:
    """Consume, process, commit; one batch at a time, on the calling thread."""

    def __init__(
        self,
        consumer_conf: dict[str, Any],
        topics: Sequence[str],
        core: IngestCore,
        *,
        batch_max: int,
        batch_within_s: float,
        retry_max_backoff_s: float,
        on_batch: Callable[[int], None],
        topic_refresh_s: float = 30.0,
    ) -> None:
        self.consumer_conf = consumer_conf | {
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "queued.max.messages.kbytes": 256 * 1024,
            "partition.assignment.strategy": "cooperative-sticky",
            # how soon a topic created later that matches a pattern subscription is consumed
            "topic.metadata.refresh.interval.ms": max(100, int(topic_refresh_s * 1000)),
        }
        # topic names, or regexes starting with "^" (librdkafka matches them against the
        # broker's topics at every metadata refresh: a site mirrored in later is picked up)
        self.topics = list(topics)
        self.core = core
        self.batch_max = batch_max
        self.batch_within_s = batch_within_s
        self.retry_max_backoff_s = retry_max_backoff_s
        self.on_batch = on_batch
        self.stop_requested = threading.Event()
        self.assignment: set[tuple[str, int]] = set()

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment |= {(p.topic, p.partition) for p in partitions}

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # batches are processed and committed before the next poll, so nothing is in flight here
        self.assignment -= {(p.topic, p.partition) for p in partitions}

    def _process(self, records: list[RawRecord]) -> bool:
        attempt = 0
        while True:
            try:
                self.core.process(records)
                return True
            except Exception as exc:  # any failure: retry, never commit what was not written
                attempt += 1
                backoff = write_failed(len(records), attempt, exc, self.retry_max_backoff_s)
                if self.stop_requested.wait(backoff):
                    return False

    def run(self) -> None:
        """Run until ``stop_requested`` is set."""
        consumer = Consumer(self.consumer_conf)
        consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not self.stop_requested.is_set():
                messages = consumer.consume(num_messages=self.batch_max, timeout=self.batch_within_s)
                if not messages:
                    continue
                records: list[RawRecord] = []
                ends: dict[tuple[str, int], int] = {}
                for m in messages:
                    err = m.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("consumer error: %s", err)
                        continue
                    topic, partition, offset = str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)
                    headers: Any = m.headers() or ()
                    records.append(RawRecord(topic, partition, offset, m.key(), m.value(), headers))
                    ends[(topic, partition)] = offset + 1
                if not records:
                    continue
                if not self._process(records):
                    return  # stopping with the batch unwritten: leave it uncommitted
                try:
                    consumer.commit(
                        offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()], asynchronous=False
                    )
                except KafkaException as exc:
                    # written but not committed (e.g. a rebalance took the partition): whoever
                    # reads it next re-delivers the batch and the store collapses the copies
                    log.warning(
                        "commit of %d records failed, they will be re-delivered: %s", len(records), exc
                    )
                log.info("wrote a batch of %d records", len(records))
                self.on_batch(len(records))
        finally:
            consumer.close()

    def idle_since(self, last_activity: float) -> float:
        """Seconds since the last batch (0 while unassigned: joining is not idleness)."""
        return 0.0 if not self.assignment else time.monotonic() - last_activity
