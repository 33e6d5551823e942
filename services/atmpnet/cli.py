"""The ``atmpnet`` command."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import typer

from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.docs import render_event_catalog
from atmpnet.contract.examples import example_events
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
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def up() -> None:
    """Run the network on the configured stack (embedded by default).

    For now: start the stack, publish one event of every type, read each back and print it.
    """
    from atmpnet.embedded import Stack
    from atmpnet.sample import round_trip

    settings = get_settings()
    catalog = _catalog()
    codec = _codec(catalog)
    started = time.monotonic()
    with Stack(settings) as stack:
        where = "embedded broker" if stack.broker else "external Kafka"
        typer.echo(f"Kafka: {where} at {stack.bootstrap_servers}")
        ch = stack.clickhouse()
        version = ch.query("SELECT version()").result_rows[0][0]
        typer.echo(
            f"ClickHouse {version}: {settings.clickhouse_url or 'embedded chDB in ' + str(settings.data_dir)}"
        )
        events = example_events()
        delivered = round_trip(settings, stack.bootstrap_servers, codec, events)
        typer.echo(f"\nPublished {len(events)} events and read them back:")
        for sent, got in zip(events, delivered, strict=True):
            status = "equal" if got.event == sent else "DIFFERENT"
            typer.echo(
                f"  {got.topic:<26} p{got.partition} @{got.offset:<3} key={got.key:<20} "
                f"{got.size:>4} B  {type(got.event).__name__:<20} {status}"
            )
            typer.echo(f"      {got.event.model_dump_json(exclude={'envelope'})[:150]}")
        if any(got.event != sent for sent, got in zip(events, delivered, strict=True)):
            raise typer.Exit(1)
    typer.echo(f"\nDone in {time.monotonic() - started:.1f}s; the embedded stack is stopped.")


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


# --- site commands (publish, simulate, gateway): see atmpnet.site ---


# --- stream and warehouse commands (process, rebuild, migrate): see atmpnet.streams, atmpnet.warehouse ---


# --- api commands (serve): see atmpnet.api ---


def main() -> None:
    """Entry point that turns AtmpError into a one-line message and exit code 2."""
    try:
        app()
    except AtmpError as exc:
        typer.echo(f"atmpnet: {exc}", err=True)
        sys.exit(2)
