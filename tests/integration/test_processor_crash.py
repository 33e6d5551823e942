"""SIGKILL the processor in the middle of a run, start it again: nothing lost, nothing twice.

Both runs refresh the views after every write (as ``atmpnet process`` does by default), so the
kill can land between a write and its refresh or inside one; after the restart the store holds
every event once and the views (live, and rebuilt from the store) equal the simulator's ground
truth.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Event
from atmpnet.settings import Settings
from atmpnet.transport import producer_config
from atmpnet.warehouse.connection import connect
from atmpnet.warehouse.event_store import count_events, event_ids
from atmpnet.warehouse.views import read_views, rebuild_views
from confluent_kafka import Producer

from tests.integration.ground_truth_checks import assert_views_match_truth
from tests.integration.support import publish
from tests.integration.test_views import simulate

pytestmark = pytest.mark.integration


class ProcessorProcess:
    """``atmpnet process`` as a child process with its own chDB data dir; stderr kept."""

    def __init__(self, data_dir: Path, bootstrap: str, suffix: str, group: str, *extra: str) -> None:
        env = os.environ | {"ATMPNET_DATA_DIR": str(data_dir), "ATMPNET_KAFKA_BOOTSTRAP_SERVERS": bootstrap}
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "atmpnet",
                "process",
                "--group-id",
                group,
                "--topic-suffix",
                suffix,
                "--dead-letter-topic",
                f"atmp.dead-letter.v1{suffix}",
                *extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def batches_written(self) -> int:
        return sum("wrote a batch" in line for line in self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("processor did not finish:\n" + "".join(self.lines[-30:])) from None


@pytest.mark.parametrize("engine", ["faust", "batch"])
def test_sigkill_mid_run_loses_nothing_and_counts_nothing_twice(
    engine: str,
    settings: Settings,
    kafka_bootstrap: str,
    topics: dict[type[Event], str],
    codec: AvroCodec,
    tmp_path: Path,
) -> None:
    window_minutes = 240
    events, truth = simulate(2, 5, window_minutes)  # ~1,650 events, every family
    suffix = next(iter(topics.values())).rsplit(".v1", 1)[1]
    producer = Producer(producer_config(settings, kafka_bootstrap))
    publish(producer, codec, topics, events)

    data_dir = tmp_path / "processor"
    group = f"crash-{uuid.uuid4().hex[:8]}"
    # small batches so the kill lands with some batches written and more to come
    batch_max = 100
    first = ProcessorProcess(
        data_dir, kafka_bootstrap, suffix, group, "--batch-max", str(batch_max), "--engine", engine
    )
    try:
        deadline = time.monotonic() + 60
        while first.batches_written() < 3:
            assert first.proc.poll() is None, "".join(first.lines[-30:])
            assert time.monotonic() < deadline, "no batch written:\n" + "".join(first.lines[-30:])
            time.sleep(0.05)
        first.proc.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    assert first.batches_written() * batch_max < len(events), "the kill came after the whole run"

    second = ProcessorProcess(
        data_dir, kafka_bootstrap, suffix, group, "--exit-when-idle", "3", "--engine", engine
    )
    try:
        assert second.wait(120) == 0, "".join(second.lines[-30:])
    finally:
        second.kill()
    client = connect(Settings(data_dir=data_dir))
    try:
        assert count_events(client) == len(events)
        ids = event_ids(client)
        assert len(ids) == len(set(ids))
        assert set(ids) == {e.envelope.event_id for e in events}
        live = read_views(client)  # as the restarted processor's last refresh left them
        assert_views_match_truth(live, truth, window_minutes)
        rebuild_views(client)
        assert read_views(client) == live
    finally:
        client.close()
