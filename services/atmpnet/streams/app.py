"""The faust-streaming processor: one agent on the five input topics (and their mirrored copies).

The agent is a thin shell around ``IngestCore``: it takes batches of raw records from the
stream (``take_events``: values stay bytes, so decoding is our AvroCodec's fastavro path),
runs decode + write + hooks in a thread (chDB blocks), and only then acks the batch. Offsets
are committed by faust from acked messages only, so:

- a crash before the write: nothing acked, the batch is re-delivered;
- a crash between the write and the commit: the batch is re-delivered and written again; the
  event store collapses the copies (ReplacingMergeTree + FINAL) and hooks are idempotent;
- a failing write or hook: each message of the batch holds one extra reference taken before
  processing, so faust's own ack at the end of ``take_events`` cannot mark it done; the agent
  retries with backoff until the write succeeds or the processor stops. Nothing after the
  gap is committed (commits advance over contiguous acked offsets only).

At-least-once only: the embedded broker cannot do transactions, and aiokafka's idempotent
producer fails on it (INFRA.md); dedupe by event id makes the sink idempotent instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import faust
from clickhouse_connect.driver.client import Client
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from atmpnet.contract.codec import AvroCodec
from atmpnet.errors import AtmpError
from atmpnet.settings import Settings
from atmpnet.streams.batch_loop import BatchLoop, write_failed
from atmpnet.streams.dead_letter import DeadLetterPublisher, RawRecord
from atmpnet.streams.ingest import AfterWriteHook, IngestCore, TopicRouter
from atmpnet.transport import (
    DEAD_LETTER_TOPIC,
    client_config,
    consumer_config,
    ensure_topics,
    producer_config,
)
from atmpnet.warehouse.event_store import TABLES
from atmpnet.warehouse.migrations import apply_migrations
from atmpnet.warehouse.views import record_input_partitions

log = logging.getLogger(__name__)


class ProcessorError(AtmpError):
    """The stream processor could not start or stopped on a fault."""


def free_port() -> int:
    """A free loopback port (faust binds its web port even with the web disabled)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ProcessorConfig:
    """How the processor reaches the broker and sizes its batches."""

    bootstrap_servers: str
    data_dir: Path
    group_id: str = "atmpnet-processor"
    batch_max: int = 20_000
    batch_within_s: float = 0.25
    session_timeout_s: float = 10.0  # the embedded broker holds JoinGroup for half of it
    web_port: int = field(default_factory=free_port)  # faust binds it even with the web disabled
    retry_max_backoff_s: float = 30.0
    # chDB blocks the calling thread: write on a worker thread so the event loop stays live
    write_in_thread: bool = True
    # "faust": the faust agent (take_events); "batch": the confluent-kafka loop (batch_loop.py)
    engine: Literal["faust", "batch"] = "faust"
    # stop by itself once assigned and no batch arrived for this long (backlog runs, tests)
    exit_when_idle_s: float | None = None
    # how often new topics matching the router's pattern are looked for (a site mirrored in later)
    topic_refresh_s: float = 30.0


def _records(events: Sequence[Any]) -> list[RawRecord]:
    out = []
    for event in events:
        m = event.message
        headers = m.headers
        if isinstance(headers, dict):
            headers = list(headers.items())
        out.append(RawRecord(m.topic, m.partition, m.offset, m.key, m.value, headers or (), m.timestamp))
    return out


def input_topics(settings: Settings, bootstrap_servers: str, router: TopicRouter) -> list[str]:
    """The broker's topics that carry events: the five input topics and their mirrored copies.

    faust-streaming's aiokafka driver cannot subscribe by pattern ("pattern does not work" in
    its source), so the faust engine resolves the pattern against the broker's topic list, at
    start and every ``topic_refresh_s`` (``Processor._topics_changed``).
    """
    return sorted(input_partitions(settings, bootstrap_servers, router))


def input_partitions(settings: Settings, bootstrap_servers: str, router: TopicRouter) -> dict[str, int]:
    """Each input topic on the broker (as ``input_topics``) with its number of partitions."""
    admin = AdminClient(client_config(settings, bootstrap_servers))
    try:
        found = admin.list_topics(timeout=10).topics
    except KafkaException as exc:
        raise ProcessorError(f"cannot list topics on {bootstrap_servers}: {exc}") from exc
    return {name: len(meta.partitions) for name, meta in found.items() if router.route(name) is not None}


def faust_broker_settings(settings: Settings, bootstrap_servers: str) -> dict[str, Any]:
    """Faust's ``broker`` and ``broker_credentials`` for these servers and security settings.

    Every bootstrap server (faust takes a list of URLs), and the same security as the
    confluent-kafka clients (transport.client_config): SASL (PLAIN, SCRAM-SHA-256/512) with
    TLS for SASL_SSL, TLS alone for SSL; TLS verifies against the system trust store.
    """
    servers = [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
    if not servers:
        raise ProcessorError("no bootstrap server given")
    protocol = settings.kafka_security_protocol.upper()
    credentials: faust.types.auth.CredentialsT | None = None
    tls = ssl.create_default_context() if protocol in ("SSL", "SASL_SSL") else None
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        if not settings.kafka_sasl_mechanism or not settings.kafka_sasl_username:
            raise ProcessorError(f"{protocol} needs a SASL mechanism and username (ATMPNET_KAFKA_SASL_*)")
        password = settings.kafka_sasl_password
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password is not None else "",
            mechanism=settings.kafka_sasl_mechanism.upper(),
            ssl_context=tls,
        )
    elif protocol == "SSL":
        assert tls is not None
        credentials = faust.SSLCredentials(tls)
    elif protocol != "PLAINTEXT":
        raise ProcessorError(
            f"security protocol {settings.kafka_security_protocol!r} is not supported by faust"
        )
    return {"broker": [f"kafka://{server}" for server in servers], "broker_credentials": credentials}


def build_app(
    config: ProcessorConfig,
    core: IngestCore,
    topics: Sequence[str],
    *,
    executor: ThreadPoolExecutor,
    on_batch: Callable[[int], None] | None = None,
    broker: dict[str, Any] | None = None,
) -> faust.App:
    """The faust app with its one ingest agent on every input topic.

    ``broker``: ``faust_broker_settings(...)``; by default the config's servers without security.
    """
    broker = broker or {"broker": [f"kafka://{s.strip()}" for s in config.bootstrap_servers.split(",")]}
    app = faust.App(
        config.group_id,
        **broker,
        processing_guarantee="at_least_once",
        broker_session_timeout=config.session_timeout_s,
        broker_heartbeat_interval=1.0,
        web_enabled=False,
        web_port=config.web_port,
        web_bind="127.0.0.1",
        datadir=str(config.data_dir / "faust"),
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4 * config.batch_max, 8192),
        broker_max_poll_records=max(config.batch_max, 500),
        consumer_max_fetch_size=8 * 1024 * 1024,
        broker_commit_interval=1.0,
        topic_allow_declare=False,
        topic_disable_leader=True,
    )
    if not topics:
        raise ProcessorError(
            "no input topic exists yet: create them (atmpnet migrate / the publishers) first"
        )
    topic = app.topic(*topics, key_type=bytes, value_type=bytes, value_serializer="raw")
    topic.key_serializer = "raw"  # type: ignore[attr-defined]  # TopicT omits it

    async def ingest(stream: faust.StreamT[bytes]) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(  # type: ignore[attr-defined]  # StreamT omits it
            config.batch_max, within=config.batch_within_s
        ):
            for event in events:  # held until written: faust's own ack after this body cannot commit it
                event.message.incref()
            records = _records(events)
            attempt = 0
            while True:
                try:
                    if config.write_in_thread:
                        await loop.run_in_executor(executor, core.process, records)
                    else:
                        core.process(records)
                    break
                except Exception as exc:  # any failure: retry, never ack what was not written
                    attempt += 1
                    backoff = write_failed(len(records), attempt, exc, config.retry_max_backoff_s)
                    if stream.should_stop or app.should_stop:
                        return  # leave the batch unacked: it is re-delivered after restart
                    await asyncio.sleep(backoff)
            for event in events:
                await stream.ack(event)
            log.info("wrote a batch of %d records", len(records))
            if on_batch is not None:
                on_batch(len(records))

    app.agent(topic, name="atmpnet.ingest")(ingest)
    return app


class Processor:
    """The ingest processor: faust app + ingest core, run in the caller's thread or a background one.

    ``run()`` blocks (the ``atmpnet process`` command); ``start()`` runs it on a thread with
    its own event loop so other components (the API, in embedded mode sharing the chDB client)
    live in the same process; ``stop()`` ends it and commits what was written.
    """

    def __init__(
        self,
        config: ProcessorConfig,
        core: IngestCore,
        topics: Sequence[str],
        consumer_conf: dict[str, Any] | None = None,
        *,
        broker: dict[str, Any] | None = None,
        topic_source: Callable[[], list[str]] | None = None,
    ) -> None:
        """``broker``: faust_broker_settings(...); ``topic_source``: the input topics now (refreshed)."""
        self.config = config
        self.core = core
        self.topics = list(topics)
        (config.data_dir / "faust").mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atmpnet-ingest")
        self.broker = broker
        self.topic_source = topic_source
        self.app = self._build_app()
        self.batch_loop: BatchLoop | None = None
        if config.engine == "batch":
            if consumer_conf is None:
                raise ProcessorError("the batch engine needs a consumer configuration")
            self.batch_loop = BatchLoop(
                consumer_conf,
                [core.router.subscription],  # a pattern: later mirrored topics join by themselves
                core,
                batch_max=config.batch_max,
                batch_within_s=config.batch_within_s,
                retry_max_backoff_s=config.retry_max_backoff_s,
                on_batch=self._on_batch,
                topic_refresh_s=config.topic_refresh_s,
            )
        self.records_processed = 0
        self.batches = 0
        self._last_activity = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _build_app(self) -> faust.App:
        return build_app(
            self.config,
            self.core,
            self.topics,
            executor=self._executor,
            on_batch=self._on_batch,
            broker=self.broker,
        )

    def add_after_write(self, hook: AfterWriteHook) -> None:
        """Register a post-write hook (see ``IngestCore.add_after_write``)."""
        self.core.add_after_write(hook)

    def _on_batch(self, records: int) -> None:
        self.records_processed += records
        self.batches += 1
        self._last_activity = time.monotonic()

    async def _exit_when_idle(self, idle_s: float) -> None:
        assert self._stopping is not None
        assigned: set[Any] = set()
        while not self._stopping.is_set():
            await asyncio.sleep(0.25)
            if self.batch_loop is not None:
                now_assigned: set[Any] = set(self.batch_loop.assignment)
            else:
                now_assigned = set(self.app.consumer.assignment())
            if not now_assigned or now_assigned != assigned:
                assigned = now_assigned
                self._last_activity = time.monotonic()  # joining or rebalancing is not idleness
            elif time.monotonic() - self._last_activity > idle_s:
                log.info("no records for %.1fs: stopping", idle_s)
                self._stopping.set()

    async def serve(self) -> None:
        """Run the app until ``request_stop`` (or a crash), then stop it cleanly."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self.batch_loop is not None:
            await self._serve_batch_loop(self.batch_loop)
            return
        try:
            while await self._serve_app():
                # new input topics appeared (a site mirrored in): the same group, a new app on them
                log.info("input topics changed: restarting the faust app on %s", ", ".join(self.topics))
                self.app = self._build_app()
        finally:
            self._executor.shutdown(wait=True)
            close = getattr(self.core.dead_letter_sink, "close", None)
            if close is not None:
                close()

    async def _serve_app(self) -> bool:
        """Run the current faust app until stop, crash or new topics; True to run a new one."""
        assert self._stopping is not None
        self.app.finalize()
        await self.app.start()
        gc.freeze()  # start-up objects (faust, chDB, schemas) need no more cyclic-GC passes
        self._started.set()
        restart = False
        try:
            crashed = asyncio.ensure_future(self.app.wait_until_stopped())
            stopping = asyncio.ensure_future(self._stopping.wait())
            idle = (
                asyncio.ensure_future(self._exit_when_idle(self.config.exit_when_idle_s))
                if self.config.exit_when_idle_s
                else None
            )
            changed = asyncio.ensure_future(self._topics_changed()) if self.topic_source else None
            waiting = {crashed, stopping} | ({changed} if changed is not None else set())
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            restart = changed is not None and changed.done() and not changed.cancelled() and changed.result()
            for f in (crashed, stopping, idle, changed):
                if f is not None:
                    f.cancel()
        finally:
            # commits what was written; a batch still in flight stays unacked and is re-delivered
            await self.app.stop()
            if self.app.crash_reason is not None:
                self._error = self.app.crash_reason
                restart = False
        return restart and not self._stopping.is_set()

    async def _topics_changed(self) -> bool:
        """Poll the broker's topics; return True once the matching set grew.

        faust-streaming's aiokafka driver cannot subscribe by pattern ("pattern does not work"
        in its source, and Topic(pattern=...) is never passed to the consumer), so the faust
        engine resolves the pattern itself every ``topic_refresh_s`` and restarts its app on
        the new set; the batch engine subscribes with the pattern (librdkafka regex).
        """
        assert self.topic_source is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.topic_refresh_s)
            try:
                now = await loop.run_in_executor(None, self.topic_source)
            except Exception as exc:
                log.warning("cannot list topics: %s", exc)
                continue
            added = sorted(set(now) - set(self.topics))
            if added:
                self.topics = sorted(set(self.topics) | set(now))
                return True

    async def _serve_batch_loop(self, batch_loop: BatchLoop) -> None:
        assert self._loop is not None
        assert self._stopping is not None
        gc.freeze()  # start-up objects (chDB, schemas) need no more cyclic-GC passes
        running = self._loop.run_in_executor(self._executor, batch_loop.run)
        self._started.set()
        idle = (
            asyncio.ensure_future(self._exit_when_idle(self.config.exit_when_idle_s))
            if self.config.exit_when_idle_s
            else None
        )
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            waiting: set[asyncio.Future[Any]] = {running, stopping}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            batch_loop.stop_requested.set()
            for f in (stopping, idle):
                if f is not None:
                    f.cancel()
            try:
                await running
            except Exception as exc:  # reported by run()/stop()
                self._error = exc
            self._executor.shutdown(wait=True)
            close = getattr(self.core.dead_letter_sink, "close", None)
            if close is not None:
                close()

    def run(self) -> None:
        """Run in this thread until stopped (Ctrl-C or ``stop()`` from another thread)."""
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self.serve())
        if self._error is not None:
            raise ProcessorError(f"processor crashed: {self._error}") from self._error

    def request_stop(self) -> None:
        """Ask the processor to stop (thread-safe, returns at once)."""
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: already stopped
                self._loop.call_soon_threadsafe(self._stopping.set)

    def start(self, timeout_s: float = 60.0) -> Processor:
        """Run on a background thread; return once the app has started."""

        def target() -> None:
            try:
                asyncio.run(self.serve())
            except BaseException as exc:  # reported by stop()
                self._error = exc
                self._started.set()

        self._thread = threading.Thread(target=target, name="atmpnet-processor", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise ProcessorError(f"processor did not start within {timeout_s}s")
        if self._error is not None:
            raise ProcessorError(f"processor failed to start: {self._error}") from self._error
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the background processor and wait for it."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise ProcessorError(f"processor did not stop within {timeout_s}s")
        if self._error is not None:
            raise ProcessorError(f"processor stopped on a fault: {self._error}") from self._error


def create_processor(
    settings: Settings,
    bootstrap_servers: str,
    client: Client,
    codec: AvroCodec,
    *,
    config: ProcessorConfig | None = None,
    router: TopicRouter | None = None,
    dead_letter_topic: str = DEAD_LETTER_TOPIC,
) -> Processor:
    """Wire a processor: migrations applied, dead-letter topic present, input topics resolved."""
    apply_migrations(client)
    ensure_topics(settings, bootstrap_servers, [dead_letter_topic])
    sink = DeadLetterPublisher(producer_config(settings, bootstrap_servers), dead_letter_topic)
    core = IngestCore(client, codec, router=router, dead_letter_sink=sink)
    partitions = input_partitions(settings, bootstrap_servers, core.router)
    # the integrity views need to know partitions that have delivered nothing yet
    families = {t: TABLES[route[0]] for t in partitions if (route := core.router.route(t)) is not None}
    record_input_partitions(client, {t: (families[t], n) for t, n in partitions.items()})
    topics = sorted(partitions)
    config = config or ProcessorConfig(bootstrap_servers, settings.data_dir)
    consumer_conf = consumer_config(settings, bootstrap_servers, config.group_id)
    return Processor(
        config,
        core,
        topics,
        consumer_conf,
        broker=faust_broker_settings(settings, bootstrap_servers),
        topic_source=lambda: input_topics(settings, bootstrap_servers, core.router),
    )
