"""Every event type: model -> bytes -> broker -> bytes -> model, every field equal."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Event
from atmpnet.contract.examples import example_events
from atmpnet.sample import round_trip
from atmpnet.settings import Settings


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


def test_the_main_job_runs_on_the_embedded_stack(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ATMPNET_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "atmpnet", "up"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(" equal") == 5
    assert "embedded broker at 127.0.0.1:" in result.stdout
    assert "DIFFERENT" not in result.stdout
