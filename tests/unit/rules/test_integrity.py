"""Integrity rules: each injected fault is found exactly once, a clean run has no finding,
and no result depends on input order or duplicates."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from atmpnet.contract.chain import payload_hash
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import BatchStep, Deviation, ProcessStep, StepTransition
from atmpnet.contract.examples import example_events
from atmpnet.rules.integrity import (
    EventFact,
    Finding,
    FindingKind,
    FindingSeverity,
    IntegrityBounds,
    all_findings,
    chain_breaks,
    clock_skew,
    completeness,
    lane_occupancy,
    late_arrivals,
    segregation,
    sequence_findings,
    unique_facts,
)
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
ON_MODULE: list[ProcessStep] = [s for s in ProcessStep if s is not ProcessStep.QC_RELEASE]
ALL_STEPS = list(ProcessStep)
STEP_RANK = {s: i for i, s in enumerate(ProcessStep)}


@dataclasses.dataclass(frozen=True)
class Row:
    batch_id: str
    module_id: str
    lane: int
    step: ProcessStep
    transition: StepTransition
    occurred_at: datetime


class Run:
    """A small simulated site: batches on lanes, sequenced and chained per module stream."""

    def __init__(self) -> None:
        self.raw: list[Row] = []

    def batch(
        self,
        batch_id: str,
        lane: int,
        start: datetime,
        *,
        module: str = "bos-m01",
        steps: list[ProcessStep] | None = None,
        hours: float = 2.0,
        fail_at: ProcessStep | None = None,
    ) -> None:
        t = start
        for step in steps if steps is not None else ALL_STEPS:
            self.step(batch_id, module, lane, step, StepTransition.STARTED, t)
            t += timedelta(hours=hours)
            end = StepTransition.FAILED if step is fail_at else StepTransition.COMPLETED
            self.step(batch_id, module, lane, step, end, t)
            if step is fail_at:
                return

    def step(
        self,
        batch_id: str,
        module: str,
        lane: int,
        step: ProcessStep,
        transition: StepTransition,
        at: datetime,
    ) -> None:
        self.raw.append(Row(batch_id, module, lane, step, transition, at))

    def facts(self) -> list[EventFact]:
        """Sequences per module in occurrence order; published 1 s and ingested 3 s later."""
        out: list[EventFact] = []
        by_module: dict[str, list[Row]] = defaultdict(list)
        for r in self.raw:
            by_module[r.module_id].append(r)
        for module, rows in sorted(by_module.items()):
            rows.sort(key=lambda r: (r.occurred_at, r.batch_id, STEP_RANK[r.step]))
            previous = None
            for seq, r in enumerate(rows, start=1):
                own = hashlib.sha256(f"{module}/{seq}/{previous}".encode()).hexdigest()
                out.append(
                    EventFact(
                        event_id=f"{module}-{seq:05d}",
                        site_id="site-boston",
                        module_id=module,
                        producer_id=f"ctl-{module}",
                        sequence=seq,
                        occurred_at=r.occurred_at,
                        published_at=r.occurred_at + timedelta(seconds=1),
                        ingested_at=r.occurred_at + timedelta(seconds=3),
                        hash=own,
                        previous_hash=previous,
                        lane=r.lane,
                        batch_id=r.batch_id,
                        step=r.step,
                        transition=r.transition,
                    )
                )
                previous = own
        return out


def clean_run() -> list[EventFact]:
    run = Run()
    # lane 1: two batches back to back, the second starting exactly when the first leaves the
    # module (its QC_RELEASE runs off-module meanwhile); lane 2: a failed batch, then another
    run.batch("B-1", 1, T0)
    run.batch("B-2", 1, T0 + timedelta(hours=16))
    run.batch("B-3", 2, T0, fail_at=ProcessStep.EXPANSION)
    run.batch("B-4", 2, T0 + timedelta(hours=10))
    run.batch("B-5", 1, T0, module="bos-m02", steps=ON_MODULE[:3])  # still in progress
    return run.facts()


def kinds(findings: list[Finding]) -> list[str]:
    return sorted(f.kind.value for f in findings)


def at_sequence(facts: list[EventFact], module: str, seq: int) -> EventFact:
    return next(f for f in facts if f.module_id == module and f.sequence == seq)


def test_a_clean_run_has_no_finding_and_full_completeness() -> None:
    facts = clean_run()
    assert all_findings(facts) == []
    assert all_findings(facts, IntegrityBounds(streams_start_at_one=True)) == []
    site = completeness(facts)["site-boston"]
    assert (site.streams, site.expected, site.received, site.on_time, site.skewed) == (
        2,
        len(facts),
        len(facts),
        len(facts),
        0,
    )
    assert site.received_share == 1.0 and site.on_time_share == 1.0


def test_from_event_reads_the_envelope_and_the_step(codec: AvroCodec) -> None:
    step, _, deviation, *_ = example_events()
    assert isinstance(step, BatchStep) and isinstance(deviation, Deviation)
    ingested = step.envelope.occurred_at + timedelta(seconds=5)
    fact = EventFact.from_event(step, hash=payload_hash(codec.encode(step)), ingested_at=ingested)
    assert fact.event_id == str(step.envelope.event_id)
    assert (fact.module_id, fact.lane, fact.batch_id, fact.sequence) == ("bos-m01", 2, "B-2026-00417", 1041)
    assert (fact.step, fact.transition, fact.performed_by) == (
        ProcessStep.EXPANSION,
        StepTransition.COMPLETED,
        "op-jsmith",
    )
    assert fact.stream == "module/bos-m01" and fact.previous_hash is None and fact.ingested_at == ingested
    assert EventFact.from_event(deviation).performed_by == "controller/alarm-engine"


def test_an_altered_event_is_one_chain_break_naming_the_sequences_around_it() -> None:
    facts = clean_run()
    victim = at_sequence(facts, "bos-m01", 7)
    altered = [dataclasses.replace(f, hash="e" * 64) if f is victim else f for f in facts]
    found = all_findings(altered)
    assert kinds(found) == ["CHAIN_BREAK"]
    (brk,) = found
    after = at_sequence(facts, "bos-m01", 8)
    assert brk.sequences == (7, 8) and brk.module_id == "bos-m01" and brk.site_id == "site-boston"
    assert brk.evidence == tuple(sorted([victim.event_id, after.event_id]))
    assert "between sequence 7 and 8" in brk.message
    assert brk.alarm_code == "DAT-CHAIN-BREAK"


def test_the_chain_head_catches_an_altered_last_event() -> None:
    facts = clean_run()
    last = max((f for f in facts if f.module_id == "bos-m02"), key=lambda f: f.sequence)
    altered = [dataclasses.replace(f, hash="e" * 64) if f is last else f for f in facts]
    assert chain_breaks(altered) == []
    (brk,) = chain_breaks(altered, heads={"module/bos-m02": str(last.hash)})
    assert brk.evidence == (last.event_id,)


def test_dropped_events_are_one_gap_and_lower_completeness() -> None:
    facts = clean_run()
    dropped = {at_sequence(facts, "bos-m01", s).event_id for s in (10, 11, 12)}
    kept = [f for f in facts if f.event_id not in dropped]
    found = all_findings(kept)
    assert kinds(found) == ["SEQUENCE_GAP"]
    (gap,) = found
    assert gap.sequences == (10, 12)
    assert gap.evidence == (
        at_sequence(facts, "bos-m01", 9).event_id,
        at_sequence(facts, "bos-m01", 13).event_id,
    )
    assert "sequence 10 to 12 missing (3 events)" in gap.message
    site = completeness(kept)["site-boston"]
    assert site.expected == len(facts) and site.received == len(facts) - 3 and site.missing == 3


def test_a_lost_head_is_a_gap_only_when_streams_start_at_one() -> None:
    facts = [f for f in clean_run() if not (f.module_id == "bos-m02" and f.sequence <= 2)]
    assert sequence_findings(facts) == []
    (gap,) = sequence_findings(facts, IntegrityBounds(streams_start_at_one=True))
    assert gap.sequences == (1, 2)
    assert completeness(facts, IntegrityBounds(streams_start_at_one=True))["site-boston"].missing == 2


def test_two_events_at_one_sequence_are_a_duplicate_sequence_not_also_a_chain_break() -> None:
    facts = clean_run()
    twin = dataclasses.replace(at_sequence(facts, "bos-m01", 5), event_id="intruder", hash="d" * 64)
    found = all_findings([*facts, twin])
    assert kinds(found) == ["DUPLICATE_SEQUENCE"]
    assert "intruder" in found[0].evidence


def test_a_skewed_clock_is_one_episode_and_small_or_negative_jitter_is_bounded() -> None:
    facts = clean_run()
    skewed = {at_sequence(facts, "bos-m01", s).event_id for s in (4, 5, 6)}
    shifted = [
        dataclasses.replace(f, published_at=f.occurred_at + timedelta(minutes=9))
        if f.event_id in skewed
        else f
        for f in facts
    ]
    (episode,) = clock_skew(shifted)
    assert episode.evidence == tuple(sorted(skewed)) and episode.sequences == (4, 6)
    assert "published up to 9.0 min after it occurred" in episode.message
    assert completeness(shifted)["site-boston"].skewed == 3

    def published(delta: timedelta) -> list[EventFact]:
        victim = at_sequence(facts, "bos-m02", 2)
        return [
            dataclasses.replace(f, published_at=f.occurred_at + delta) if f is victim else f for f in facts
        ]

    assert clock_skew(published(timedelta(minutes=4))) == []
    assert clock_skew(published(timedelta(milliseconds=-500))) == []
    (ahead,) = clock_skew(published(timedelta(seconds=-30)))
    assert "before it occurred" in ahead.message
    assert (
        clock_skew(
            published(timedelta(minutes=-30)), IntegrityBounds(negative_skew_tolerance=timedelta(hours=1))
        )
        == []
    )


def test_late_arrivals_are_one_episode_and_count_against_on_time() -> None:
    facts = clean_run()
    late = {at_sequence(facts, "bos-m02", s).event_id for s in (3, 4)}
    delayed = [
        dataclasses.replace(f, ingested_at=f.occurred_at + timedelta(hours=2)) if f.event_id in late else f
        for f in facts
    ]
    (episode,) = late_arrivals(delayed)
    assert episode.evidence == tuple(sorted(late)) and episode.module_id == "bos-m02"
    assert kinds(all_findings(delayed)) == ["LATE_ARRIVAL"]
    site = completeness(delayed)["site-boston"]
    assert site.received == len(facts) and site.on_time == len(facts) - 2
    assert late_arrivals(delayed, IntegrityBounds(lateness=timedelta(hours=3))) == []


def test_the_earliest_arrival_of_a_redelivered_event_decides_lateness() -> None:
    facts = clean_run()
    again = dataclasses.replace(facts[0], ingested_at=facts[0].occurred_at + timedelta(days=1))
    assert late_arrivals([again, *facts]) == []
    assert unique_facts([again, *facts])[0].ingested_at == facts[0].ingested_at


def test_a_batch_on_two_lanes_is_one_critical_finding_with_its_events() -> None:
    run = Run()
    run.batch("B-1", 1, T0)
    run.batch("B-2", 2, T0)
    facts = run.facts()
    # the lane mix-up: B-1's HARVEST COMPLETED reported on lane 3
    stray = next(
        f
        for f in facts
        if f.batch_id == "B-1" and f.step is ProcessStep.HARVEST and f.transition is StepTransition.COMPLETED
    )
    mixed = [dataclasses.replace(f, lane=3) if f is stray else f for f in facts]
    found = all_findings(mixed)
    assert kinds(found) == ["BATCH_ON_TWO_LANES"]
    (finding,) = found
    assert finding.severity is FindingSeverity.CRITICAL and finding.batch_id == "B-1" and finding.lane == 1
    assert stray.event_id in finding.evidence
    assert "bos-m01 lane 1 (17 events), bos-m01 lane 3 (1 events)" in finding.message


def test_a_lane_started_while_busy_is_one_overlap_finding() -> None:
    run = Run()
    run.batch("B-1", 1, T0)  # holds lane 1 until cryopreservation ends at T0 + 16 h
    run.batch("B-2", 1, T0 + timedelta(hours=15))
    found = all_findings(run.facts())
    assert kinds(found) == ["LANE_OVERLAP"]
    (overlap,) = found
    assert overlap.batch_id == "B-2" and overlap.lane == 1 and overlap.severity is FindingSeverity.CRITICAL
    assert "while batch B-1 held it" in overlap.message
    assert len(overlap.evidence) == 3  # B-1 start and end, B-2 start


def test_occupancy_ends_at_cryopreservation_or_failure_and_qc_is_off_module() -> None:
    run = Run()
    run.batch("B-1", 1, T0, fail_at=ProcessStep.ACTIVATION)
    run.batch("B-2", 1, T0 + timedelta(hours=6))  # starts when B-1's failure frees the lane
    run.batch("B-3", 2, T0, steps=ON_MODULE[:2])  # in progress
    run.batch("B-4", 2, T0 + timedelta(days=3))
    occ = {o.batch_id: o for o in lane_occupancy(run.facts())}
    assert occ["B-1"].end is not None and occ["B-1"].end.transition is StepTransition.FAILED
    end_2 = occ["B-2"].end
    assert end_2 is not None and end_2.step is ProcessStep.CRYOPRESERVATION
    assert occ["B-3"].end is None
    (overlap,) = segregation(run.facts())
    assert overlap.batch_id == "B-4" and "still in progress" in overlap.message


def test_steps_out_of_process_order_are_one_finding_per_batch() -> None:
    run = Run()
    run.batch("B-1", 1, T0, steps=ALL_STEPS[:3])
    # EXPANSION started before TRANSDUCTION completed
    run.step("B-1", "bos-m01", 1, ProcessStep.TRANSDUCTION, StepTransition.STARTED, T0 + timedelta(hours=6))
    run.step("B-1", "bos-m01", 1, ProcessStep.EXPANSION, StepTransition.STARTED, T0 + timedelta(hours=7))
    run.step("B-1", "bos-m01", 1, ProcessStep.TRANSDUCTION, StepTransition.COMPLETED, T0 + timedelta(hours=8))
    run.step("B-1", "bos-m01", 1, ProcessStep.EXPANSION, StepTransition.COMPLETED, T0 + timedelta(hours=9))
    found = all_findings(run.facts())
    assert kinds(found) == ["STEPS_OUT_OF_ORDER"]
    assert "EXPANSION STARTED" in found[0].message and "before TRANSDUCTION COMPLETED" in found[0].message
    assert len(found[0].evidence) == 2


def test_a_dropped_completion_is_a_gap_not_an_order_finding() -> None:
    facts = clean_run()
    victim = next(
        f
        for f in facts
        if f.batch_id == "B-1"
        and f.step is ProcessStep.SELECTION
        and f.transition is StepTransition.COMPLETED
    )
    assert kinds(all_findings([f for f in facts if f is not victim])) == ["SEQUENCE_GAP"]


def test_finding_ids_are_stable_and_distinct() -> None:
    facts = clean_run()
    dropped = [f for f in facts if f.sequence not in (3, 9)]
    first = all_findings(dropped)
    again = all_findings(list(reversed(dropped)))
    assert [f.finding_id for f in first] == [f.finding_id for f in again]
    assert len({f.finding_id for f in first}) == len(first) == 3  # a gap per hole, per module


FAULTS = st.fixed_dictionaries(
    {
        "drop": st.lists(st.integers(1, 40), max_size=4, unique=True),
        "alter": st.lists(st.integers(1, 40), max_size=2, unique=True),
        "skew": st.lists(st.integers(1, 40), max_size=3, unique=True),
        "late": st.lists(st.integers(1, 40), max_size=3, unique=True),
        "mixup": st.booleans(),
    }
)


def faulty_run(faults: dict[str, object]) -> list[EventFact]:
    facts = clean_run()
    out = []
    for fact in facts:
        f = fact
        if f.module_id == "bos-m01":
            if f.sequence in faults["drop"]:  # type: ignore[operator]
                continue
            if f.sequence in faults["alter"]:  # type: ignore[operator]
                f = dataclasses.replace(f, hash="0" * 64)
            if f.sequence in faults["skew"]:  # type: ignore[operator]
                f = dataclasses.replace(f, published_at=f.occurred_at - timedelta(minutes=2))
            if f.sequence in faults["late"]:  # type: ignore[operator]
                f = dataclasses.replace(f, ingested_at=f.occurred_at + timedelta(hours=1))
        if faults["mixup"] and f.batch_id == "B-4" and f.step is ProcessStep.HARVEST:
            f = dataclasses.replace(f, lane=1)
        out.append(f)
    return out


@settings(max_examples=60, deadline=None)
@given(faults=FAULTS, data=st.data())
def test_results_do_not_depend_on_order_or_duplicates(faults: dict[str, object], data: st.DataObject) -> None:
    facts = faulty_run(faults)
    bounds = IntegrityBounds(streams_start_at_one=True)
    expected = all_findings(facts, bounds)
    expected_completeness = completeness(facts, bounds)
    shuffled = data.draw(st.permutations(facts))
    repeats = data.draw(st.lists(st.sampled_from(facts), max_size=10))
    noisy = [*shuffled, *repeats]
    assert all_findings(noisy, bounds) == expected
    assert completeness(noisy, bounds) == expected_completeness
    # each fault kind shows up exactly when injected
    found = set(kinds(expected))
    assert ("SEQUENCE_GAP" in found) == bool(faults["drop"])
    assert ("CLOCK_SKEW" in found) == bool(set(faults["skew"]) - set(faults["drop"]))  # type: ignore[call-overload]
    assert ("BATCH_ON_TWO_LANES" in found) == bool(faults["mixup"])
    late_kept = set(faults["late"]) - set(faults["drop"])  # type: ignore[call-overload]
    assert ("LATE_ARRIVAL" in found) == bool(late_kept)
    assert not found & {"LANE_OVERLAP", "STEPS_OUT_OF_ORDER", "DUPLICATE_SEQUENCE"}


def test_finding_kinds_cover_every_alarm_code() -> None:
    from atmpnet.rules.integrity import ALARM_CODES

    assert set(ALARM_CODES) == set(FindingKind)
    assert all(code.startswith("DAT-") for code in ALARM_CODES.values())
