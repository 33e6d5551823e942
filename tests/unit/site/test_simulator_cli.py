"""`atmpnet simulate`: JSON lines and truth files, and publishing through the SitePublisher."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from atmpnet.cli import app
from atmpnet.contract.chain import ChainLink, payload_hash, verify_chain
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.jsonl import event_from_line
from atmpnet.sample import read_back
from atmpnet.settings import Settings
from atmpnet.site.simulation.publishing import simulate_to
from atmpnet.site.simulator import GroundTruth, IntegrityFaults, NetworkConfig, Simulation
from atmpnet.transport import INPUT_TOPICS
from typer.testing import CliRunner


def test_simulate_writes_json_lines_and_the_truth(tmp_path: Path) -> None:
    out, truth_path = tmp_path / "events.jsonl", tmp_path / "truth.json"
    args = ["simulate", "--sites", "2", "--days", "3", "--seed", "5", "--sensor-window", "30"]
    result = CliRunner().invoke(
        app, [*args, "--out", str(out), "--truth", str(truth_path), "--progress-s", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "events in" in result.output and "day" in result.output  # summary and progress lines

    events = [event_from_line(line) for line in out.read_text().splitlines()]
    sim = Simulation(NetworkConfig(sites=2, days=3, seed=5, sensor_window_minutes=30))
    assert events == list(sim.events())
    truth = GroundTruth.read(truth_path)
    assert truth == sim.ground_truth
    assert truth.total_events == len(events)
    assert sum(truth.event_counts.values()) == len(events)


def test_simulate_can_inject_integrity_faults_into_the_truth(tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.json"
    args = ["simulate", "--sites", "1", "--days", "12", "--seed", "3", "--sensor-window", "120"]
    result = CliRunner().invoke(app, [*args, "--truth", str(truth_path), "--integrity-faults"])
    assert result.exit_code == 0, result.output
    truth = GroundTruth.read(truth_path)
    sim = Simulation(
        NetworkConfig(sites=1, days=12, seed=3, sensor_window_minutes=120, integrity_faults=IntegrityFaults())
    )
    for _ in sim.events():
        pass
    assert truth == sim.ground_truth
    assert {f.kind for f in truth.integrity["site-a"]} >= {"DROPPED_EVENTS", "LANE_OVERLAP"}


def test_simulate_needs_something_to_do() -> None:
    result = CliRunner().invoke(app, ["simulate", "--days", "1"])
    assert result.exit_code != 0


@pytest.mark.integration
def test_simulate_publishes_every_event_through_the_publisher(
    settings: Settings, kafka_bootstrap: str, codec: AvroCodec
) -> None:
    suffix = f".sim-{uuid.uuid4().hex[:8]}"
    summary = simulate_to(
        settings,
        sites=1,
        days=2,
        seed=9,
        sensor_window_minutes=60,
        bootstrap_servers=kafka_bootstrap,
        codec=codec,
        say=lambda _: None,
        topic_suffix=suffix,
    )
    delivered = read_back(
        settings, kafka_bootstrap, codec, [t + suffix for t in INPUT_TOPICS], summary.events
    )
    by_id = Counter(d.event.envelope.event_id for d in delivered)
    assert len(by_id) == summary.events  # none lost
    sent = {
        e.envelope.event_id: e
        for e in Simulation(NetworkConfig(sites=1, days=2, seed=9, sensor_window_minutes=60)).events()
    }
    assert {d.event.envelope.event_id: d.event for d in delivered} == sent  # sequences kept as simulated
    # so is the simulator's hash chain: each stream verifies on what arrived
    streams: dict[str, list[ChainLink]] = defaultdict(list)
    for d in delivered:
        env = d.event.envelope
        link = ChainLink(env.sequence, env.previous_hash, payload_hash(codec.encode(d.event)))
        streams[env.module_id or env.producer.id].append(link)
    assert all(verify_chain(links) == [] for links in streams.values())
    assert sum(link.previous_hash is not None for links in streams.values() for link in links) == (
        summary.events - len(streams)
    )


def test_same_seed_same_bytes_across_processes(tmp_path: Path) -> None:
    """Nothing depends on hash randomization or the process: two interpreters write the same file."""
    import hashlib
    import os
    import subprocess
    import sys

    digests = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"events-{hash_seed}.jsonl"
        env = os.environ | {"PYTHONHASHSEED": hash_seed}
        args = ["simulate", "--sites", "2", "--days", "2", "--sensor-window", "60", "--out", str(out)]
        subprocess.run([sys.executable, "-m", "atmpnet", *args], check=True, env=env, capture_output=True)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
