"""GMP data-integrity rules: tamper evidence, completeness, timeliness and lane segregation.

Pure functions over ``EventFact`` records (the envelope of each event as stored, its chain
hash, and for batch steps the step and transition). The processor feeds them the events of a
window, ``atmpnet verify`` feeds them the whole event store; both get the same findings,
whatever the order of the input and however often an event is repeated (facts are reduced to
one per event id first).

Every finding names its kind, site, module (or stream), the event ids that are its evidence
and a message a reviewer can read. ``finding_id`` is derived from the kind and the evidence,
so a replay raises the same data-integrity deviation again, not a second one.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from atmpnet.contract.chain import ChainLink, verify_chain
from atmpnet.contract.events import (
    BatchStep,
    Deviation,
    Event,
    ProcessStep,
    StepTransition,
)

STEP_ORDER: dict[ProcessStep, int] = {step: i for i, step in enumerate(ProcessStep)}
OFF_MODULE_STEPS = frozenset({ProcessStep.QC_RELEASE})
_ENDS_BADLY = frozenset({StepTransition.FAILED, StepTransition.ABORTED})


class FindingKind(StrEnum):
    """What a data-integrity finding is about; the alarm code of its deviation follows it."""

    CHAIN_BREAK = "CHAIN_BREAK"
    SEQUENCE_GAP = "SEQUENCE_GAP"
    DUPLICATE_SEQUENCE = "DUPLICATE_SEQUENCE"
    CLOCK_SKEW = "CLOCK_SKEW"
    LATE_ARRIVAL = "LATE_ARRIVAL"
    BATCH_ON_TWO_LANES = "BATCH_ON_TWO_LANES"
    LANE_OVERLAP = "LANE_OVERLAP"
    STEPS_OUT_OF_ORDER = "STEPS_OUT_OF_ORDER"


class FindingSeverity(StrEnum):
    """Severity of the deviation a finding raises."""

    CRITICAL = "CRITICAL"
    MAJOR = "MAJOR"
    MINOR = "MINOR"


SEGREGATION_KINDS = frozenset(
    {FindingKind.BATCH_ON_TWO_LANES, FindingKind.LANE_OVERLAP, FindingKind.STEPS_OUT_OF_ORDER}
)
ALARM_CODES: dict[FindingKind, str] = {
    FindingKind.CHAIN_BREAK: "DAT-CHAIN-BREAK",
    FindingKind.SEQUENCE_GAP: "DAT-SEQUENCE-GAP",
    FindingKind.DUPLICATE_SEQUENCE: "DAT-SEQUENCE-DUPLICATE",
    FindingKind.CLOCK_SKEW: "DAT-CLOCK-SKEW",
    FindingKind.LATE_ARRIVAL: "DAT-LATE-ARRIVAL",
    FindingKind.BATCH_ON_TWO_LANES: "DAT-SEG-BATCH-TWO-LANES",
    FindingKind.LANE_OVERLAP: "DAT-SEG-LANE-OVERLAP",
    FindingKind.STEPS_OUT_OF_ORDER: "DAT-SEG-STEP-ORDER",
}


@dataclass(frozen=True, slots=True)
class IntegrityBounds:
    """The limits the timeliness rules apply (settings.py supplies the configured ones)."""

    # published_at - occurred_at above this: the producer's clock or its reporting is off
    max_reporting_delay: timedelta = timedelta(minutes=5)
    # published before it occurred: impossible but for clock jitter, so only a small tolerance
    negative_skew_tolerance: timedelta = timedelta(seconds=1)
    # ingested_at - occurred_at above this: the event missed the views' lateness bound
    lateness: timedelta = timedelta(minutes=15)
    # True when every stream is known to begin at sequence 1 (the whole event store), so a
    # missing head counts too; False for a window, where only max - min + 1 can be expected
    streams_start_at_one: bool = False


def stream_name(module_id: str | None, producer_id: str) -> str:
    """The sequence stream of an event: its module, else its producer (as the envelope defines)."""
    return f"module/{module_id}" if module_id else f"producer/{producer_id}"


@dataclass(frozen=True, slots=True)
class EventFact:
    """What the integrity rules read of one stored event.

    ``hash`` is the chain hash of its canonical bytes (``contract.chain.payload_hash`` of the
    stored ``raw``), ``previous_hash`` the one it carries in its envelope. ``step`` and
    ``transition`` are set for batch steps only.
    """

    event_id: str
    site_id: str | None
    module_id: str | None
    producer_id: str
    sequence: int
    occurred_at: datetime
    published_at: datetime
    ingested_at: datetime | None = None
    hash: str | None = None
    previous_hash: str | None = None
    lane: int | None = None
    batch_id: str | None = None
    step: ProcessStep | None = None
    transition: StepTransition | None = None
    attempt: int = 1
    performed_by: str | None = None

    # the sequence stream: the module, else the producer (as the envelope defines it); computed
    # once, since every rule groups by it
    stream: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Set ``stream``."""
        object.__setattr__(self, "stream", stream_name(self.module_id, self.producer_id))

    @classmethod
    def from_event(
        cls, event: Event, *, hash: str | None = None, ingested_at: datetime | None = None
    ) -> EventFact:
        """The fact of a contract event; ``hash`` and ``ingested_at`` come from the store."""
        env = event.envelope
        step = transition = None
        attempt = 1
        performed_by: str | None = None
        if isinstance(event, BatchStep):
            step, transition, attempt, performed_by = (
                event.step,
                event.transition,
                event.attempt,
                event.performed_by,
            )
        elif isinstance(event, Deviation):
            performed_by = event.raised_by
        return cls(
            event_id=str(env.event_id),
            site_id=env.site_id,
            module_id=env.module_id,
            producer_id=env.producer.id,
            sequence=env.sequence,
            occurred_at=env.occurred_at,
            published_at=env.published_at,
            ingested_at=ingested_at,
            hash=hash,
            # envelope v2 carries it; read defensively so v1 events are facts too
            previous_hash=getattr(env, "previous_hash", None),
            lane=env.lane,
            batch_id=env.batch_id,
            step=step,
            transition=transition,
            attempt=attempt,
            performed_by=performed_by,
        )


@dataclass(frozen=True, slots=True)
class Finding:
    """One data-integrity or segregation finding, with the events that prove it."""

    kind: FindingKind
    severity: FindingSeverity
    site_id: str | None
    module_id: str | None
    stream: str
    evidence: tuple[str, ...]  # event ids, sorted
    message: str
    first_at: datetime | None = None  # occurred_at span of the evidence (for digests)
    last_at: datetime | None = None
    lane: int | None = None
    batch_id: str | None = None
    sequences: tuple[int, ...] = field(default=())

    @property
    def alarm_code(self) -> str:
        """Alarm code of the deviation it raises (prefix DAT-: class DATA_INTEGRITY)."""
        return ALARM_CODES[self.kind]

    @property
    def finding_id(self) -> str:
        """Stable id from kind, stream and evidence: a replay finds the same finding again."""
        key = "|".join([self.kind.value, self.stream, *self.evidence])
        return "INT-" + hashlib.sha256(key.encode()).hexdigest()[:20]


class _UniqueFacts(list[EventFact]):
    """A list ``unique_facts`` made: passing it through again costs nothing."""


def unique_facts(facts: Iterable[EventFact]) -> list[EventFact]:
    """One fact per event id, sorted by (stream, sequence, event id).

    A re-delivered event may be stored twice with different ingestion times: the earliest
    arrival is kept (lateness is about the first arrival). Ties are broken on the whole
    record, so the choice never depends on input order.
    """
    if isinstance(facts, _UniqueFacts):
        return facts
    by_id: dict[str, EventFact] = {}
    for f in facts:
        kept = by_id.get(f.event_id)
        if kept is None or _arrival_key(f) < _arrival_key(kept):
            by_id[f.event_id] = f
    return _UniqueFacts(sorted(by_id.values(), key=lambda f: (f.stream, f.sequence, f.event_id)))


def _arrival_key(f: EventFact) -> tuple[bool, str, str]:
    return (f.ingested_at is None, f.ingested_at.isoformat() if f.ingested_at else "", repr(f))


def _by_stream(facts: Sequence[EventFact]) -> dict[str, list[EventFact]]:
    streams: dict[str, list[EventFact]] = defaultdict(list)
    for f in facts:  # already in (stream, sequence, event id) order
        streams[f.stream].append(f)
    return dict(streams)


def _span(facts: Iterable[EventFact]) -> tuple[datetime | None, datetime | None]:
    times = [f.occurred_at for f in facts]
    return (min(times), max(times)) if times else (None, None)


def _ids(facts: Iterable[EventFact]) -> tuple[str, ...]:
    return tuple(sorted({f.event_id for f in facts}))


def _where(f: EventFact) -> tuple[str | None, str | None, str]:
    return f.site_id, f.module_id, f.stream


def _stream_label(f: EventFact) -> str:
    return f"module {f.module_id}" if f.module_id else f"producer {f.producer_id}"


# -- (1) tamper evidence ----------------------------------------------------------------------


def _chain_holds(hashed: list[EventFact], head: str | None) -> bool:
    """A linear check that ``verify_chain`` would find nothing (the common case, checked fast).

    ``hashed`` is one stream's facts in sequence order. False means "not proven here": the full
    verification then runs and reports what is wrong.
    """
    chained = False
    before: EventFact | None = None
    for f in hashed:
        if before is not None and f.sequence == before.sequence:
            return False  # two events claim one sequence
        if before is None or f.sequence != before.sequence + 1:
            if f.sequence == 1 and f.previous_hash:
                return False
        elif f.previous_hash != before.hash and (f.previous_hash or chained):
            return False
        chained = chained or bool(f.previous_hash)
        before = f
    return head is None or (before is not None and before.hash == head)


def chain_breaks(facts: Iterable[EventFact], heads: dict[str, str] | None = None) -> list[Finding]:
    """Every break of every stream's hash chain (facts without a hash are not chained).

    ``heads`` maps a stream to the hash recorded for its last event, which protects the tail.
    Two events at one sequence are reported by ``sequence_findings``, not again here.
    """
    out: list[Finding] = []
    for stream, events in _by_stream(unique_facts(facts)).items():
        hashed = [f for f in events if f.hash is not None]
        if not hashed or _chain_holds(hashed, (heads or {}).get(stream)):
            continue
        at: dict[int, list[EventFact]] = defaultdict(list)
        for f in hashed:
            at[f.sequence].append(f)
        links = [ChainLink(f.sequence, f.previous_hash, f.hash) for f in hashed if f.hash]
        for brk in verify_chain(links, head=(heads or {}).get(stream)):
            if brk.before == brk.after and brk.reason.endswith(f"claim sequence {brk.after}"):
                continue
            involved = [*at.get(brk.before, []), *at.get(brk.after, [])]
            first, last = _span(involved)
            site, module, _ = _where(hashed[0])
            out.append(
                Finding(
                    FindingKind.CHAIN_BREAK,
                    FindingSeverity.MAJOR,
                    site,
                    module,
                    stream,
                    _ids(involved),
                    f"hash chain of {_stream_label(hashed[0])} broken between sequence {brk.before} "
                    f"and {brk.after}: {brk.reason}",
                    first,
                    last,
                    sequences=(brk.before, brk.after),
                )
            )
    return out


# -- (2) completeness -------------------------------------------------------------------------


def sequence_findings(facts: Iterable[EventFact], bounds: IntegrityBounds | None = None) -> list[Finding]:
    """Gaps in each stream's sequence numbers, and different events claiming one sequence."""
    bounds = bounds or IntegrityBounds()
    out: list[Finding] = []
    for stream, events in _by_stream(unique_facts(facts)).items():
        site, module, _ = _where(events[0])
        label = _stream_label(events[0])
        at: dict[int, list[EventFact]] = defaultdict(list)
        for f in events:
            at[f.sequence].append(f)
        sequences = sorted(at)
        if bounds.streams_start_at_one and sequences[0] > 1:
            first_known = at[sequences[0]]
            out.append(
                Finding(
                    FindingKind.SEQUENCE_GAP,
                    FindingSeverity.MAJOR,
                    site,
                    module,
                    stream,
                    _ids(first_known),
                    f"{label}: sequence 1 to {sequences[0] - 1} missing "
                    f"({sequences[0] - 1} events) before the first received",
                    None,
                    min(f.occurred_at for f in first_known),
                    sequences=(1, sequences[0] - 1),
                )
            )
        for before, after in itertools.pairwise(sequences):
            if after - before > 1:
                around = [*at[before], *at[after]]
                first, last = _span(around)
                missing = after - before - 1
                out.append(
                    Finding(
                        FindingKind.SEQUENCE_GAP,
                        FindingSeverity.MAJOR,
                        site,
                        module,
                        stream,
                        _ids(around),
                        f"{label}: sequence {before + 1} to {after - 1} missing ({missing} events) "
                        f"between {first:%Y-%m-%d %H:%M:%S} and {last:%Y-%m-%d %H:%M:%S} UTC"
                        if first and last
                        else f"{label}: sequence {before + 1} to {after - 1} missing",
                        first,
                        last,
                        sequences=(before + 1, after - 1),
                    )
                )
        for sequence in sequences:
            if len(at[sequence]) > 1:
                first, last = _span(at[sequence])
                out.append(
                    Finding(
                        FindingKind.DUPLICATE_SEQUENCE,
                        FindingSeverity.MAJOR,
                        site,
                        module,
                        stream,
                        _ids(at[sequence]),
                        f"{label}: {len(at[sequence])} different events claim sequence {sequence}",
                        first,
                        last,
                        sequences=(sequence,),
                    )
                )
    return out


def _episodes(facts: Iterable[EventFact], is_off: dict[str, bool]) -> list[tuple[str, list[EventFact]]]:
    """Runs of consecutive (by sequence) events of a stream for which ``is_off`` holds.

    One clock fault or one outage makes one finding, not one per event.
    """
    runs: list[tuple[str, list[EventFact]]] = []
    for stream, events in _by_stream(unique_facts(facts)).items():
        run: list[EventFact] = []
        for f in events:
            if is_off[f.event_id]:
                run.append(f)
            elif run:
                runs.append((stream, run))
                run = []
        if run:
            runs.append((stream, run))
    return runs


def _fmt(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds >= 3600:
        return f"{sign}{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{sign}{seconds / 60:.1f} min"
    return f"{sign}{seconds:.1f} s"


def is_skewed(f: EventFact, bounds: IntegrityBounds) -> bool:
    """published_at - occurred_at beyond the reporting bound, or negative beyond the tolerance."""
    skew = f.published_at - f.occurred_at
    return skew > bounds.max_reporting_delay or skew < -bounds.negative_skew_tolerance


def is_late(f: EventFact, bounds: IntegrityBounds) -> bool:
    """ingested_at - occurred_at beyond the lateness bound (unknown ingestion: not late)."""
    return f.ingested_at is not None and f.ingested_at - f.occurred_at > bounds.lateness


def clock_skew(facts: Iterable[EventFact], bounds: IntegrityBounds | None = None) -> list[Finding]:
    """Episodes of events whose published_at and occurred_at disagree beyond the bounds."""
    bounds = bounds or IntegrityBounds()
    unique = unique_facts(facts)
    off = {f.event_id: is_skewed(f, bounds) for f in unique}
    out = []
    for stream, run in _episodes(unique, off):
        skews = [f.published_at - f.occurred_at for f in run]
        worst = max(skews, key=lambda d: abs(d.total_seconds()))
        site, module, _ = _where(run[0])
        first, last = _span(run)
        direction = "before it occurred" if worst < timedelta(0) else "after it occurred"
        out.append(
            Finding(
                FindingKind.CLOCK_SKEW,
                FindingSeverity.MAJOR,
                site,
                module,
                stream,
                _ids(run),
                f"{_stream_label(run[0])}: {len(run)} events (sequence {run[0].sequence} to "
                f"{run[-1].sequence}) published up to {_fmt(abs(worst))} {direction} "
                f"(bound {_fmt(bounds.max_reporting_delay)}, "
                f"negative tolerance {_fmt(bounds.negative_skew_tolerance)})",
                first,
                last,
                sequences=(run[0].sequence, run[-1].sequence),
            )
        )
    return out


def late_arrivals(facts: Iterable[EventFact], bounds: IntegrityBounds | None = None) -> list[Finding]:
    """Episodes of events ingested later than the lateness bound after they occurred."""
    bounds = bounds or IntegrityBounds()
    unique = unique_facts(facts)
    off = {f.event_id: is_late(f, bounds) for f in unique}
    out = []
    for stream, run in _episodes(unique, off):
        worst = max(f.ingested_at - f.occurred_at for f in run if f.ingested_at)
        site, module, _ = _where(run[0])
        first, last = _span(run)
        out.append(
            Finding(
                FindingKind.LATE_ARRIVAL,
                FindingSeverity.MAJOR,
                site,
                module,
                stream,
                _ids(run),
                f"{_stream_label(run[0])}: {len(run)} events (sequence {run[0].sequence} to "
                f"{run[-1].sequence}) arrived up to {_fmt(worst)} after they occurred "
                f"(lateness bound {_fmt(bounds.lateness)})",
                first,
                last,
                sequences=(run[0].sequence, run[-1].sequence),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class SiteCompleteness:
    """Completeness of one site's streams: expected from sequence ranges, received, on time."""

    site_id: str | None
    streams: int
    expected: int
    received: int
    on_time: int
    skewed: int

    @property
    def missing(self) -> int:
        """Expected events never received."""
        return self.expected - self.received

    @property
    def received_share(self) -> float:
        """Share of expected events received (1.0 when nothing was expected)."""
        return self.received / self.expected if self.expected else 1.0

    @property
    def on_time_share(self) -> float:
        """Share of expected events received within the lateness bound."""
        return self.on_time / self.expected if self.expected else 1.0


def completeness(
    facts: Iterable[EventFact], bounds: IntegrityBounds | None = None
) -> dict[str | None, SiteCompleteness]:
    """Per site: expected, received, on-time and skewed events over its streams.

    Expected is max - min + 1 per stream (max when streams start at one), received the
    distinct sequences, on time those received within the lateness bound.
    """
    bounds = bounds or IntegrityBounds()
    totals: dict[str | None, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for events in _by_stream(unique_facts(facts)).values():
        # two events at one sequence are one expected event: its earliest arrival counts
        first_of_sequence: dict[int, EventFact] = {}
        for f in events:
            kept = first_of_sequence.get(f.sequence)
            if kept is None or _arrival_key(f) < _arrival_key(kept):
                first_of_sequence[f.sequence] = f
        sequences = sorted(first_of_sequence)
        low = 1 if bounds.streams_start_at_one else sequences[0]
        t = totals[events[0].site_id]
        t[0] += 1
        t[1] += sequences[-1] - low + 1
        t[2] += len(sequences)
        t[3] += sum(1 for f in first_of_sequence.values() if not is_late(f, bounds))
        t[4] += sum(1 for f in first_of_sequence.values() if is_skewed(f, bounds))
    return {
        site: SiteCompleteness(site, streams, expected, received, on_time, skewed)
        for site, (streams, expected, received, on_time, skewed) in sorted(
            totals.items(), key=lambda kv: kv[0] or ""
        )
    }


# -- (3) lane segregation ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LaneOccupancy:
    """When a batch held its lane: from its start to the end of its last on-module step."""

    batch_id: str
    site_id: str | None
    module_id: str | None
    lane: int | None
    start: EventFact
    end: EventFact | None  # None: still in progress

    @property
    def started_at(self) -> datetime:
        """When the batch took the lane (APHERESIS_RECEIPT STARTED occurred)."""
        return self.start.occurred_at


def _steps_by_batch(facts: Iterable[EventFact]) -> dict[str, list[EventFact]]:
    batches: dict[str, list[EventFact]] = defaultdict(list)
    for f in unique_facts(facts):
        if f.batch_id and f.step is not None and f.transition is not None:
            batches[f.batch_id].append(f)
    for events in batches.values():
        events.sort(key=lambda f: (f.occurred_at, f.event_id))
    return dict(sorted(batches.items()))


def lane_occupancy(facts: Iterable[EventFact]) -> list[LaneOccupancy]:
    """Each started batch's occupancy of the lane its APHERESIS_RECEIPT STARTED names.

    The lane is freed by the earliest of: CRYOPRESERVATION COMPLETED, or any on-module step
    FAILED or ABORTED (terminal). QC_RELEASE happens off the module and holds no lane.
    """
    out = []
    for batch_id, events in _steps_by_batch(facts).items():
        starts = [
            f
            for f in events
            if f.step is ProcessStep.APHERESIS_RECEIPT and f.transition is StepTransition.STARTED
        ]
        if not starts:
            continue
        start = starts[0]
        ends = [
            f
            for f in events
            if f.step not in OFF_MODULE_STEPS
            and (
                f.transition in _ENDS_BADLY
                or (f.step is ProcessStep.CRYOPRESERVATION and f.transition is StepTransition.COMPLETED)
            )
        ]
        if not ends:
            # its end was not received (a gap says so), but release testing shows it left the module
            ends = [f for f in events if f.step in OFF_MODULE_STEPS]
        out.append(
            LaneOccupancy(
                batch_id, start.site_id, start.module_id, start.lane, start, ends[0] if ends else None
            )
        )
    return out


def batch_on_two_lanes(facts: Iterable[EventFact]) -> list[Finding]:
    """Batches whose steps name more than one (module, lane): a batch runs on one lane."""
    out = []
    for batch_id, events in _steps_by_batch(facts).items():
        placements: dict[tuple[str, int], list[EventFact]] = defaultdict(list)
        for f in events:
            placements[(f.module_id or "", f.lane or 0)].append(f)
        if len(placements) < 2:
            continue
        # the batch's own lane is where it started (else where it was first seen)
        home = (events[0].module_id or "", events[0].lane or 0)
        for f in events:
            if f.step is ProcessStep.APHERESIS_RECEIPT and f.transition is StepTransition.STARTED:
                home = (f.module_id or "", f.lane or 0)
                break
        strays = [f for key, fs in placements.items() if key != home for f in fs]
        evidence = [placements[home][0], *strays]
        where = ", ".join(
            f"{m} lane {lane} ({len(fs)} events)" for (m, lane), fs in sorted(placements.items())
        )
        first, last = _span(evidence)
        out.append(
            Finding(
                FindingKind.BATCH_ON_TWO_LANES,
                FindingSeverity.CRITICAL,
                events[0].site_id,
                home[0] or None,
                f"batch/{batch_id}",
                _ids(evidence),
                f"batch {batch_id} seen on {len(placements)} lanes: {where}; "
                f"it started on {home[0]} lane {home[1]}",
                first,
                last,
                lane=home[1] or None,
                batch_id=batch_id,
            )
        )
    return out


def lane_overlaps(
    facts: Iterable[EventFact], complete_streams: frozenset[str] = frozenset()
) -> list[Finding]:
    """Batches that started on a lane while another batch was still in progress on it.

    ``complete_streams``: streams known to have no gap although only some of their events are
    given (the caller checked them whole, e.g. in SQL).
    """
    unique = unique_facts(facts)
    received: dict[str, set[int]] = defaultdict(set)
    last_seen: dict[str, int] = {}  # batch -> highest sequence of its events
    for f in unique:
        received[f.stream].add(f.sequence)
        if f.batch_id and f.step is not None:
            last_seen[f.batch_id] = max(last_seen.get(f.batch_id, 0), f.sequence)

    ordered = {stream: sorted(seqs) for stream, seqs in received.items()}

    def lost_between(stream: str, low: int, high: int) -> bool:
        if high - low <= 1 or stream in complete_streams:
            return False
        seqs = ordered[stream]
        inside = bisect.bisect_left(seqs, high) - bisect.bisect_right(seqs, low)
        return inside < high - low - 1

    lanes: dict[tuple[str, int], list[LaneOccupancy]] = defaultdict(list)
    for occ in lane_occupancy(unique):
        lanes[(occ.module_id or "", occ.lane or 0)].append(occ)
    out = []
    for (module, lane), occupancies in sorted(lanes.items()):
        occupancies.sort(key=lambda o: (o.started_at, o.batch_id))
        for i, held in enumerate(occupancies):
            for later in occupancies[i + 1 :]:
                if held.end is not None and later.started_at >= held.end.occurred_at:
                    continue
                if held.end is None and lost_between(
                    later.start.stream, last_seen[held.batch_id], later.start.sequence
                ):
                    continue  # the held batch's end may be among the lost events: the gap is the finding
                evidence = [held.start, later.start] + ([held.end] if held.end else [])
                first, last = _span(evidence)
                until = (
                    f"until {held.end.occurred_at:%Y-%m-%d %H:%M:%S} UTC" if held.end else "still in progress"
                )
                out.append(
                    Finding(
                        FindingKind.LANE_OVERLAP,
                        FindingSeverity.CRITICAL,
                        later.site_id,
                        module or None,
                        f"lane/{module}/{lane}",
                        _ids(evidence),
                        f"batch {later.batch_id} started on {module} lane {lane} at "
                        f"{later.started_at:%Y-%m-%d %H:%M:%S} UTC while batch {held.batch_id} held it "
                        f"(from {held.started_at:%Y-%m-%d %H:%M:%S} UTC {until})",
                        first,
                        last,
                        lane=lane or None,
                        batch_id=later.batch_id,
                    )
                )
    return out


def steps_out_of_order(facts: Iterable[EventFact]) -> list[Finding]:
    """Batches where a later step STARTED before an earlier step COMPLETED (process order).

    Only events that were received are compared (a lost event is a gap, not a mix-up): an
    earlier step without a received completion is compared by its STARTED instead. One
    finding per batch, naming every inverted pair.
    """
    out = []
    for batch_id, events in _steps_by_batch(facts).items():
        started: dict[ProcessStep, EventFact] = {}
        completed: dict[ProcessStep, EventFact] = {}
        for f in events:  # time order: first STARTED, last COMPLETED
            assert f.step is not None
            if f.transition is StepTransition.STARTED:
                started.setdefault(f.step, f)
            elif f.transition is StepTransition.COMPLETED:
                completed[f.step] = f
        pairs: list[tuple[EventFact, EventFact]] = []
        steps = sorted(set(started) | set(completed), key=STEP_ORDER.__getitem__)
        for i, earlier in enumerate(steps):
            done = completed.get(earlier) or started.get(earlier)
            assert done is not None
            for later in steps[i + 1 :]:
                begun = started.get(later)
                if begun is not None and begun.occurred_at < done.occurred_at:
                    pairs.append((done, begun))
        if not pairs:
            continue
        evidence = [f for pair in pairs for f in pair]
        first, last = _span(evidence)
        said = "; ".join(
            f"{b.step} STARTED {b.occurred_at:%Y-%m-%d %H:%M:%S} before {d.step} "
            f"{d.transition} {d.occurred_at:%Y-%m-%d %H:%M:%S}"
            for d, b in pairs
        )
        out.append(
            Finding(
                FindingKind.STEPS_OUT_OF_ORDER,
                FindingSeverity.CRITICAL,
                events[0].site_id,
                events[0].module_id,
                f"batch/{batch_id}",
                _ids(evidence),
                f"batch {batch_id} ran steps out of process order: {said} (UTC)",
                first,
                last,
                lane=events[0].lane,
                batch_id=batch_id,
            )
        )
    return out


def segregation(facts: Iterable[EventFact], complete_streams: frozenset[str] = frozenset()) -> list[Finding]:
    """Every lane segregation finding: batch on two lanes, lane overlap, steps out of order."""
    unique = unique_facts(facts)
    return [
        *batch_on_two_lanes(unique),
        *lane_overlaps(unique, complete_streams),
        *steps_out_of_order(unique),
    ]


def all_findings(
    facts: Iterable[EventFact],
    bounds: IntegrityBounds | None = None,
    heads: dict[str, str] | None = None,
) -> list[Finding]:
    """Every integrity finding over ``facts``, sorted by kind, stream and evidence."""
    unique = unique_facts(facts)
    found = [
        *chain_breaks(unique, heads),
        *sequence_findings(unique, bounds),
        *clock_skew(unique, bounds),
        *late_arrivals(unique, bounds),
        *segregation(unique),
    ]
    return sorted(found, key=lambda f: (f.kind.value, f.stream, f.evidence, f.message))
