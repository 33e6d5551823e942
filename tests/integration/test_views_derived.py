"""Derived streams: every triage and drift change once, with ids that a replay reproduces."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import (
    ConfigDrift,
    Deviation,
    DeviationClass,
    DeviationStatus,
    DeviationTransition,
    DeviationTriage,
    DriftChange,
    Event,
)
from atmpnet.settings import Settings
from atmpnet.streams.derived import BackgroundProjector, DerivedPublisher, derived_events
from atmpnet.transport import ensure_topics, producer_config
from atmpnet.warehouse.connection import connect
from atmpnet.warehouse.migrations import apply_migrations
from atmpnet.warehouse.views import rebuild_views
from clickhouse_connect.driver.client import Client
from confluent_kafka import KafkaError
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.integration.test_ground_truth import consume_all
from tests.integration.test_views import simulate, store

pytestmark = pytest.mark.integration


def _stored_run(
    clickhouse: Client, settings: Settings, kafka_bootstrap: str, codec: AvroCodec
) -> tuple[tuple[Event, ...], dict[type[Event], str], DerivedPublisher]:
    """A simulated run stored (migrations applied); fresh derived topics and a publisher to them."""
    apply_migrations(clickhouse)
    events, _ = simulate(2, 8, 240)
    store(clickhouse, events)
    suffix = uuid.uuid4().hex[:8]
    topics: dict[type[Event], str] = {t: f"{t.TOPIC}.test-{suffix}" for t in (DeviationTriage, ConfigDrift)}
    ensure_topics(settings, kafka_bootstrap, list(topics.values()))
    return events, topics, DerivedPublisher(producer_config(settings, kafka_bootstrap), codec, topics)


def test_derived_events_are_published_once_and_replays_reuse_their_ids(
    clickhouse: Client, settings: Settings, kafka_bootstrap: str, codec: AvroCodec
) -> None:
    _, topics, publisher = _stored_run(clickhouse, settings, kafka_bootstrap, codec)
    views = rebuild_views(clickhouse).views

    expected = derived_events(views)
    triage = [e for e in expected if isinstance(e, DeviationTriage)]
    drift = [e for e in expected if isinstance(e, ConfigDrift)]
    assert {e.status for e in triage} == set(DeviationStatus)
    opened = [e for e in drift if e.change is DriftChange.OPENED]
    assert opened
    assert all(e.components for e in opened)
    # one first triage per deviation, ids stable across computations
    assert len({e.deviation_id for e in triage if e.status is DeviationStatus.OPEN}) == len(
        {r[0] for r in views.rows["deviation_triage"]}
    )
    assert [e.envelope.event_id for e in derived_events(views)] == [e.envelope.event_id for e in expected]

    assert publisher.publish(clickhouse, views) == len(expected)
    assert publisher.publish(clickhouse, views) == 0  # recorded: nothing produced again
    assert (
        DerivedPublisher(producer_config(settings, kafka_bootstrap), codec, topics).publish(clickhouse, views)
        == 0
    )  # a restarted publisher reads what was recorded
    # a crash after producing and before recording (a new process): the same ids are produced again
    clickhouse.command("TRUNCATE TABLE derived_published")
    restarted = DerivedPublisher(producer_config(settings, kafka_bootstrap), codec, topics)
    assert restarted.publish(clickhouse, views) == len(expected)

    seen = consume_all(settings, kafka_bootstrap, list(topics.values()), codec)
    assert len(seen) == 2 * len(expected)
    assert {e.envelope.event_id for e in seen} == {e.envelope.event_id for e in expected}
    first = {e.envelope.event_id: e for e in expected}
    for e in seen:
        assert e.model_dump(exclude={"envelope"}) == first[e.envelope.event_id].model_dump(
            exclude={"envelope"}
        )


def test_rebuild_command(tmp_path: Path) -> None:
    # its own embedded ClickHouse: chDB allows one process per data directory
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATMPNET_")} | {
        "ATMPNET_DATA_DIR": str(tmp_path)
    }
    for generation in (1, 2):
        done = subprocess.run(
            [sys.executable, "-m", "atmpnet", "rebuild"],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert f"rebuilt generation {generation}: 0 view rows from 0 events" in done.stdout


def _triage_ids(events: list[Event]) -> dict[Any, DeviationTriage]:
    return {e.envelope.event_id: e for e in events if isinstance(e, DeviationTriage)}


def test_a_changed_triage_is_published_again_and_an_unchanged_one_is_not(
    clickhouse: Client, settings: Settings, kafka_bootstrap: str, codec: AvroCodec
) -> None:
    events, topics, publisher = _stored_run(clickhouse, settings, kafka_bootstrap, codec)
    before = rebuild_views(clickhouse).views
    publisher.publish(clickhouse, before)

    # a RAISED arrives late, a minute before a deviation that was no duplicate, on the same
    # module, lane, parameter and alarm code: that one (and maybe later ones) are re-triaged
    target = next(t for t in before.triage if t.deviation_class is not DeviationClass.DUPLICATE)
    raised = next(
        e
        for e in events
        if isinstance(e, Deviation)
        and e.deviation_id == target.deviation_id
        and e.transition is DeviationTransition.RAISED
    )
    late_id = f"{target.deviation_id}-late"
    late = raised.model_copy(update={"deviation_id": late_id}).with_envelope(
        event_id=uuid.uuid4(), occurred_at=raised.envelope.occurred_at - timedelta(minutes=1)
    )
    store(clickhouse, [late])
    after = rebuild_views(clickhouse).views

    def content(views: Any) -> dict[str, tuple[Any, ...]]:
        return {
            t.deviation_id: (t.deviation_class, t.severity, t.priority, t.duplicate_of) for t in views.triage
        }

    old, new = content(before), content(after)
    changed = {d for d in old if old[d] != new[d]}
    assert target.deviation_id in changed
    assert new[target.deviation_id][0] is DeviationClass.DUPLICATE
    assert new[target.deviation_id][3] == late_id

    first, second = _triage_ids(derived_events(before)), _triage_ids(derived_events(after))
    assert _triage_ids(derived_events(after)).keys() == second.keys()  # a recomputation reuses the ids
    fresh = second.keys() - first.keys()
    # new ids for every status event of the re-triaged deviations and the late one, and only those
    assert {second[i].deviation_id for i in fresh} == changed | {late_id}
    assert {(e.deviation_id, e.status) for e in second.values() if e.deviation_id in changed} == {
        (second[i].deviation_id, second[i].status) for i in fresh if second[i].deviation_id in changed
    }
    assert publisher.publish(clickhouse, after) >= len(fresh)
    seen = _triage_ids(consume_all(settings, kafka_bootstrap, [topics[DeviationTriage]], codec))
    assert fresh <= seen.keys()
    assert all(
        seen[i].deviation_class is DeviationClass.DUPLICATE and seen[i].duplicate_of == late_id
        for i in fresh
        if seen[i].deviation_id == target.deviation_id
    )


class _BrokerDown:
    """A producer stand-in whose every message fails delivery, as with a broker refusing them."""

    def __init__(self) -> None:
        self.reports: list[Callable[..., None]] = []

    def produce(self, *_args: Any, on_delivery: Callable[..., None], **_kwargs: Any) -> None:
        self.reports.append(on_delivery)

    def poll(self, _timeout: float) -> int:
        reports, self.reports = self.reports, []
        for report in reports:
            report(KafkaError(KafkaError._TRANSPORT), None)
        return len(reports)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return 0

    def purge(self, **_kwargs: Any) -> None:
        self.reports.clear()


def _failures(reader: InMemoryMetricReader) -> float:
    data = reader.get_metrics_data()
    total = 0.0
    for r in data.resource_metrics if data else ():
        for sm in r.scope_metrics:
            for m in sm.metrics:
                if m.name == "atmpnet.derived.publish_failures":
                    points: Any = m.data.data_points
                    total += sum(float(p.value) for p in points)
    return total


def test_background_projector_refreshes_through_a_publication_failure_and_sends_the_rest_once(
    clickhouse: Client,
    clickhouse_settings: Settings,
    settings: Settings,
    kafka_bootstrap: str,
    codec: AvroCodec,
    metric_reader: InMemoryMetricReader,
) -> None:
    _, topics, publisher = _stored_run(clickhouse, settings, kafka_bootstrap, codec)
    working, publisher._producer = publisher._producer, _BrokerDown()  # type: ignore[assignment]
    failures_before = _failures(metric_reader)
    own = connect(clickhouse_settings, clickhouse.database)
    projector = BackgroundProjector(own, publisher, min_interval_s=0.05, retry_s=0.1).start()
    try:
        assert not projector.wait_idle(3)  # refreshed, but not published: not idle
        assert projector.last is not None  # the refresh stands
        assert projector.pending
        assert publisher.failures >= 2  # retried from the views, without a write
        assert _failures(metric_reader) >= failures_before + 2
        assert clickhouse.query("SELECT count() FROM derived_published").result_rows[0][0] == 0

        publisher._producer = working  # the broker takes them again
        assert projector.wait_idle(30)
        assert not projector.pending
        expected = {e.envelope.event_id for e in derived_events(projector.last.views)}
        assert expected
        seen = consume_all(settings, kafka_bootstrap, list(topics.values()), codec)
        assert sorted(str(e.envelope.event_id) for e in seen) == sorted(str(i) for i in expected)
    finally:
        projector.stop()
        projector.publisher = None
        own.close()
