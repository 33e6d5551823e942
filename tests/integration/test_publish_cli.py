"""`atmpnet publish` and `atmpnet gateway add-key` against the session broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from atmpnet.cli import app
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import BatchStep, Event
from atmpnet.contract.examples import example_events
from atmpnet.contract.jsonl import event_to_line
from atmpnet.sample import read_back
from atmpnet.settings import Settings, get_settings
from atmpnet.site.site_keys import SiteKeyStore
from typer.testing import CliRunner

pytestmark = pytest.mark.integration


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[CliRunner]:
    """A CLI runner whose settings are this test's (data_dir, the session broker)."""
    monkeypatch.setenv("ATMPNET_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ATMPNET_KAFKA_BOOTSTRAP_SERVERS", str(settings.kafka_bootstrap_servers))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def suffix_of(topics: dict[type[Event], str]) -> str:
    return topics[BatchStep].removeprefix(BatchStep.TOPIC)


def fresh_events() -> list[Event]:
    return [e.with_envelope(event_id=uuid.uuid4()) for e in example_events()]


def test_good_lines_are_published_and_each_bad_line_is_reported_by_number(
    runner: CliRunner,
    tmp_path: Path,
    settings: Settings,
    kafka_bootstrap: str,
    codec: AvroCodec,
    topics: dict[type[Event], str],
) -> None:
    events = fresh_events()
    bad_step = json.loads(event_to_line(events[0].with_envelope(event_id=uuid.uuid4())))
    bad_step["event"]["step"] = "WASHING"
    bad_step["event"]["results"]["viability_percent"] = 140
    lines = [
        event_to_line(events[0]),
        "{oops",
        event_to_line(events[1]),
        "",  # blank lines are skipped
        json.dumps(bad_step),
        *(event_to_line(e) for e in events[2:]),
        "[" * 100_000,  # nested too deep for the parser: a bad line, not a crash
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["publish", str(path), "--topic-suffix", suffix_of(topics)])
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith(f"published {len(events)}, rejected 3 ")
    errors = result.stderr.splitlines()
    assert errors[0].startswith("line 2: not JSON")
    assert errors[1].startswith("line 5: invalid BatchStep: ")
    assert "event.step: Input should be 'APHERESIS_RECEIPT'," in errors[1]  # every failing field
    assert "; event.results.viability_percent: Input should be less than or equal to 100" in errors[1]
    assert errors[2].startswith(f"line {len(lines)}: not JSON")

    got = read_back(settings, kafka_bootstrap, codec, sorted(set(topics.values())), len(events), timeout_s=20)
    # files carry their sequences: published as they are, unless --assign-sequences
    assert {d.event.envelope.event_id: d.event for d in got} == {e.envelope.event_id: e for e in events}


def test_stdin_with_assigned_sequences_and_progress(
    runner: CliRunner,
    settings: Settings,
    kafka_bootstrap: str,
    codec: AvroCodec,
    topics: dict[type[Event], str],
) -> None:
    step = example_events()[0]
    steps = [step.with_envelope(event_id=uuid.uuid4()) for _ in range(2500)]
    lines = []
    for e in steps:
        obj = json.loads(event_to_line(e))
        del obj["event"]["envelope"]["sequence"]  # the publisher stamps it
        lines.append(json.dumps(obj))
    result = runner.invoke(
        app,
        ["publish", "-", "--assign-sequences", "--topic-suffix", suffix_of(topics), "--progress-s", "0"],
        input="\n".join(lines),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("published 2500, rejected 0 ")
    assert "... line 1000: published 1000, rejected 0" in result.stderr
    got = read_back(settings, kafka_bootstrap, codec, [topics[BatchStep]], len(steps), timeout_s=20)
    assert sorted(d.event.envelope.sequence for d in got) == list(range(1, 2501))


def test_without_a_broker_publish_fails_with_a_clear_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATMPNET_")}
    env["ATMPNET_DATA_DIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "atmpnet", "publish", "-"],
        input="",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "ATMPNET_KAFKA_BOOTSTRAP_SERVERS" in proc.stderr and "--bootstrap" in proc.stderr


def test_add_key_prints_the_key_once_and_stores_only_its_hash(runner: CliRunner, settings: Settings) -> None:
    result = runner.invoke(app, ["gateway", "add-key", "--site", "site-a", "--label", "MES"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    store = SiteKeyStore.from_settings(settings)
    principal = store.authenticate(key)
    assert principal is not None and principal.site_id == "site-a"
    assert key not in store.path.read_text() and key.split("_", 2)[2] not in store.path.read_text()
    listed = runner.invoke(app, ["gateway", "list-keys"])
    assert principal.key_id in listed.stdout and "site-a" in listed.stdout and key not in listed.stdout
    assert runner.invoke(app, ["gateway", "revoke-key", principal.key_id]).exit_code == 0
    assert store.authenticate(key) is None
    assert runner.invoke(app, ["gateway", "revoke-key", principal.key_id]).exit_code == 1
