"""The batch review digest: one batch reviewed by exception, for quality release.

A pure builder: it takes a batch's step events, its deviation events with their triage, the
configuration drift intervals of its modules, and the integrity findings, and returns what a
reviewer reads: the steps and their times, every exception (failed steps, deviations, drift
in force during a step, data-integrity findings) and a verdict line. Input order and repeated
events do not change the digest (events are reduced to one per event id).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from atmpnet.contract.events import (
    BatchStep,
    Deviation,
    DeviationTransition,
    Event,
    ProcessStep,
    StepTransition,
)
from atmpnet.rules.integrity import OFF_MODULE_STEPS, STEP_ORDER, Finding

_TERMINAL = frozenset({StepTransition.COMPLETED, StepTransition.FAILED, StepTransition.ABORTED})
_ENDS_BADLY = frozenset({StepTransition.FAILED, StepTransition.ABORTED})

DriftInterval = tuple[str, datetime, datetime | None]  # (module_id, opened_at, closed_at)


@dataclass(frozen=True, slots=True)
class DigestStep:
    """One attempt of one step: where, when, how it ended and who performed it."""

    step: ProcessStep
    attempt: int
    module_id: str | None
    lane: int | None
    started_at: datetime | None
    ended_at: datetime | None
    outcome: StepTransition | None  # None: not ended (in progress, or its end was not received)
    performed_by: tuple[str, ...]
    failure_reason: str | None
    event_ids: tuple[str, ...]

    @property
    def duration(self) -> timedelta | None:
        """Cycle time: end minus start, when both were received."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at


@dataclass(frozen=True, slots=True)
class DigestDeviation:
    """A deviation of the batch with its triage (severity, class, status)."""

    deviation_id: str
    step: ProcessStep | None
    parameter: str | None
    alarm_code: str | None
    description: str
    raised_at: datetime | None
    closed_at: datetime | None
    resolution: str | None
    severity: str
    deviation_class: str
    status: str
    event_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DigestDrift:
    """A drift interval of the batch's module that was in force during some of its steps."""

    module_id: str
    opened_at: datetime
    closed_at: datetime | None
    steps: tuple[tuple[ProcessStep, int], ...]  # (step, attempt) that ran while drifted


@dataclass(frozen=True, slots=True)
class DigestException:
    """One thing the reviewer must look at, with the event ids behind it."""

    kind: str  # STEP, DEVIATION, DRIFT, INTEGRITY
    severity: str
    at: datetime | None
    summary: str
    event_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BatchDigest:
    """Review by exception of one batch."""

    batch_id: str
    site_id: str | None
    module_id: str | None
    lane: int | None
    product_code: str | None
    status: str  # completed, failed, in progress, not started
    started_at: datetime | None
    ended_at: datetime | None
    steps: tuple[DigestStep, ...]
    deviations: tuple[DigestDeviation, ...]
    drift: tuple[DigestDrift, ...]
    findings: tuple[Finding, ...]
    exceptions: tuple[DigestException, ...]

    @property
    def verdict(self) -> str:
        """The verdict line: "no exceptions", or how many exceptions are to be reviewed."""
        n = len(self.exceptions)
        if n == 0:
            return "no exceptions"
        return f"{n} exception{'s' if n != 1 else ''} to review"


def _unique(events: Iterable[Event], batch_id: str) -> list[Event]:
    by_id: dict[str, Event] = {}
    for e in events:
        if e.envelope.batch_id == batch_id:
            by_id.setdefault(str(e.envelope.event_id), e)
    return sorted(by_id.values(), key=lambda e: (e.envelope.occurred_at, str(e.envelope.event_id)))


def _digest_steps(steps: list[BatchStep]) -> list[DigestStep]:
    attempts: dict[tuple[ProcessStep, int], list[BatchStep]] = defaultdict(list)
    for e in steps:
        attempts[(e.step, e.attempt)].append(e)
    out = []
    for (step, attempt), events in sorted(attempts.items(), key=lambda kv: (STEP_ORDER[kv[0][0]], kv[0][1])):
        start = next((e for e in events if e.transition is StepTransition.STARTED), None)
        end = next((e for e in events if e.transition in _TERMINAL), None)
        where = (start or events[0]).envelope
        out.append(
            DigestStep(
                step=step,
                attempt=attempt,
                module_id=where.module_id,
                lane=where.lane,
                started_at=start.envelope.occurred_at if start else None,
                ended_at=end.envelope.occurred_at if end else None,
                outcome=end.transition if end else None,
                performed_by=tuple(sorted({e.performed_by for e in events if e.performed_by})),
                failure_reason=end.failure_reason if end else None,
                event_ids=tuple(sorted(str(e.envelope.event_id) for e in events)),
            )
        )
    return out


def _digest_deviations(
    deviations: list[Deviation], triage: Mapping[str, Mapping[str, str]]
) -> list[DigestDeviation]:
    by_id: dict[str, list[Deviation]] = defaultdict(list)
    for e in deviations:
        by_id[e.deviation_id].append(e)
    out = []
    for deviation_id, events in sorted(by_id.items()):
        raised = next((e for e in events if e.transition is DeviationTransition.RAISED), None)
        closed = next((e for e in events if e.transition is DeviationTransition.CLOSED), None)
        first = raised or events[0]
        verdict = triage.get(deviation_id, {})
        out.append(
            DigestDeviation(
                deviation_id=deviation_id,
                step=first.step,
                parameter=first.parameter,
                alarm_code=first.alarm_code,
                description=first.description,
                raised_at=raised.envelope.occurred_at if raised else None,
                closed_at=closed.envelope.occurred_at if closed else None,
                resolution=closed.resolution if closed else None,
                severity=verdict.get("severity", "UNTRIAGED"),
                deviation_class=verdict.get("class", "UNTRIAGED"),
                status=verdict.get("status", "closed" if closed else "open"),
                event_ids=tuple(sorted(str(e.envelope.event_id) for e in events)),
            )
        )
    return out


def _overlaps(
    start: datetime | None, end: datetime | None, opened: datetime, closed: datetime | None
) -> bool:
    """[start, end) meets [opened, closed); None ends are open (still running / still drifted)."""
    if start is None:
        return False
    return (closed is None or start < closed) and (end is None or opened < end)


def _digest_drift(steps: list[DigestStep], drift: Iterable[DriftInterval]) -> list[DigestDrift]:
    out = set()
    for module_id, opened, closed in drift:
        hit = tuple(
            (s.step, s.attempt)
            for s in steps
            if s.step not in OFF_MODULE_STEPS
            and s.module_id == module_id
            and _overlaps(s.started_at, s.ended_at, opened, closed)
        )
        if hit:
            out.add(DigestDrift(module_id, opened, closed, hit))
    return sorted(
        out, key=lambda d: (d.opened_at, d.module_id, d.closed_at is None, d.closed_at or d.opened_at)
    )


def _relevant(
    finding: Finding,
    batch_id: str,
    event_ids: set[str],
    modules: set[str],
    window: tuple[datetime, datetime | None] | None,
) -> bool:
    if finding.batch_id == batch_id or event_ids.intersection(finding.evidence):
        return True
    # a stream-level finding (a gap, a break, a skewed clock) on its module while the batch was
    # on it; segregation findings name their batches and are matched above
    if finding.batch_id is not None or window is None or finding.module_id not in modules:
        return False
    if finding.first_at is None:
        return False
    last = finding.last_at or finding.first_at
    start, end = window
    return last >= start and (end is None or finding.first_at <= end)


def _status(seen: bool, ended_badly: bool, released: bool) -> str:
    """Batch status per the contract: failed is terminal; completed = QC_RELEASE COMPLETED."""
    if ended_badly:
        return "failed"
    if released:
        return "completed"
    return "in progress" if seen else "not started"


def _fmt(t: datetime | None) -> str:
    return f"{t:%Y-%m-%d %H:%M} UTC" if t else "not received"


def build_digest(
    batch_id: str,
    steps: Iterable[BatchStep],
    deviations: Iterable[Deviation] = (),
    triage: Mapping[str, Mapping[str, str]] | None = None,
    drift: Iterable[DriftInterval] = (),
    findings: Iterable[Finding] = (),
) -> BatchDigest:
    """The review digest of ``batch_id``; events of other batches in the inputs are ignored.

    ``triage`` maps a deviation id to its ``severity``, ``class`` and ``status`` (as the triage
    view has them); ``drift`` lists (module_id, opened_at, closed_at or None) intervals.
    Integrity findings count when they name the batch, cite one of its events, or concern
    its module while the batch was on it.
    """
    step_events = [e for e in _unique(steps, batch_id) if isinstance(e, BatchStep)]
    deviation_events = [e for e in _unique(deviations, batch_id) if isinstance(e, Deviation)]
    digest_steps = _digest_steps(step_events)
    digest_deviations = _digest_deviations(deviation_events, triage or {})
    digest_drift = _digest_drift(digest_steps, drift)

    home = next(
        (
            e.envelope
            for e in step_events
            if e.step is ProcessStep.APHERESIS_RECEIPT and e.transition is StepTransition.STARTED
        ),
        step_events[0].envelope if step_events else None,
    )
    on_module = [e for e in step_events if e.step not in OFF_MODULE_STEPS]
    ends_badly = [e for e in step_events if e.transition in _ENDS_BADLY]
    started_at = step_events[0].envelope.occurred_at if step_events else None
    release = next(
        (
            e
            for e in step_events
            if e.step is ProcessStep.QC_RELEASE and e.transition is StepTransition.COMPLETED
        ),
        None,
    )
    end_event = ends_badly[0] if ends_badly else release
    ended_at = end_event.envelope.occurred_at if end_event else None
    status = _status(bool(step_events), bool(ends_badly), release is not None)
    # while the batch held its lane, module-level findings concern it (the lane-occupancy rule)
    lane_ends = [
        e.envelope.occurred_at
        for e in on_module
        if e.transition in _ENDS_BADLY
        or (e.step is ProcessStep.CRYOPRESERVATION and e.transition is StepTransition.COMPLETED)
    ]
    lane_left = min(lane_ends) if lane_ends else None
    window = (started_at, lane_left) if started_at else None
    event_ids = {str(e.envelope.event_id) for e in [*step_events, *deviation_events]}
    modules = {e.envelope.module_id for e in step_events if e.envelope.module_id}
    by_id = {f.finding_id: f for f in findings if _relevant(f, batch_id, event_ids, modules, window)}
    digest_findings = sorted(
        by_id.values(),
        key=lambda f: (f.first_at is None, f.first_at.isoformat() if f.first_at else "", f.finding_id),
    )

    exceptions: list[DigestException] = []
    for s in digest_steps:
        if s.outcome in _ENDS_BADLY:
            exceptions.append(
                DigestException(
                    "STEP",
                    "CRITICAL",
                    s.ended_at,
                    f"{s.step} attempt {s.attempt} {s.outcome}: {s.failure_reason or 'no reason given'}",
                    s.event_ids,
                )
            )
    for d in digest_deviations:
        exceptions.append(
            DigestException(
                "DEVIATION",
                d.severity,
                d.raised_at,
                f"{d.deviation_id} ({d.deviation_class}, {d.status})"
                f"{' during ' + d.step if d.step else ''}: {d.description}",
                d.event_ids,
            )
        )
    for dr in digest_drift:
        ran = ", ".join(
            f"{step}" + (f" (attempt {attempt})" if attempt > 1 else "") for step, attempt in dr.steps
        )
        # dated when it first touched this batch: a drift that opened before the batch started
        # counts from the batch's start, never before it
        exceptions.append(
            DigestException(
                "DRIFT",
                "MAJOR",
                max(dr.opened_at, started_at) if started_at else dr.opened_at,
                f"{dr.module_id} ran off its validated baseline from {_fmt(dr.opened_at)} "
                f"to {_fmt(dr.closed_at) if dr.closed_at else 'now'} during {ran}",
                (),
            )
        )
    for f in digest_findings:
        exceptions.append(
            DigestException("INTEGRITY", f.severity.value, f.first_at, f"{f.kind}: {f.message}", f.evidence)
        )
    exceptions.sort(key=lambda x: (x.at is None, x.at.isoformat() if x.at else "", x.kind, x.summary))

    return BatchDigest(
        batch_id=batch_id,
        site_id=home.site_id if home else None,
        module_id=home.module_id if home else None,
        lane=home.lane if home else None,
        product_code=step_events[0].product_code if step_events else None,
        status=status,
        started_at=started_at,
        ended_at=ended_at,
        steps=tuple(digest_steps),
        deviations=tuple(digest_deviations),
        drift=tuple(digest_drift),
        findings=tuple(digest_findings),
        exceptions=tuple(exceptions),
    )
