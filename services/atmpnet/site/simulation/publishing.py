"""``atmpnet simulate``: run a simulation into JSON lines and/or the SitePublisher, write the truth."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Event
from atmpnet.errors import ConfigurationError, SimulationError
from atmpnet.settings import Settings
from atmpnet.site.simulation.network import IntegrityFaults, NetworkConfig
from atmpnet.site.simulation.runner import JsonLinesSink, Progress, RunSummary, run_simulation


def simulate_to(
    settings: Settings,
    *,
    sites: int = 4,
    days: float = 30.0,
    seed: int = 1,
    sensor_window_minutes: int = 1,
    out: Path | None = None,
    truth: Path | None = None,
    bootstrap_servers: str | None = None,
    codec: AvroCodec | None = None,
    say: Callable[[str], None] = print,
    progress_every_s: float = 5.0,
    flush_timeout_s: float = 120.0,
    topic_suffix: str = "",
    integrity_faults: bool = False,
) -> RunSummary:
    """Simulate, write events to ``out`` (JSON lines) and publish them when ``bootstrap_servers`` is given.

    Publishing goes through one network-level SitePublisher (site_id None) that keeps the
    simulator's own sequence numbers; its outbox lives under ``data_dir/simulate``; topics are
    the contract's, with ``topic_suffix`` appended (staging or test topics). ``integrity_faults``
    injects the default ``IntegrityFaults`` (one of each kind per site; off by default).
    """
    config = NetworkConfig(
        sites=sites,
        days=days,
        seed=seed,
        sensor_window_minutes=sensor_window_minutes,
        integrity_faults=IntegrityFaults() if integrity_faults else None,
    )
    with ExitStack() as resources:
        sinks: list[Callable[[list[Event]], object]] = []
        if out is not None:
            sinks.append(resources.enter_context(JsonLinesSink(out)))
        publisher = None
        if bootstrap_servers is not None:
            from atmpnet.site.publisher import SitePublisher
            from atmpnet.transport import INPUT_TOPICS, ensure_topics

            if codec is None:
                raise ConfigurationError("publishing needs a codec")
            outbox = settings.data_dir / "simulate" / f"outbox-seed{seed}.sqlite"
            outbox.parent.mkdir(parents=True, exist_ok=True)
            ensure_topics(settings, bootstrap_servers, [t + topic_suffix for t in INPUT_TOPICS])
            publisher = resources.enter_context(
                SitePublisher(
                    settings,
                    bootstrap_servers=bootstrap_servers,
                    outbox_path=outbox,
                    codec=codec,
                    site_id=None,
                    assign_sequences=False,
                    when_full="block",
                    block_timeout_s=300.0,
                    topic_of=lambda t: t.TOPIC + topic_suffix,
                )
            )
            sinks.append(publisher.publish_many)
        if not sinks and truth is None:
            raise ConfigurationError("nothing to do: give --out, --truth and/or --publish")

        def sink(events: list[Event]) -> None:
            for s in sinks:
                s(events)

        def report(p: Progress) -> None:
            say(p.line())

        summary = run_simulation(config, sink=sink, progress=report, progress_every_s=progress_every_s)
        if publisher is not None:
            left = publisher.flush(flush_timeout_s)
            if left:
                raise SimulationError(f"{left} events not acknowledged after {flush_timeout_s:.0f}s")
    if truth is not None:
        summary.truth.write(truth)
    return summary
