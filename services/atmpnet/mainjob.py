"""The main job behind ``atmpnet up``: the whole simulated network in one process, live.

It starts the stack (the embedded broker and chDB unless settings name real services), applies
the migrations, runs the ingest processor with the background view projector and the derived
publisher, serves the query API and dashboard, and feeds the simulated network through the
SitePublisher SDK, paced so the dashboard follows it: simulated time runs at ``speed``
simulated hours per real second after a ``warmup_days`` burst published at full speed.

This module is the body of a CLI command: like ``cli`` it may import ``embedded`` and ``api``,
and only ``cli`` imports it. In embedded mode chDB allows one process per data directory, so the
processor, the projector and the API live here together, each with a client of its own on that
directory (clickhouse-connect refuses concurrent queries on one client).

A run starts a new network: the embedded broker keeps nothing across runs (memory storage), so
the embedded store, the outbox and the truth of the previous run are wiped first, unless
``keep``. A ClickHouse server is never wiped.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Literal

from clickhouse_connect.driver.client import Client

from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import DERIVED_EVENT_TYPES, DeviationStatus, Event
from atmpnet.embedded import Stack
from atmpnet.errors import AtmpError
from atmpnet.settings import ApiToken, Settings
from atmpnet.site.publisher import SitePublisher
from atmpnet.site.simulation.engine import Simulation
from atmpnet.site.simulation.network import NetworkConfig
from atmpnet.streams.app import Processor, ProcessorConfig, create_processor
from atmpnet.streams.derived import BackgroundProjector, DerivedPublisher
from atmpnet.transport import INPUT_TOPICS, ensure_topics, producer_config
from atmpnet.warehouse.connection import connect
from atmpnet.warehouse.migrations import apply_migrations

if TYPE_CHECKING:
    from fastapi import FastAPI

    from atmpnet.api.app import ApiServer
    from atmpnet.warehouse.views import ViewSet

log = logging.getLogger(__name__)

Say = Callable[[str], None]
# librdkafka, faust and aiokafka report every join, batch and commit at INFO: too much for a console
_QUIET_LOGGERS = ("faust", "aiokafka", "mode", "atmpnet.streams", "atmpnet.site", "uvicorn")


class MainJobError(AtmpError):
    """The main job could not start, or a component stopped on a fault."""


@dataclass(frozen=True)
class MainJobOptions:
    """What ``atmpnet up`` runs (the command's options)."""

    sites: int = 4
    days: float = 30.0
    seed: int = 1
    speed: float = 4.0  # simulated hours per real second: a 30-day month in 3 minutes
    warmup_days: float = 3.0  # published at full speed first, so the dashboard has history at once
    # hourly sensor summaries: ~90k events a month for 4 sites (15 min: 359k), which bounds the
    # broker's memory and the views' full recompute (see docs/architecture.md)
    sensor_window_minutes: int = 60
    views_pause_s: float = 1.0  # between two view refreshes
    port: int | None = None  # None: settings.api_port; 0: a free port
    until_done: bool = False  # exit once everything is published, processed and in the views
    linger_s: float = 0.0  # with until_done: keep serving this long after the end (tests read it)
    keep: bool = False  # keep the embedded store of an earlier run
    progress_every_s: float = 5.0
    engine: Literal["faust", "batch"] = "faust"
    drain_s: float = 15.0  # on stop: how long the processor may catch up with what was delivered
    done_timeout_s: float = 300.0  # --until-done: fail when nothing advances for this long

    def network(self) -> NetworkConfig:
        """The simulated network's configuration."""
        return NetworkConfig(
            sites=self.sites, days=self.days, seed=self.seed, sensor_window_minutes=self.sensor_window_minutes
        )


def run_dir(settings: Settings) -> Path:
    """Where the main job keeps its outbox and the run's ground truth."""
    return settings.data_dir / "up"


class PacedFeed:
    """Publishes the simulation through the SitePublisher, following a simulated clock.

    Events are due at their ``published_at``: those within the warm-up go at full speed, the
    rest when the clock (``speed`` simulated hours per real second from the end of the warm-up)
    reaches them. Each due group goes in one ``publish_many`` (one outbox transaction).
    """

    def __init__(
        self,
        simulation: Simulation,
        publisher: SitePublisher,
        *,
        speed: float,
        warmup_days: float,
        stop: threading.Event,
        chunk: int = 5000,
    ) -> None:
        self.simulation = simulation
        self.publisher = publisher
        self.speed_s_per_s = speed * 3600.0
        self.warm_end = simulation.start + timedelta(days=min(warmup_days, simulation.config.days))
        self.stop = stop
        self.chunk = chunk
        self.published = 0
        self.finished = False  # every event was published
        self.error: BaseException | None = None
        self._anchor: float | None = None  # wall clock when the warm-up ended
        self._last_at = simulation.start
        self._thread = threading.Thread(target=self._run, name="atmpnet-sites", daemon=True)

    def start(self) -> PacedFeed:
        """Start publishing on a thread of its own."""
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> None:
        """Wait for the publishing thread (after ``stop`` is set or the simulation ended)."""
        self._thread.join(timeout_s)

    def clock(self) -> datetime:
        """The simulated time now: the newest event published during the warm-up, the clock after."""
        if self._anchor is None:
            return self._last_at
        at = self.warm_end + timedelta(seconds=(time.monotonic() - self._anchor) * self.speed_s_per_s)
        return min(at, self.simulation.end)

    def simulated_day(self) -> float:
        """Days since the simulation's start, on the simulated clock."""
        return (self.clock() - self.simulation.start).total_seconds() / 86400

    def _publish(self, pending: list[Event]) -> None:
        if pending:
            self.publisher.publish_many(pending)
            self.published += len(pending)
            self._last_at = pending[-1].envelope.published_at
            pending.clear()

    def _run(self) -> None:
        try:
            pending: list[Event] = []
            for event in self.simulation.events():
                if self.stop.is_set():
                    return
                at = event.envelope.published_at
                if at > self.warm_end:
                    if self._anchor is None:
                        self._publish(pending)
                        self._anchor = time.monotonic()
                    due = self._anchor + (at - self.warm_end).total_seconds() / self.speed_s_per_s
                    if due > time.monotonic():
                        self._publish(pending)
                        while (wait := due - time.monotonic()) > 0:
                            if self.stop.wait(min(wait, 0.5)):
                                return
                pending.append(event)
                if len(pending) >= self.chunk:
                    self._publish(pending)
            self._publish(pending)
            self.finished = True
        except BaseException as exc:  # reported by the progress loop
            self.error = exc
            log.exception("publishing the simulated network failed")
        finally:
            self.stop_clock()

    def stop_clock(self) -> None:
        """Freeze the clock where publishing ended."""
        if self._anchor is not None:
            self._last_at = self.clock()
            self._anchor = None
            self.warm_end = self._last_at


def _wipe(settings: Settings, say: Say) -> None:
    """Drop the embedded store and the previous run's outbox and truth (a new network starts)."""
    shutil.rmtree(run_dir(settings), ignore_errors=True)
    if not settings.embedded_clickhouse:
        say(f"ClickHouse server: keeping database {settings.clickhouse_database} (never wiped)")
        return
    admin = connect(settings, "default")
    try:
        admin.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}` SYNC")
    finally:
        admin.close()


def _site_entry(site_id: str) -> dict[str, str]:
    return {"name": f"site-{site_id}", "role": "site", "site_id": site_id, "token": secrets.token_urlsafe(24)}


def _development_tokens(settings: Settings, site_ids: list[str]) -> tuple[list[ApiToken], Path] | None:
    """The development tokens, one per role and per site, and their file (None when configured).

    The file (0600, data_dir/api-tokens.json) is kept across runs while it names only sites of
    this network, so a signed-in user stays valid; a site it lacks (a larger ``--sites`` with
    ``--keep``, a site that appeared during the run) is added with a token of its own, the
    others unchanged; a file naming another network's sites is replaced.
    """
    from atmpnet.api.auth import development_tokens

    if settings.api_tokens:
        return None
    path = settings.data_dir / "api-tokens.json"
    if path.exists():
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            known = {e.get("site_id") for e in raw} - {None}
        except (ValueError, AttributeError):
            raw, known = [], {"?"}
        if not known <= set(site_ids):
            path.unlink()
        elif missing := sorted(set(site_ids) - known):
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(raw + [_site_entry(s) for s in missing], out, indent=2)
            os.replace(tmp, path)
    return development_tokens(settings, site_ids)


def _operations_token(tokens: list[ApiToken]) -> str | None:
    ops = next((t.token for t in tokens if t.role == "operations" and t.token is not None), None)
    return ops.get_secret_value() if ops is not None else None


def _stored_sites(views: ViewSet) -> set[str]:
    """Sites with a configuration or a batch step in the store (as the API's site list)."""
    facts = views.facts
    return {c.site_id for c in facts.configs} | {s.site_id for s in facts.steps}


@dataclass
class _Parts:
    """What is running, so the stop sequence closes each part once, in order."""

    feed: PacedFeed | None = None
    publisher: SitePublisher | None = None
    processor: Processor | None = None
    projector: BackgroundProjector | None = None
    api: ApiServer | None = None
    clients: tuple[Client, ...] = ()


class MainJob:
    """``atmpnet up``: start, run with progress lines, stop cleanly on a signal or when done."""

    def __init__(
        self, settings: Settings, codec: AvroCodec, options: MainJobOptions, say: Say = print
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.options = options
        self.say = say
        self.stop = threading.Event()
        self.failed: str | None = None
        self._signals = 0
        self._signal_name: str | None = None
        self._parts = _Parts()
        self._embedded_broker = False  # memory storage: what it holds at stop is gone
        self._views_seen: tuple[int, float] | None = None
        self._token_sites: set[str] = set()  # sites the development tokens cover
        self._api_app: FastAPI | None = None

    # -- signals ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the clean shutdown
        self._signal_name = signal.Signals(signum).name  # printed by _shutdown: no I/O in a handler
        self.stop.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGTERM, self._on_signal)

    # -- run --------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (or, with ``until_done``, until everything is in the views); exit code."""
        self._install_signals()
        if log.getEffectiveLevel() > logging.DEBUG:
            for name in _QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)
        started = time.monotonic()
        with Stack(self.settings) as stack:
            try:
                self._start(stack)
                if not self.stop.is_set():
                    self._watch()
            finally:
                self._shutdown()
        self.say(f"stopped after {time.monotonic() - started:.0f}s")
        return 1 if self.failed else 0

    def _start(self, stack: Stack) -> None:
        o, settings, say = self.options, self.settings, self.say
        servers = stack.bootstrap_servers
        self._embedded_broker = stack.broker is not None
        say(f"Kafka: {'embedded broker' if stack.broker else 'external Kafka'} at {servers}")
        if not o.keep:
            _wipe(settings, say)
        client = stack.clickhouse()
        apply_migrations(client)
        where = "embedded chDB in " + str(settings.data_dir) if settings.embedded_clickhouse else "server"
        say(f"ClickHouse: {where}, database {client.database}")
        run_dir(settings).mkdir(parents=True, exist_ok=True)
        ensure_topics(settings, servers, list(INPUT_TOPICS))
        network = o.network()
        simulation = Simulation(network)
        site_ids = [p.site_id for p in network.site_profiles()]

        projector_client = connect(settings)
        token_file, ops_token = self._start_api(client, site_ids, o.port)
        self._parts.clients = (*self._parts.clients, projector_client)

        ensure_topics(settings, servers, [t.TOPIC for t in DERIVED_EVENT_TYPES])
        derived = DerivedPublisher(producer_config(settings, servers), self.codec)
        # a pause between refreshes leaves the processor and the API their share of the GIL
        projector = BackgroundProjector(projector_client, derived, min_interval_s=o.views_pause_s).start()
        self._parts.projector = projector
        processor = create_processor(
            settings,
            servers,
            client,
            self.codec,
            config=ProcessorConfig(servers, settings.data_dir, group_id="atmpnet-up", engine=o.engine),
        )
        processor.add_after_write(projector)
        self._parts.publisher = SitePublisher(
            settings,
            bootstrap_servers=servers,
            outbox_path=run_dir(settings) / "outbox.sqlite",
            codec=self.codec,
            site_id=None,  # the simulator publishes for every site and keeps its own sequences
            assign_sequences=False,
            when_full="block",
            block_timeout_s=300.0,
            durability="NORMAL",  # a simulated network: survive a killed process, not a power cut
        )
        self._parts.feed = PacedFeed(
            simulation, self._parts.publisher, speed=o.speed, warmup_days=o.warmup_days, stop=self.stop
        ).start()
        plural = "s" if len(site_ids) > 1 else ""
        say(
            f"network: {len(site_ids)} site{plural} ({', '.join(site_ids)}), {o.days:g} simulated days from "
            f"{simulation.start:%Y-%m-%d}, seed {o.seed}; first {min(o.warmup_days, o.days):g} days at full "
            f"speed, then {o.speed:g} simulated hours per second (a day every {24 / o.speed:.1f}s); "
            f"sensor summaries every {o.sensor_window_minutes} min"
        )
        say(f"processor ({o.engine}) starting: joining the consumer group takes a few seconds")
        processor.start()
        self._parts.processor = processor
        server = self._parts.api
        assert server is not None
        say("")
        say(f"dashboard:  {server.url}/login   (then Network overview, Deviation triage, ...)")
        say(f"API docs:   {server.url}/docs")
        if token_file is not None:
            say(f"sign in with the operations token: {ops_token}")
            say(f"  (local development tokens for every role and site, file mode 0600: {token_file})")
        else:
            say("sign in with one of the tokens configured in ATMPNET_API_TOKENS")
        say("Ctrl-C stops everything cleanly.")
        say("")

    def _start_api(
        self, client: Client, site_ids: list[str], port: int | None
    ) -> tuple[Path | None, str | None]:
        """Serve the API on a client of its own; return the development token file and ops token."""
        from atmpnet.api.app import ApiServer, create_api  # cli's layer: see the module docstring
        from atmpnet.warehouse.queries import Warehouse

        # with --keep (or a ClickHouse server, never wiped) the store may hold other sites too
        self._token_sites = set(site_ids) | set(Warehouse(client).sites())
        development = _development_tokens(self.settings, sorted(self._token_sites))
        api_client = connect(self.settings)
        self._parts.clients = (api_client,)
        self._api_app = create_api(
            self.settings, api_client, tokens=development[0] if development is not None else None
        )
        try:
            self._parts.api = ApiServer(
                self._api_app, self.settings.api_host, self.settings.api_port if port is None else port
            ).start()
        except AtmpError as exc:
            raise MainJobError(f"{exc} (is the port taken? --port 0 picks a free one)") from exc
        if development is None:
            return None, None
        return development[1], _operations_token(development[0])

    # -- progress ---------------------------------------------------------------------------

    def _progress(self) -> str:
        feed, publisher, processor, projector = (
            self._parts.feed,
            self._parts.publisher,
            self._parts.processor,
            self._parts.projector,
        )
        assert feed is not None
        assert publisher is not None
        assert processor is not None
        assert projector is not None
        delivered = feed.published - publisher.pending()
        line = (
            f"day {feed.simulated_day():5.2f}/{self.options.days:g}  published {feed.published:,}  "
            f"delivered {delivered:,}  processed {processor.records_processed:,}"
        )
        last = projector.last
        if last is None:
            return line + "  views: not yet"
        now = time.monotonic()
        if self._views_seen is None or self._views_seen[0] != last.generation:
            self._views_seen = (last.generation, now)
        facts = last.views.facts
        as_of = (
            (facts.as_of - feed.simulation.start).total_seconds() / 86400 if facts.as_of is not None else 0.0
        )
        open_deviations = sum(1 for t in last.views.triage if t.status is not DeviationStatus.CLOSED)
        derived = projector.publisher
        failing = f"  derived publishing failing ({derived.failing}x)" if derived and derived.failing else ""
        return (
            f"{line}  views gen {last.generation} as of day {as_of:.2f} ({facts.events:,} events, "
            f"{last.seconds:.1f}s refresh, seen {now - self._views_seen[1]:.0f}s ago)  "
            f"deviations open {open_deviations}{failing}"
        )

    def _caught_up(self) -> bool:
        feed, publisher, projector = self._parts.feed, self._parts.publisher, self._parts.projector
        assert feed is not None
        assert publisher is not None
        assert projector is not None
        last = projector.last
        processor = self._parts.processor
        return (
            feed.finished
            and publisher.pending() == 0
            and processor is not None
            # this run's own records (with --keep the store may hold the same events already);
            # the hook marked the views stale before the count moved, so idle means refreshed
            and processor.records_processed >= feed.published
            and last is not None
            and last.views.facts.events >= feed.published
            and projector.wait_idle(0)
        )

    def _watch(self) -> None:
        """Print progress until a signal, a fault, or (``until_done``) everything is in the views."""
        o = self.options
        feed = self._parts.feed
        assert feed is not None
        next_line = time.monotonic()
        announced = False
        last_state: tuple[int, int] | None = None
        last_change = time.monotonic()
        while not self.stop.wait(0.25):
            if feed.error is not None:
                self.failed = f"publishing failed: {feed.error}"
                break
            processor = self._parts.processor
            if processor is not None and processor._thread is not None and not processor._thread.is_alive():
                self.failed = f"the processor stopped: {processor._error}"
                break
            now = time.monotonic()
            if now >= next_line:
                next_line = now + o.progress_every_s
                self.say(self._progress())
                self._tokens_for_new_sites()
            if feed.finished and not announced and self._caught_up():
                announced = True
                self.say(self._progress())
                self.say(f"done: every event published, processed and in the views ({feed.published:,})")
                self._write_truth()
                if not o.until_done:
                    self.say("the simulation has ended; the dashboard stays up until Ctrl-C")
                else:
                    self.stop.wait(o.linger_s)
                    break
            state = (feed.published, processor.records_processed if processor else 0)
            if state != last_state:
                last_state, last_change = state, now
            elif o.until_done and now - last_change > o.done_timeout_s:
                self.failed = f"nothing advanced for {o.done_timeout_s:.0f}s"
                break
        if self.failed:
            self.say(f"atmpnet up: {self.failed}")

    def _tokens_for_new_sites(self) -> None:
        """Give a site that appeared in the store since start (e.g. mirrored in) development tokens."""
        projector, app = self._parts.projector, self._api_app
        if self.settings.api_tokens or projector is None or projector.last is None or app is None:
            return
        new = _stored_sites(projector.last.views) - self._token_sites
        if not new:
            return
        from atmpnet.api.auth import TokenBook

        self._token_sites |= new
        development = _development_tokens(self.settings, sorted(self._token_sites))
        if development is not None:
            app.state.tokens = TokenBook(development[0])  # read per request: effective at once
            sites = ", ".join(sorted(new))
            self.say(f"new site{'s' if len(new) > 1 else ''} {sites}: development tokens in {development[1]}")

    def _write_truth(self) -> None:
        feed = self._parts.feed
        assert feed is not None
        path = run_dir(self.settings) / "truth.json"
        feed.simulation.ground_truth.write(path)
        self.say(f"ground truth of this run: {path}")

    # -- stop -------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop publishing, flush the outbox, let the processor write what it took, stop the API."""
        p = self._parts
        self.stop.set()
        if self._signal_name is not None:
            self.say(f"\n{self._signal_name}: stopping (publishing, outbox, processor, API, broker)")
        if p.feed is not None:
            p.feed.join(30)
        if p.publisher is not None:
            left = p.publisher.flush(30)
            if left:
                self.say(
                    f"{left} events not acknowledged; they stay in the outbox ({run_dir(self.settings)})"
                )
            p.publisher.close(timeout=0)
        if p.processor is not None and p.feed is not None and p.publisher is not None:
            deadline = time.monotonic() + self.options.drain_s
            while p.processor.records_processed < p.feed.published and time.monotonic() < deadline:
                time.sleep(0.1)  # what the broker holds is lost with it (memory storage)
            behind = p.feed.published - p.processor.records_processed
            if behind > 0 and self._embedded_broker:
                # the outbox counts them delivered, and the embedded broker keeps nothing: say so
                self.say(
                    f"warning: {behind:,} delivered events were not processed within "
                    f"{self.options.drain_s:.0f}s and are lost with the embedded broker's memory "
                    "(the views stop before them); --until-done waits for every event"
                )
            try:
                p.processor.stop()
            except AtmpError as exc:
                self.failed = self.failed or str(exc)
                self.say(f"processor: {exc}")
        if p.projector is not None:
            p.projector.wait_idle(10)
            p.projector.stop()
            p.projector.publisher = None  # its producer goes before the broker does
        if p.api is not None:
            p.api.stop()
        for client in p.clients:
            with contextlib.suppress(Exception):
                client.close()
        # drop the Kafka clients before the broker stops, or they log its disappearance; the
        # processor froze the start-up heap (gc.freeze), so unfreeze it for cycles to be collected
        self._parts = _Parts()
        del p
        gc.unfreeze()
        gc.collect()
