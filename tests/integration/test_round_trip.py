"""Every event type: model -> bytes -> broker -> bytes -> model, every field equal."""

from __future__ import annotations

import signal
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Event
from atmpnet.contract.examples import example_events
from atmpnet.sample import round_trip
from atmpnet.settings import Settings

from tests.integration.up_process import UpProcess, batch_counts, get_json, ground_truth


def test_every_event_type_round_trips_through_the_broker(
    settings: Settings, kafka_bootstrap: str, codec: AvroCodec, topics: dict[type[Event], str]
) -> None:
    events = example_events()
    delivered = round_trip(settings, kafka_bootstrap, codec, events, topics)
    assert len(delivered) == len(events)
    for sent, got in zip(events, delivered, strict=True):
        assert got.topic == topics[type(sent)]
        assert got.key == sent.partition_key()
        assert got.event == sent
        assert got.event.model_dump() == sent.model_dump()


def test_one_key_lands_on_one_partition_in_order(
    settings: Settings, kafka_bootstrap: str, codec: AvroCodec, topics: dict[type[Event], str]
) -> None:
    base = example_events()[0]
    steps = [base.with_envelope(sequence=n, event_id=uuid.uuid4()) for n in range(1, 41)]
    delivered = round_trip(settings, kafka_bootstrap, codec, steps, topics)
    assert len({d.partition for d in delivered}) == 1
    offsets = [d.offset for d in delivered]
    assert offsets == sorted(offsets)
    assert [d.event.envelope.sequence for d in delivered] == list(range(1, 41))


@pytest.mark.integration
def test_the_main_job_runs_on_the_embedded_stack(tmp_path: Path) -> None:
    """`up --until-done`: the URL answers, the API agrees with the simulator's truth, SIGTERM exits 0."""
    sites, days, seed = 2, 3, 7
    up = UpProcess(
        tmp_path,
        *("--sites", str(sites), "--days", str(days), "--seed", str(seed), "--warmup-days", "1"),
        *("--speed", "24", "--until-done", "--linger", "60", "--port", "0", "--progress-s", "1"),
    )
    try:
        url = up.url()
        assert "embedded broker at 127.0.0.1:" in up.output
        with urllib.request.urlopen(f"{url}/login", timeout=10) as page:
            assert page.status == 200
        up.wait_for("day ", 30)  # progress lines while the network runs
        up.wait_for("done:", 90)
        truth, simulated = ground_truth(sites, days, seed)

        capacity = get_json(f"{url}/api/v1/capacity?days=90", up.token("operations"))
        expected = {
            s.site_id: (s.batches_started, s.batches_completed, s.batches_failed)
            for s in truth.sites.values()
        }
        assert batch_counts(capacity) == expected
        assert sum(expected[s][0] for s in expected) > 0
        in_progress = {s["site_id"]: s["in_progress"] for s in capacity["sites"]}
        assert in_progress == {s.site_id: s.batches_in_progress for s in truth.sites.values()}

        page_ = get_json(f"{url}/api/v1/deviations?limit=1000", up.token("quality"))
        assert page_["next_cursor"] is None
        items = [d for d in page_["items"] if d["deviation_id"] in simulated]
        assert len(items) == len(simulated) > 0
        by_severity = Counter((d["site_id"], d["severity"]) for d in items)
        by_class = Counter((d["site_id"], d["class"]) for d in items)
        for s in truth.sites.values():
            for severity, n in s.deviations_by_severity.items():
                assert by_severity[s.site_id, severity] == n, (s.site_id, severity)
            for klass, n in s.deviations_by_class.items():
                assert by_class[s.site_id, klass] == n, (s.site_id, klass)

        assert up.stop(signal.SIGTERM) == 0, up.output
        assert "SIGTERM: stopping" in up.output
        assert "stopped after" in up.output
        assert "Traceback" not in up.output
    finally:
        up.kill()
