"""Derived streams: every triage and drift change once, with ids that a replay reproduces."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import ConfigDrift, DeviationStatus, DeviationTriage, DriftChange, Event
from atmpnet.settings import Settings
from atmpnet.streams.derived import DerivedPublisher, derived_events
from atmpnet.transport import ensure_topics, producer_config
from atmpnet.warehouse.migrations import apply_migrations
from atmpnet.warehouse.views import rebuild_views
from clickhouse_connect.driver.client import Client

from tests.integration.test_ground_truth import consume_all
from tests.integration.test_views import simulate, store

pytestmark = pytest.mark.integration


def test_derived_events_are_published_once_and_replays_reuse_their_ids(
    clickhouse: Client, settings: Settings, kafka_bootstrap: str, codec: AvroCodec
) -> None:
    apply_migrations(clickhouse)
    events, _ = simulate(2, 8, 240)
    store(clickhouse, events)
    views = rebuild_views(clickhouse).views
    suffix = uuid.uuid4().hex[:8]
    topics: dict[type[Event], str] = {t: f"{t.TOPIC}.test-{suffix}" for t in (DeviationTriage, ConfigDrift)}
    ensure_topics(settings, kafka_bootstrap, list(topics.values()))
    publisher = DerivedPublisher(producer_config(settings, kafka_bootstrap), codec, topics)

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
    # a crash after producing and before recording: the same ids are produced again
    clickhouse.command("TRUNCATE TABLE derived_published")
    assert publisher.publish(clickhouse, views) == len(expected)

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
