"""The ``atmpnet`` command."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import typer

from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.docs import render_event_catalog
from atmpnet.contract.registry import RegistrySource
from atmpnet.errors import AtmpError
from atmpnet.settings import get_settings

app = typer.Typer(
    help="atmpnet: cross-site views for advanced-therapy manufacturing networks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
schemas_app = typer.Typer(help="The event contract in schemas/.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")

log = logging.getLogger("atmpnet")


def _catalog() -> SchemaCatalog:
    return SchemaCatalog.load(get_settings().schema_dir)


def _codec(catalog: SchemaCatalog) -> AvroCodec:
    settings = get_settings()
    if settings.schema_registry_url:
        auth = settings.schema_registry_auth.get_secret_value() if settings.schema_registry_auth else None
        return AvroCodec(catalog, RegistrySource(catalog, settings.schema_registry_url, basic_auth=auth))
    return AvroCodec(catalog)


@app.callback()
def _main(
    ctx: typer.Context, verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail.")
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from atmpnet.telemetry import configure_from_settings

    # one service name per command, so a trace shows which process did what
    configure_from_settings(get_settings(), f"atmpnet-{ctx.invoked_subcommand or 'cli'}")


@app.command()
def up(
    sites: int = typer.Option(4, min=1, help="Simulated sites (site-a, site-b, ...)."),
    days: float = typer.Option(30.0, min=0.1, help="Simulated days."),
    seed: int = typer.Option(1, help="Seed of the simulated network (same seed, same events)."),
    speed: float = typer.Option(
        4.0, min=0.01, help="Simulated hours per real second after the warm-up (4: a month in 3 minutes)."
    ),
    warmup_days: float = typer.Option(
        3.0, "--warmup-days", min=0.0, help="Simulated days published at full speed first (history at once)."
    ),
    sensor_window: int = typer.Option(
        60, "--sensor-window", min=1, help="Sensor summary window in minutes (bounds the broker's memory)."
    ),
    port: int | None = typer.Option(
        None, help="API and dashboard port (default: api_port setting; 0: free)."
    ),
    until_done: bool = typer.Option(
        False, "--until-done", help="Exit once the simulation has ended and everything is in the views."
    ),
    linger: float = typer.Option(
        0.0, min=0.0, help="With --until-done: keep serving the dashboard this many seconds after the end."
    ),
    keep: bool = typer.Option(
        False, "--keep", help="Keep the embedded store of an earlier run (default: start a new network)."
    ),
    engine: str = typer.Option("faust", help="Processor engine: faust or batch (confluent-kafka loop)."),
    progress_s: float = typer.Option(5.0, help="Seconds between progress lines."),
) -> None:
    """Run the whole network on the configured stack (embedded by default), live, until Ctrl-C.

    Starts the broker and ClickHouse engine, the processors, the API and dashboard, and a simulated
    network publishing through the SitePublisher at SPEED simulated hours per second; prints the
    dashboard URL and a progress line every few seconds. Ctrl-C (or SIGTERM) stops it cleanly.
    """
    from atmpnet.mainjob import MainJob, MainJobOptions

    if engine not in ("faust", "batch"):
        raise AtmpError(f"unknown engine {engine!r}: faust or batch")
    options = MainJobOptions(
        sites=sites,
        days=days,
        seed=seed,
        speed=speed,
        warmup_days=warmup_days,
        sensor_window_minutes=sensor_window,
        port=port,
        until_done=until_done,
        linger_s=linger,
        keep=keep,
        progress_every_s=progress_s,
        engine="batch" if engine == "batch" else "faust",
    )
    job = MainJob(get_settings(), _codec(_catalog()), options, say=typer.echo)
    code = job.run()
    # every part was stopped in order; a library thread still retrying the stopped broker (the
    # faust consumer's) or an executor task stuck on it must not keep the process alive
    from atmpnet import telemetry

    telemetry.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@app.command()
def broker(port: int = typer.Option(0, help="Port on 127.0.0.1; 0 picks a free one.")) -> None:
    """Run the embedded Kafka broker in the foreground until Ctrl-C."""
    from atmpnet.embedded import EmbeddedBroker

    settings = get_settings()
    with EmbeddedBroker(settings.data_dir / "logs" / "broker.log", port=port or None) as b:
        typer.echo(f"embedded broker at {b.bootstrap_servers} (log {b.log_path}); Ctrl-C stops it")
        try:
            while b.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@schemas_app.command("check")
def schemas_check() -> None:
    """Fail if a released schema was altered or a version cannot read an earlier one."""
    catalog = _catalog()
    problems = catalog.problems()
    for p in problems:
        typer.echo(f"FAIL {p}", err=True)
    if problems:
        raise typer.Exit(1)
    count = sum(len(catalog.versions(s)) for s in catalog.subjects())
    typer.echo(f"ok: {len(catalog.subjects())} subjects, {count} versions, all backward compatible")


@schemas_app.command("docs")
def schemas_docs(
    output: Path = typer.Option(Path("docs/event-catalog.md"), help="Where to write the catalog."),
    check: bool = typer.Option(False, help="Only check that the file is up to date."),
) -> None:
    """Write docs/event-catalog.md from the schemas (or check it is current)."""
    text = render_event_catalog(_catalog())
    if check:
        if not output.exists() or output.read_text() != text:
            typer.echo(f"{output} is out of date: run `atmpnet schemas docs`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{output} is up to date")
        return
    output.write_text(text)
    typer.echo(f"wrote {output}")


@schemas_app.command("register")
def schemas_register(
    url: str | None = typer.Option(None, help="Registry URL; default ATMPNET_SCHEMA_REGISTRY_URL."),
    global_mode: bool = typer.Option(False, help="Switch the global mode to IMPORT, not each subject's."),
    dry_run: bool = typer.Option(False, help="Only check for conflicts and say what would be imported."),
) -> None:
    """Import the catalog into a Schema Registry under the catalog's ids (IMPORT mode); re-runs are no-ops."""
    from atmpnet.contract.registration import SchemaRegistrar, registry_client

    settings = get_settings()
    target = url or settings.schema_registry_url
    if not target:
        typer.echo("no registry: pass --url or set ATMPNET_SCHEMA_REGISTRY_URL", err=True)
        raise typer.Exit(2)
    auth = settings.schema_registry_auth.get_secret_value() if settings.schema_registry_auth else None
    registrar = SchemaRegistrar(_catalog(), registry_client(target, auth), global_mode=global_mode)
    entries = registrar.plan() if dry_run else registrar.register().registrations
    for r in entries:
        verb = r.action.value if not dry_run or r.action.value == "present" else "to import"
        typer.echo(f"{r.subject} v{r.version} id {r.schema_id}: {verb}")
    typer.echo(
        f"ok: {len(entries)} versions {'checked' if dry_run else 'registered and verified'} at {target}"
    )


# --- site commands (publish, simulate, gateway): see atmpnet.site ---

gateway_app = typer.Typer(help="The HTTP ingest gateway for site systems not written in Python.")
app.add_typer(gateway_app, name="gateway", no_args_is_help=True)


def _bootstrap(option: str | None) -> str:
    servers = option or get_settings().kafka_bootstrap_servers
    if not servers:
        from atmpnet.errors import ConfigurationError

        raise ConfigurationError(
            "no Kafka broker configured: set ATMPNET_KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap "
            "(`atmpnet broker` runs an embedded one)"
        )
    return servers


@app.command("publish")
def publish_command(
    source: str = typer.Argument("-", help="A file of JSON lines, or - for standard input."),
    bootstrap: str | None = typer.Option(None, help="Kafka bootstrap.servers (default: the setting)."),
    assign_sequences: bool = typer.Option(
        False, help="Stamp per-module sequences (lines may omit sequence/published_at); else keep the file's."
    ),
    outbox: Path | None = typer.Option(None, help="Outbox file (default: data_dir/publish/outbox.sqlite)."),
    topic_suffix: str = typer.Option("", help="Appended to every topic name (staging or test topics)."),
    flush_timeout: float = typer.Option(60.0, help="Seconds to wait for the broker's acknowledgements."),
    progress_s: float = typer.Option(5.0, help="Seconds between progress lines on stderr."),
) -> None:
    """Publish events from JSON lines; report each bad line by number and reason, publish the good ones.

    Exit code 1 when any line was rejected or an event is still undelivered at the end.
    """
    import json

    from atmpnet.contract.events import Event
    from atmpnet.errors import EventValidationError
    from atmpnet.site.gateway import parse_json_event
    from atmpnet.site.publisher import SitePublisher
    from atmpnet.transport import INPUT_TOPICS, ensure_topics

    settings = get_settings()
    servers = _bootstrap(bootstrap)
    outbox_path = outbox or settings.data_dir / "publish" / "outbox.sqlite"
    outbox_path.parent.mkdir(parents=True, exist_ok=True)
    ensure_topics(settings, servers, [t + topic_suffix for t in INPUT_TOPICS])
    publisher = SitePublisher(
        settings,
        bootstrap_servers=servers,
        outbox_path=outbox_path,
        codec=_codec(_catalog()),
        assign_sequences=assign_sequences,
        when_full="block",  # backpressure: wait for the broker rather than fail
        topic_of=lambda t: t.TOPIC + topic_suffix,
    )
    started = last_progress = time.monotonic()
    published = rejected = number = 0
    chunk: list[Event] = []
    try:
        with sys.stdin if source == "-" else Path(source).open(encoding="utf-8") as stream:
            for number, line in enumerate(stream, 1):
                if line.strip():
                    try:
                        chunk.append(parse_json_event(json.loads(line), fill_stamped=assign_sequences))
                    except (ValueError, RecursionError) as exc:  # JSON errors only (not EventValidationError)
                        rejected += 1
                        typer.echo(f"line {number}: not JSON: {exc}", err=True)
                    except EventValidationError as exc:
                        rejected += 1
                        reasons = "; ".join(str(e) for e in exc.errors)
                        typer.echo(f"line {number}: invalid {exc.event_type}: {reasons}", err=True)
                if len(chunk) >= 1000:
                    published += len(publisher.publish_many(chunk))
                    chunk.clear()
                if number % 1000 == 0 and time.monotonic() - last_progress >= progress_s:
                    last_progress = time.monotonic()
                    rate = number / max(last_progress - started, 1e-9)
                    progress = f"published {published}, rejected {rejected} ({rate:,.0f} lines/s)"
                    typer.echo(f"... line {number}: {progress}", err=True)
        if chunk:
            published += len(publisher.publish_many(chunk))
        undelivered = publisher.flush(flush_timeout)
    finally:
        publisher.close(timeout=0)  # already flushed; what is left stays in the outbox
    summary = (
        f"published {published}, rejected {rejected} ({number} lines in {time.monotonic() - started:.1f}s)"
    )
    if undelivered:
        summary += f"; {undelivered} not yet acknowledged, kept in {outbox_path} for the next run"
    typer.echo(summary)
    if rejected or undelivered:
        raise typer.Exit(1)


@gateway_app.command("add-key")
def gateway_add_key(
    site: str | None = typer.Option(None, help="The site the key publishes as, e.g. site-boston."),
    network: bool = typer.Option(False, help="A network-quality key (validated baselines) instead."),
    label: str | None = typer.Option(None, help="What the key is for, e.g. 'MES line 2'."),
) -> None:
    """Create an API key and print it once (only its salted hash is stored)."""
    from atmpnet.errors import ConfigurationError
    from atmpnet.site.site_keys import KeyRole, SiteKeyStore

    if network == (site is not None):
        raise ConfigurationError("give either --site SITE or --network")
    store = SiteKeyStore.from_settings(get_settings())
    key = store.add(site_id=site, role=KeyRole.NETWORK if network else KeyRole.SITE, label=label)
    typer.echo(key)
    typer.echo(
        f"key for {site or 'network quality'} stored hashed in {store.path}; it is not shown again", err=True
    )


@gateway_app.command("list-keys")
def gateway_list_keys() -> None:
    """List the keys (ids, roles, sites; never secrets)."""
    from atmpnet.site.site_keys import SiteKeyStore

    for r in SiteKeyStore.from_settings(get_settings()).records():
        state = f"revoked {r.revoked_at}" if r.revoked_at else "active"
        typer.echo(
            f"{r.key_id}  {r.role:<8} {r.site_id or '-':<24} {state:<10} {r.created_at}  {r.label or ''}"
        )


@gateway_app.command("revoke-key")
def gateway_revoke_key(
    key_id: str = typer.Argument(..., help="The key id (second part of the key)."),
) -> None:
    """Revoke a key; the running gateway refuses it from the next request on."""
    from atmpnet.site.site_keys import SiteKeyStore

    if not SiteKeyStore.from_settings(get_settings()).revoke(key_id):
        typer.echo(f"no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@gateway_app.command("serve")
def gateway_serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port; 0 picks a free one."),
    bootstrap: str | None = typer.Option(None, help="Kafka bootstrap.servers (default: the setting)."),
) -> None:
    """Run the ingest gateway (uvicorn) until Ctrl-C; events go to per-site outboxes under data_dir."""
    import socket

    import uvicorn

    from atmpnet.site.gateway import create_gateway, outbox_publishers
    from atmpnet.site.site_keys import SiteKeyStore
    from atmpnet.transport import INPUT_TOPICS, TransportError, ensure_topics

    settings = get_settings()
    servers = _bootstrap(bootstrap)
    try:
        ensure_topics(settings, servers, list(INPUT_TOPICS))
    except TransportError as exc:  # the outboxes hold events until the broker is back
        log.warning("topics not checked: %s", exc)
    keys = SiteKeyStore.from_settings(settings)
    gateway = create_gateway(
        settings,
        keys=keys,
        publisher_for_site=outbox_publishers(settings, bootstrap_servers=servers, codec=_codec(_catalog())),
    )
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    typer.echo(f"ingest gateway at http://{host}:{sock.getsockname()[1]} (keys {keys.path}); Ctrl-C stops it")
    uvicorn.Server(uvicorn.Config(gateway, log_level="info")).run(sockets=[sock])


@app.command("simulate")
def simulate_command(
    sites: int = typer.Option(4, min=1, help="Number of sites (site-a, site-b, ...)."),
    days: float = typer.Option(30.0, min=0.01, help="Simulated days."),
    seed: int = typer.Option(1, help="Seed: the same seed gives the same events and truth."),
    sensor_window: int = typer.Option(1, "--sensor-window", min=1, help="Sensor summary window (minutes)."),
    out: Path | None = typer.Option(None, help="Write the events here as JSON lines."),
    truth: Path | None = typer.Option(None, help="Write the ground truth here (JSON)."),
    publish: bool = typer.Option(False, help="Publish through SitePublisher (embedded broker if none set)."),
    bootstrap: str | None = typer.Option(None, help="Kafka bootstrap.servers for --publish."),
    topic_suffix: str = typer.Option("", help="Appended to every topic name when publishing."),
    progress_s: float = typer.Option(5.0, help="Seconds between progress lines on stderr."),
    integrity_faults: bool = typer.Option(
        False, help="Inject integrity faults, one of each kind per site (docs/simulator.md)."
    ),
) -> None:
    """Simulate a network of sites; write JSON lines and/or publish, and write the ground truth."""
    from contextlib import ExitStack

    from atmpnet.site.simulation.publishing import simulate_to

    settings = get_settings()
    with ExitStack() as resources:
        servers = bootstrap or settings.kafka_bootstrap_servers
        if publish and servers is None:
            from atmpnet.embedded import Stack

            servers = resources.enter_context(Stack(settings)).bootstrap_servers
            typer.echo(f"publishing to an embedded broker at {servers} (stopped at the end)", err=True)
        summary = simulate_to(
            settings,
            sites=sites,
            days=days,
            seed=seed,
            sensor_window_minutes=sensor_window,
            out=out,
            truth=truth,
            bootstrap_servers=servers if publish else None,
            codec=_codec(_catalog()) if publish else None,
            say=lambda text: typer.echo(text, err=True),
            progress_every_s=progress_s,
            topic_suffix=topic_suffix,
            integrity_faults=integrity_faults,
        )
    counts = ", ".join(f"{n} {name}" for name, n in summary.truth.event_counts.items())
    typer.echo(f"{summary.events:,} events in {summary.elapsed_s:.1f}s ({summary.rate:,.0f}/s): {counts}")


# --- stream and warehouse commands (process, rebuild, migrate): see atmpnet.streams, atmpnet.warehouse ---


@app.command()
def migrate() -> None:
    """Apply the ClickHouse migrations not applied yet (idempotent)."""
    from atmpnet.warehouse.connection import connect
    from atmpnet.warehouse.migrations import apply_migrations

    client = connect(get_settings())
    applied = apply_migrations(client)
    for m in applied:
        typer.echo(f"applied {m.path.name}")
    typer.echo(f"ok: {len(applied)} applied, database {client.database} is up to date")


@app.command()
def process(
    bootstrap: str = typer.Option(
        "", help="Kafka bootstrap.servers (default: ATMPNET_KAFKA_BOOTSTRAP_SERVERS)."
    ),
    group_id: str = typer.Option("atmpnet-processor", help="Consumer group (faust app id)."),
    batch_max: int = typer.Option(20_000, help="Most records per write."),
    batch_within: float = typer.Option(0.25, help="Longest wait (s) to fill a batch."),
    exit_when_idle: float = typer.Option(
        0.0, help="Stop after this many idle seconds (0: run until Ctrl-C)."
    ),
    topic_suffix: str = typer.Option("", help="Read <topic><suffix> (isolated test and benchmark runs)."),
    dead_letter_topic: str = typer.Option("atmp.dead-letter.v1", help="Where rejected records go."),
    engine: str = typer.Option("faust", help="faust (the faust agent) or batch (confluent-kafka loop)."),
    views: bool = typer.Option(True, help="Refresh the views and publish derived streams after each write."),
    topic_refresh: float = typer.Option(
        30.0, help="Seconds between looks for new mirrored topics (<site>.atmp.<family>.v1)."
    ),
) -> None:
    """Run the ingest processor: input topics -> event store and dead letters, until stopped."""
    from atmpnet.contract.events import EVENT_TYPES
    from atmpnet.streams.app import ProcessorConfig, create_processor
    from atmpnet.streams.ingest import TopicRouter
    from atmpnet.warehouse.connection import connect

    settings = get_settings()
    servers = bootstrap or settings.kafka_bootstrap_servers
    if not servers:
        raise AtmpError("process needs a broker: pass --bootstrap or set ATMPNET_KAFKA_BOOTSTRAP_SERVERS")
    config = ProcessorConfig(
        servers,
        settings.data_dir,
        group_id=group_id,
        batch_max=batch_max,
        batch_within_s=batch_within,
        exit_when_idle_s=exit_when_idle or None,
        engine="batch" if engine == "batch" else "faust",
        topic_refresh_s=topic_refresh,
    )
    if engine not in ("faust", "batch"):
        raise AtmpError(f"unknown engine {engine!r}: faust or batch")
    router = TopicRouter({t: t.TOPIC + topic_suffix for t in EVENT_TYPES})
    processor = create_processor(
        settings,
        servers,
        connect(settings),
        _codec(_catalog()),
        config=config,
        router=router,
        dead_letter_topic=dead_letter_topic,
    )
    if views:
        from atmpnet.contract.events import DERIVED_EVENT_TYPES
        from atmpnet.streams.derived import DerivedPublisher, ViewProjector
        from atmpnet.transport import ensure_topics, producer_config

        derived = {t: t.TOPIC + topic_suffix for t in DERIVED_EVENT_TYPES}
        ensure_topics(settings, servers, list(derived.values()))
        # integrity findings are raised as deviations on the (suffixed) input topic, ingested like any
        derived.update(router.topics)
        publisher = DerivedPublisher(producer_config(settings, servers), processor.core.codec, derived)
        processor.add_after_write(ViewProjector(publisher))
    typer.echo(f"processing {', '.join(processor.topics)} from {servers}", err=True)
    processor.run()
    typer.echo(f"stopped: {processor.records_processed} records in {processor.batches} batches", err=True)


@app.command()
def rebuild(
    publish: bool = typer.Option(
        False, help="Also publish derived events (triage, drift) not yet published (needs a broker)."
    ),
) -> None:
    """Recompute every view from the event store; the result equals the live views (docs/views.md)."""
    from atmpnet.warehouse.connection import connect
    from atmpnet.warehouse.migrations import apply_migrations
    from atmpnet.warehouse.views import rebuild_views

    settings = get_settings()
    client = connect(settings)
    apply_migrations(client)
    result = rebuild_views(client)
    facts = result.views.facts
    typer.echo(
        f"rebuilt generation {result.generation}: {result.rows} view rows from {facts.events} events "
        f"(as of {facts.as_of}) in {result.seconds:.2f}s"
    )
    if publish:
        from atmpnet.streams.derived import DerivedPublisher
        from atmpnet.transport import producer_config

        servers = _bootstrap(None)
        count = DerivedPublisher(producer_config(settings, servers), _codec(_catalog())).publish(
            client, result.views
        )
        typer.echo(f"published {count} derived events not published before")


@app.command()
def verify() -> None:
    """Re-check every module's hash chain and sequence numbers in the event store (exit 1 on a finding)."""
    from atmpnet.warehouse.connection import connect
    from atmpnet.warehouse.migrations import apply_migrations
    from atmpnet.warehouse.verify import verify_store

    client = connect(get_settings())
    apply_migrations(client)
    report = verify_store(client)
    for f in report.findings:
        typer.echo(f"{f.kind}: {f.message}; events {' '.join(f.evidence)}")
    typer.echo(
        f"verified {report.events} events in {report.streams} streams: "
        f"{len(report.breaks)} chain breaks, {len(report.gaps)} sequence gaps"
    )
    if report.findings:
        raise typer.Exit(1)


warehouse_app = typer.Typer(help="ClickHouse warehouse tooling.", no_args_is_help=True)
app.add_typer(warehouse_app, name="warehouse")


@warehouse_app.command("render-cluster")
def warehouse_render_cluster(
    output: Path | None = typer.Option(None, help="Write the SQL here instead of stdout."),
    database: str | None = typer.Option(None, help="Database (default: ATMPNET_CLICKHOUSE_DATABASE)."),
    cluster: str = typer.Option("{cluster}", help="Cluster name, or the {cluster} macro of each node."),
) -> None:
    """Print the migrations as cluster DDL: ReplicatedMergeTree shards behind Distributed tables."""
    from atmpnet.warehouse.cluster import render_cluster

    sql = render_cluster(database or get_settings().clickhouse_database, cluster=cluster)
    if output is None:
        typer.echo(sql, nl=False)
    else:
        output.write_text(sql)
        typer.echo(f"wrote {output}", err=True)


# --- api commands (serve): see atmpnet.api ---


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default: settings api_host)."),
    port: int | None = typer.Option(None, help="Port (default: settings api_port; 0 picks a free one)."),
) -> None:
    """Serve the query API and dashboard on the configured ClickHouse until Ctrl-C.

    In embedded mode this process opens the chDB data directory, so no other process may hold it.
    """
    from atmpnet.api.app import start_api
    from atmpnet.warehouse.connection import connect
    from atmpnet.warehouse.migrations import apply_migrations

    settings = get_settings()
    client = connect(settings)
    apply_migrations(client)
    server, token_file = start_api(settings, client, host=host, port=port)
    typer.echo(f"dashboard: {server.url}/overview   API docs: {server.url}/docs")
    if token_file is not None:
        typer.echo(f"development API tokens (one per role and site) are in {token_file}")
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        client.close()


def main() -> None:
    """Entry point that turns AtmpError into a one-line message and exit code 2."""
    try:
        app()
    except AtmpError as exc:
        typer.echo(f"atmpnet: {exc}", err=True)
        sys.exit(2)
