"""The network simulator: determinism, validity, sequences, and truth against the emitted events.

The truth is computed by the simulator from its plan; these tests recompute it from the emitted
events with an independent reading of the contract's definitions.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from atmpnet.contract.events import (
    BatchStep,
    Deviation,
    DeviationTransition,
    Event,
    ModuleConfiguration,
    ProcessStep,
    ProducerKind,
    SensorSummary,
    StepTransition,
    ValidatedBaseline,
)
from atmpnet.contract.jsonl import event_from_line, event_to_line
from atmpnet.errors import ConfigurationError, SimulationError
from atmpnet.site.simulator import (
    DEVIATION_CLASSES,
    SEVERITIES,
    GroundTruth,
    NetworkConfig,
    Simulation,
    SiteProfile,
)

SHORT = NetworkConfig(sites=3, days=24, seed=7, sensor_window_minutes=120)


def run(config: NetworkConfig) -> tuple[list[Event], GroundTruth]:
    sim = Simulation(config)
    events = list(sim.events())
    return events, sim.ground_truth


@pytest.fixture(scope="module")
def short_run() -> tuple[list[Event], GroundTruth]:
    return run(SHORT)


# --- determinism and validity ------------------------------------------------------------


def test_same_seed_gives_identical_events_and_truth(short_run: tuple[list[Event], GroundTruth]) -> None:
    events, truth = short_run
    again, truth_again = run(SHORT)
    assert [event_to_line(e) for e in again] == [event_to_line(e) for e in events]
    assert truth_again == truth


def test_another_seed_gives_other_events() -> None:
    config = NetworkConfig(sites=1, days=3, seed=1, sensor_window_minutes=60)
    a, truth_a = run(config)
    b, truth_b = run(NetworkConfig(sites=1, days=3, seed=2, sensor_window_minutes=60))
    assert [e.envelope.event_id for e in a] != [e.envelope.event_id for e in b]
    assert [(type(e), e.envelope.occurred_at) for e in a] != [(type(e), e.envelope.occurred_at) for e in b]
    assert truth_a != truth_b


def test_every_event_is_valid_and_round_trips_through_json(
    short_run: tuple[list[Event], GroundTruth],
) -> None:
    events, _ = short_run
    from atmpnet.site.simulation.runner import event_line

    # every fact, and every third sensor summary (they come from one code path)
    sample = [e for i, e in enumerate(events) if not isinstance(e, SensorSummary) or i % 3 == 0]
    for event in sample:
        validated = type(event).model_validate(event.model_dump())  # raises on any invalid field
        assert validated == event
        line = event_line(event)
        assert event_from_line(line) == event
        assert json.loads(line) == json.loads(event_to_line(event))


def test_one_minute_windows_are_valid_and_cover_busy_lanes() -> None:
    events, _ = run(NetworkConfig(sites=1, days=2, seed=4, sensor_window_minutes=1))
    sensors = [e for e in events if isinstance(e, SensorSummary)]
    assert len(sensors) > 5000
    for e in sensors[::7]:
        assert SensorSummary.model_validate(e.model_dump()) == e
        assert e.window_end - e.window_start == timedelta(minutes=1)
        assert 1 <= e.count <= 6  # 6 samples of 10 s; fewer in a batch's first and last window
    assert sum(e.count == 6 for e in sensors) > 0.95 * len(sensors)
    lanes_busy = {(e.envelope.module_id, e.envelope.lane) for e in events if isinstance(e, BatchStep)}
    assert {(e.envelope.module_id, e.envelope.lane) for e in sensors} == lanes_busy


def test_publication_order_ids_and_small_delays(short_run: tuple[list[Event], GroundTruth]) -> None:
    events, truth = short_run
    published = [e.envelope.published_at for e in events]
    assert published == sorted(published)
    assert len({e.envelope.event_id for e in events}) == len(events)
    for e in events:
        delay = e.envelope.published_at - e.envelope.occurred_at
        assert timedelta(0) <= delay <= timedelta(seconds=3)
        assert truth.start <= e.envelope.occurred_at < truth.end


def test_sequences_are_gap_free_per_stream(short_run: tuple[list[Event], GroundTruth]) -> None:
    events, _ = short_run
    by_stream: dict[str, list[int]] = defaultdict(list)
    for e in events:
        by_stream[e.envelope.module_id or e.envelope.producer.id].append(e.envelope.sequence)
    assert "network-quality" in by_stream
    for stream, sequences in by_stream.items():
        assert sequences == list(range(1, len(sequences) + 1)), stream


def test_baselines_come_from_network_quality_effective_at_start(
    short_run: tuple[list[Event], GroundTruth],
) -> None:
    events, truth = short_run
    baselines = [e for e in events if isinstance(e, ValidatedBaseline)]
    types = {e.module_type for e in events if isinstance(e, ModuleConfiguration)}
    initial = {b.module_type for b in baselines if b.effective_from == truth.start}
    assert initial == types
    for b in baselines:
        assert b.envelope.site_id is None
        assert b.envelope.producer.kind is ProducerKind.NETWORK_QUALITY


def test_truth_needs_the_events_emitted_first() -> None:
    with pytest.raises(SimulationError):
        _ = Simulation(NetworkConfig(sites=1, days=1)).ground_truth


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        NetworkConfig(days=0)
    with pytest.raises(ConfigurationError):
        SiteProfile("site-x", failure_rate=1.5)
    with pytest.raises(ConfigurationError):
        SiteProfile("site-x", modules=(("no-such-type", 1),))


# --- the truth against the events, by the contract's definitions -------------------------

_PREFIXES = {"PRC-": "PROCESS_EXCURSION", "EQP-": "EQUIPMENT", "ENV-": "ENVIRONMENTAL"}
_PREFIXES |= {"DAT-": "DATA_INTEGRITY", "SNS-": "SENSOR_FAULT"}
_CRITICAL = {ProcessStep.TRANSDUCTION, ProcessStep.EXPANSION, ProcessStep.FORMULATION}
_CRITICAL |= {ProcessStep.CRYOPRESERVATION}


def _triage(events: list[Event]) -> dict[str, tuple[str, str, str]]:
    """deviation_id -> (site, class, severity), from RAISED and CLOSED events only."""
    raised = [e for e in events if isinstance(e, Deviation) and e.transition is DeviationTransition.RAISED]
    closed_at = {
        e.deviation_id: e.envelope.occurred_at
        for e in events
        if isinstance(e, Deviation) and e.transition is DeviationTransition.CLOSED
    }
    raised.sort(key=lambda e: (e.envelope.occurred_at, e.deviation_id))
    out = {}
    for i, d in enumerate(raised):
        key = (d.envelope.module_id, d.envelope.lane, d.parameter, d.alarm_code)
        t = d.envelope.occurred_at
        duplicate = any(
            (o.envelope.module_id, o.envelope.lane, o.parameter, o.alarm_code) == key
            and (o.deviation_id not in closed_at or closed_at[o.deviation_id] > t)
            for o in raised[:i]
        )
        code = d.alarm_code or ""
        klass = next((c for p, c in _PREFIXES.items() if code.startswith(p)), None)
        klass = klass or ("PROCESS_EXCURSION" if d.parameter else "EQUIPMENT")
        if duplicate:
            klass, severity = "DUPLICATE", "MINOR"
        elif klass == "PROCESS_EXCURSION":
            sustained = d.duration_seconds is not None and d.duration_seconds >= 1800
            severity = ("CRITICAL" if d.step in _CRITICAL else "MAJOR") if sustained else "MINOR"
        elif klass == "EQUIPMENT":
            severity = "MAJOR" if d.envelope.batch_id else "MINOR"
        else:
            severity = "MINOR" if klass == "SENSOR_FAULT" else "MAJOR"
        assert d.envelope.site_id is not None
        out[d.deviation_id] = (d.envelope.site_id, klass, severity)
    return out


def _drift(events: list[Event]) -> dict[str, list[tuple[datetime, datetime | None]]]:
    configs: dict[str, list[ModuleConfiguration]] = defaultdict(list)
    baselines: dict[str, list[ValidatedBaseline]] = defaultdict(list)
    for e in events:
        if isinstance(e, ModuleConfiguration):
            configs[str(e.envelope.module_id)].append(e)
        elif isinstance(e, ValidatedBaseline):
            baselines[e.module_type].append(e)
    out = {}
    for module, mine in configs.items():
        theirs = baselines[mine[0].module_type]
        instants = sorted({c.envelope.occurred_at for c in mine} | {b.effective_from for b in theirs})
        intervals: list[tuple[datetime, datetime | None]] = []
        opened = None
        for t in instants:
            config = max(
                (c for c in mine if c.envelope.occurred_at <= t), key=lambda c: c.envelope.occurred_at
            )
            current = [b for b in theirs if b.effective_from <= t]
            drifted = False
            if current:
                baseline = max(current, key=lambda b: b.effective_from)
                running = {c.name: (c.version, c.content_hash) for c in config.components}
                approved = {c.name: (c.version, c.content_hash) for c in baseline.components}
                drifted = running != approved
            if drifted and opened is None:
                opened = t
            elif not drifted and opened is not None:
                intervals.append((opened, t))
                opened = None
        if opened is not None:
            intervals.append((opened, None))
        out[module] = intervals
    return out


def test_truth_equals_the_contract_definitions_on_the_events(
    short_run: tuple[list[Event], GroundTruth],
) -> None:
    events, truth = short_run
    steps = [e for e in events if isinstance(e, BatchStep)]
    started: Counter[str] = Counter()
    completed: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    busy_from: dict[str, datetime] = {}
    busy: dict[str, float] = defaultdict(float)
    lane_of: dict[str, tuple[str, str]] = {}
    for e in steps:
        env = e.envelope
        site, batch = str(env.site_id), str(env.batch_id)
        lane_of[batch] = (site, f"{env.module_id}/{env.lane}")
        if e.step is ProcessStep.APHERESIS_RECEIPT and e.transition is StepTransition.STARTED:
            started[site] += 1
            busy_from[batch] = env.occurred_at
        if e.step is ProcessStep.QC_RELEASE and e.transition is StepTransition.COMPLETED:
            completed[site] += 1
        ends_badly = e.transition in (StepTransition.FAILED, StepTransition.ABORTED)
        if ends_badly:
            failed[site] += 1
        leaves_lane = e.step is ProcessStep.CRYOPRESERVATION and e.transition is not StepTransition.STARTED
        if batch in busy_from and (leaves_lane or (ends_badly and e.step is not ProcessStep.QC_RELEASE)):
            busy[site] += (env.occurred_at - busy_from.pop(batch)).total_seconds()
    for batch, since in busy_from.items():  # still on the lane at the end
        busy[lane_of[batch][0]] += (truth.end - since).total_seconds()

    triage = _triage(events)
    drift = _drift(events)
    for site, t in truth.sites.items():
        assert t.batches_started == started[site] > 0
        assert t.batches_completed == completed[site] > 0
        assert t.batches_failed == failed[site]
        assert t.batches_in_progress == started[site] - completed[site] - failed[site]
        assert t.lane_busy_hours == pytest.approx(busy[site] / 3600, abs=1e-6)
        assert t.lane_busy_hours == pytest.approx(sum(t.lane_busy_hours_by_lane.values()))
        classes = Counter(k for s, k, _ in triage.values() if s == site)
        severities = Counter(v for s, _, v in triage.values() if s == site)
        assert t.deviations_by_class == {k: classes[k] for k in DEVIATION_CLASSES}
        assert t.deviations_by_severity == {k: severities[k] for k in SEVERITIES}
        for module in t.modules:
            assert [(i.opened_at, i.closed_at) for i in t.drift_intervals[module]] == drift[module]
    counts = Counter(type(e).__name__ for e in events)
    assert truth.event_counts == {name: counts[name] for name in truth.event_counts}
    assert truth.total_events == len(events)


def test_truth_file_round_trips(short_run: tuple[list[Event], GroundTruth], tmp_path: Path) -> None:
    _, truth = short_run
    truth.write(tmp_path / "truth.json")
    assert GroundTruth.read(tmp_path / "truth.json") == truth


# --- the process and its deviations --------------------------------------------------------


def test_a_lane_runs_one_batch_at_a_time_for_7_to_14_days(short_run: tuple[list[Event], GroundTruth]) -> None:
    events, _ = short_run
    spans: dict[str, list[datetime]] = defaultdict(list)
    lanes: dict[str, str] = {}
    for e in events:
        if isinstance(e, BatchStep) and e.step is not ProcessStep.QC_RELEASE:
            spans[str(e.envelope.batch_id)].append(e.envelope.occurred_at)
            lanes[str(e.envelope.batch_id)] = f"{e.envelope.module_id}/{e.envelope.lane}"
    by_lane: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for batch, times in spans.items():
        by_lane[lanes[batch]].append((min(times), max(times)))
    for intervals in by_lane.values():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert end <= start
    releases = {
        str(e.envelope.batch_id): e.envelope.occurred_at
        for e in events
        if isinstance(e, BatchStep)
        and e.step is ProcessStep.QC_RELEASE
        and e.transition is StepTransition.STARTED
    }
    on_module = [releases[b] - min(spans[b]) for b in releases]
    assert on_module
    assert all(timedelta(days=7) <= d <= timedelta(days=14) for d in on_module)


def test_excursions_show_in_the_sensor_windows(short_run: tuple[list[Event], GroundTruth]) -> None:
    events, _ = short_run
    windows: dict[tuple[str, int, str], list[SensorSummary]] = defaultdict(list)
    for e in events:
        if isinstance(e, SensorSummary):
            windows[(str(e.envelope.module_id), int(e.envelope.lane or 0), e.parameter)].append(e)
    explained: set[tuple[str, int, str]] = set()
    step_starts: dict[str | None, list[datetime]] = defaultdict(list)
    for e in events:
        if isinstance(e, BatchStep) and e.transition is StepTransition.STARTED:
            step_starts[e.envelope.batch_id].append(e.envelope.occurred_at)
    checked = skipped = 0
    excursions = [
        e
        for e in events
        if isinstance(e, Deviation)
        and e.transition is DeviationTransition.RAISED
        and (e.alarm_code or "").startswith(("PRC-", "SNS-"))
        and e.envelope.lane is not None
    ]
    assert excursions
    for d in excursions:
        assert d.parameter is not None
        key = (str(d.envelope.module_id), int(d.envelope.lane or 0), d.parameter)
        explained.add(key)
        if not d.alarm_code or not d.alarm_code.startswith("PRC-") or d.duration_seconds is None:
            continue
        began = d.envelope.occurred_at - timedelta(seconds=d.duration_seconds + 90)
        span = timedelta(minutes=SHORT.sensor_window_minutes)
        if any(began - span < t < d.envelope.occurred_at + span for t in step_starts[d.envelope.batch_id]):
            skipped += 1  # a window across a step change reports the earlier step's parameters
            continue
        checked += 1
        hit = [w for w in windows[key] if w.window_end > began and w.window_start < d.envelope.occurred_at]
        assert hit, d.deviation_id
        if d.duration_seconds >= 1800:
            assert any(w.samples_outside_action > 0 for w in hit), d.deviation_id
        assert any(w.samples_outside_alert > 0 for w in hit), d.deviation_id
    assert checked > 3 * skipped
    for key, ws in windows.items():
        if key not in explained:
            assert all(w.samples_outside_alert == 0 for w in ws), key


def test_data_gaps_really_miss_sensor_windows(short_run: tuple[list[Event], GroundTruth]) -> None:
    events, _ = short_run
    windows: dict[tuple[str | None, int | None], list[SensorSummary]] = defaultdict(list)
    for e in events:
        if isinstance(e, SensorSummary):
            windows[(e.envelope.module_id, e.envelope.lane)].append(e)
    checked = 0
    for gap in events:
        if not (isinstance(gap, Deviation) and gap.transition is DeviationTransition.RAISED):
            continue
        if not (gap.alarm_code or "").startswith("DAT-") or gap.duration_seconds is None:
            continue
        # the gap ended 5 to 30 minutes before it was raised: this part of it is certain
        raised = gap.envelope.occurred_at
        surely_from = raised - timedelta(minutes=5, seconds=gap.duration_seconds)
        surely_to = raised - timedelta(minutes=30)
        if surely_from >= surely_to:
            continue
        lane = windows[(gap.envelope.module_id, gap.envelope.lane)]
        assert lane, gap.deviation_id
        assert not [w for w in lane if w.window_start < surely_to and w.window_end > surely_from], (
            gap.deviation_id
        )
        checked += 1
    assert checked


def test_every_deviation_class_and_severity_and_open_and_closed_drift() -> None:
    sim = Simulation(NetworkConfig(sites=4, days=30, seed=3, sensor_window_minutes=240))
    events = list(sim.events())
    truth = sim.ground_truth
    for klass in DEVIATION_CLASSES:
        assert sum(t.deviations_by_class[klass] for t in truth.sites.values()) > 0, klass
    for severity in SEVERITIES:
        assert sum(t.deviations_by_severity[severity] for t in truth.sites.values()) > 0, severity
    deviations = [e for e in events if isinstance(e, Deviation)]
    downtimes = [
        d
        for d in deviations
        if d.envelope.lane is None
        and d.envelope.batch_id is None
        and d.alarm_code
        and d.alarm_code.startswith("EQP-")
    ]
    assert downtimes
    closed = {d.deviation_id for d in deviations if d.transition is DeviationTransition.CLOSED}
    raised = {d.deviation_id for d in deviations if d.transition is DeviationTransition.RAISED}
    assert closed and raised - closed  # most are closed, some still open at the end
    assert all(d.resolution for d in deviations if d.transition is DeviationTransition.CLOSED)

    later_baselines = {
        b.effective_from
        for b in events
        if isinstance(b, ValidatedBaseline) and b.effective_from > truth.start
    }
    intervals = [i for t in truth.sites.values() for ms in t.drift_intervals.values() for i in ms]
    assert any(i.closed_at in later_baselines for i in intervals)  # closed by approving the rollout
    assert any(i.closed_at is None for i in intervals)  # the emergency patch, not yet approved


def test_failure_rates_follow_the_site_profiles() -> None:
    profiles = (
        SiteProfile("site-a", failure_rate=0.05, modules=(("cytoloop-4", 3),)),
        SiteProfile("site-b", failure_rate=0.30, modules=(("cytoloop-4", 3),)),
    )
    sim = Simulation(NetworkConfig(sites=profiles, days=400, seed=11, sensor_window_minutes=1440))
    for _ in sim.events():
        pass
    truth = sim.ground_truth.sites
    for profile in profiles:
        t = truth[profile.site_id]
        ended = t.batches_completed + t.batches_failed
        assert ended > 300
        assert t.batches_failed / ended == pytest.approx(profile.failure_rate, abs=0.05)


def test_default_sites_draw_failure_rates_between_4_and_7_percent() -> None:
    profiles = NetworkConfig(sites=12, seed=5).site_profiles()
    assert [p.site_id for p in profiles[:3]] == ["site-a", "site-b", "site-c"]
    assert all(0.04 <= p.failure_rate <= 0.07 for p in profiles)
    assert len({p.failure_rate for p in profiles}) > 1
