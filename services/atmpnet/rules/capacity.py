"""Capacity: batches and lane occupancy, module downtime, utilization, and the free-lane forecast.

A lane is busy from its batch's APHERESIS_RECEIPT STARTED until the end of its
CRYOPRESERVATION step, or of the step that FAILED or was ABORTED (QC_RELEASE runs off the
module). A module is down while a whole-module EQUIPMENT deviation (no batch, no lane) is open;
that time counts as unavailable, not idle. "Now" is ``as_of``, the latest event time, never
the wall clock, so the view is a function of the events alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from atmpnet.contract.events import DeviationClass, ProcessStep, StepTransition
from atmpnet.rules.facts import ConfigFact, DeviationFact, StepFact, unique
from atmpnet.rules.stats import median
from atmpnet.rules.triage import base_class, lifecycles

STEPS = list(ProcessStep)
STEP_INDEX = {s: i for i, s in enumerate(STEPS)}
ON_MODULE_LAST = ProcessStep.CRYOPRESERVATION
ENDS = (StepTransition.COMPLETED, StepTransition.FAILED, StepTransition.ABORTED)
BAD_ENDS = (StepTransition.FAILED, StepTransition.ABORTED)
FORECAST_DAYS = 7
HOUR = 3600.0

Interval = tuple[datetime, datetime | None]


class LaneState(StrEnum):
    """What a lane is doing now."""

    BUSY = "BUSY"
    IDLE = "IDLE"
    DOWN = "DOWN"


class BatchOutcome(StrEnum):
    """Where a batch stands."""

    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


@dataclass(slots=True)
class StepSpan:
    """One attempt of one step of a batch."""

    step: ProcessStep
    attempt: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: StepTransition | None = None
    expected_duration_minutes: int | None = None

    @property
    def cycle_time(self) -> timedelta | None:
        """COMPLETED minus STARTED, for completed attempts; None unless positive.

        A completion at or before its start is a clock fault, a data-integrity matter
        (``rules.integrity``), not an observation: it stays out of the forecast medians and the
        cycle-time percentiles.
        """
        if self.outcome is StepTransition.COMPLETED and self.started_at and self.ended_at:
            took = self.ended_at - self.started_at
            return took if took > timedelta(0) else None
        return None


@dataclass(slots=True)
class Batch:
    """A batch's place, outcome and step spans, built from its step facts."""

    batch_id: str
    site_id: str
    module_id: str
    lane: int
    product_code: str
    spans: dict[tuple[ProcessStep, int], StepSpan] = field(default_factory=dict)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    failed_step: ProcessStep | None = None

    @property
    def outcome(self) -> BatchOutcome:
        """Failed if any step failed or was aborted, completed on QC_RELEASE COMPLETED."""
        if self.failed_at is not None:
            return BatchOutcome.FAILED
        if self.completed_at is not None:
            return BatchOutcome.COMPLETED
        return BatchOutcome.IN_PROGRESS

    def occupancy(self) -> Interval | None:
        """When the batch holds its lane: [first STARTED, end of cryopreservation or failure)."""
        if self.started_at is None:
            return None
        ends = [
            s.ended_at
            for s in self.spans.values()
            if s.ended_at is not None
            and (s.step is ON_MODULE_LAST or (s.outcome in BAD_ENDS and s.step is not ProcessStep.QC_RELEASE))
        ]
        if not ends and self.failed_at is not None:
            ends = [self.failed_at]
        return (self.started_at, min(ends) if ends else None)

    def current(self, as_of: datetime) -> StepSpan | None:
        """The latest step attempt started by ``as_of``."""
        started = [s for s in self.spans.values() if s.started_at is not None and s.started_at <= as_of]
        if not started:
            return None
        return max(started, key=lambda s: (s.started_at, STEP_INDEX[s.step], s.attempt))


def batches(steps: Iterable[StepFact]) -> dict[str, Batch]:
    """Every batch with at least one step fact, by batch id."""
    out: dict[str, Batch] = {}
    for f in sorted(unique(steps), key=lambda f: (f.occurred_at, f.event_id)):
        b = out.get(f.batch_id)
        if b is None:
            b = out[f.batch_id] = Batch(f.batch_id, f.site_id, f.module_id, f.lane, f.product_code)
        span = b.spans.get((f.step, f.attempt))
        if span is None:
            span = b.spans[(f.step, f.attempt)] = StepSpan(f.step, f.attempt)
        if f.transition is StepTransition.STARTED:
            if span.started_at is None:
                span.started_at = f.occurred_at
                span.expected_duration_minutes = f.expected_duration_minutes
            if f.step is ProcessStep.APHERESIS_RECEIPT and b.started_at is None:
                b.started_at = f.occurred_at
        elif span.ended_at is None:
            span.ended_at, span.outcome = f.occurred_at, f.transition
            if f.transition in BAD_ENDS and b.failed_at is None:
                b.failed_at, b.failed_step = f.occurred_at, f.step
            if f.transition is StepTransition.COMPLETED and f.step is ProcessStep.QC_RELEASE:
                b.completed_at = b.completed_at or f.occurred_at
    return out


def down_intervals(deviations: Iterable[DeviationFact]) -> dict[str, list[Interval]]:
    """Per module, when it was down: whole-module EQUIPMENT deviations, RAISED to CLOSED."""
    out: dict[str, list[Interval]] = defaultdict(list)
    for life in lifecycles(deviations).values():
        r = life.raised
        whole_module = r.batch_id is None and r.lane is None
        if whole_module and base_class(r.alarm_code, r.parameter) is DeviationClass.EQUIPMENT:
            out[r.module_id].append((r.occurred_at, life.closed_at))
    return {m: sorted(v, key=lambda i: i[0]) for m, v in out.items()}


def _clip(intervals: Iterable[Interval], start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """Intervals cut to [start, end), merged, open ends closed at ``end``."""
    cut = sorted(
        (max(a, start), min(b or end, end)) for a, b in intervals if a < end and (b is None or b > start)
    )
    merged: list[tuple[datetime, datetime]] = []
    for a, b in cut:
        if a >= b:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _minus(
    a: list[tuple[datetime, datetime]], b: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    """Merged intervals ``a`` with merged intervals ``b`` removed."""
    out = []
    for s, e in a:
        cur = s
        for bs, be in b:
            if be <= cur or bs >= e:
                continue
            if bs > cur:
                out.append((cur, bs))
            cur = max(cur, be)
        if cur < e:
            out.append((cur, e))
    return out


def _hours_by_day(intervals: list[tuple[datetime, datetime]]) -> dict[date, float]:
    out: dict[date, float] = defaultdict(float)
    for s, e in intervals:
        cur = s
        while cur < e:
            next_midnight = datetime.combine(cur.date() + timedelta(days=1), time(), tzinfo=UTC)
            stop = min(e, next_midnight)
            out[cur.date()] += (stop - cur).total_seconds() / HOUR
            cur = stop
    return out


@dataclass(frozen=True, slots=True)
class LaneRef:
    """A lane of a module at a site."""

    site_id: str
    module_id: str
    lane: int


def lanes(configs: Iterable[ConfigFact], steps: Iterable[Batch]) -> list[LaneRef]:
    """Lanes 1..n of each module's latest configuration, plus any lane a batch ran on."""
    latest: dict[str, ConfigFact] = {}
    for c in unique(configs):
        if c.module_id not in latest or c.order_key() > latest[c.module_id].order_key():
            latest[c.module_id] = c
    found = {LaneRef(c.site_id, c.module_id, n) for c in latest.values() for n in range(1, c.lanes + 1)}
    found |= {LaneRef(b.site_id, b.module_id, b.lane) for b in steps}
    return sorted(found, key=lambda r: (r.site_id, r.module_id, r.lane))


def module_starts(configs: Iterable[ConfigFact], steps: Iterable[StepFact]) -> dict[str, datetime]:
    """Per module, when it is first seen: its first configuration or batch step, whichever is earlier.

    A module commissioned later in the observed period has no lane-hours before then (its
    lanes were not available, not idle). A batch step counts too, so that a configuration that
    arrives with a skewed clock never cuts off busy time.
    """
    out: dict[str, datetime] = {}
    for module_id, t in [
        *((c.module_id, c.occurred_at) for c in configs),
        *((f.module_id, f.occurred_at) for f in steps),
    ]:
        if module_id not in out or t < out[module_id]:
            out[module_id] = t
    return out


@dataclass(frozen=True, slots=True)
class LaneNow:
    """A lane's state at ``as_of``."""

    lane: LaneRef
    state: LaneState
    batch_id: str | None
    step: ProcessStep | None
    since: datetime | None
    expected_free_at: datetime | None


@dataclass(frozen=True, slots=True)
class LaneDay:
    """One lane's hours on one UTC day, within the observed period."""

    lane: LaneRef
    day: date
    busy_hours: float
    down_hours: float
    idle_hours: float

    @property
    def utilization(self) -> float | None:
        """Busy over available (busy + idle) lane-hours."""
        available = self.busy_hours + self.idle_hours
        return self.busy_hours / available if available > 0 else None


@dataclass(frozen=True, slots=True)
class SiteDay:
    """Batches started, completed and failed at a site on a UTC day."""

    site_id: str
    day: date
    started: int
    completed: int
    failed: int


@dataclass(frozen=True, slots=True)
class Forecast:
    """Lanes expected free at a site ``days_ahead`` days after ``as_of``."""

    site_id: str
    days_ahead: int
    horizon: datetime
    lanes_total: int
    lanes_free: int


@dataclass(frozen=True, slots=True)
class CapacityResult:
    """Everything the capacity view holds."""

    as_of: datetime
    batches: dict[str, Batch]
    lanes_now: list[LaneNow]
    lane_days: list[LaneDay]
    site_days: list[SiteDay]
    in_progress_by_step: dict[tuple[str, ProcessStep], int]
    forecast: list[Forecast]
    expected_step_hours: dict[ProcessStep, float]


def expected_step_hours(all_batches: Iterable[Batch]) -> dict[ProcessStep, float]:
    """Per step, the network median of observed (positive) cycle times; else of the announced durations."""
    observed: dict[ProcessStep, list[float]] = defaultdict(list)
    announced: dict[ProcessStep, list[float]] = defaultdict(list)
    for b in all_batches:
        for s in b.spans.values():
            if s.cycle_time is not None:
                observed[s.step].append(s.cycle_time.total_seconds() / HOUR)
            if s.expected_duration_minutes is not None:
                announced[s.step].append(s.expected_duration_minutes / 60)
    out = {}
    for step in STEPS:
        value = median(observed[step]) if observed[step] else median(announced[step])
        out[step] = value if value is not None else 0.0
    return out


def expected_free_at(b: Batch, as_of: datetime, expected: dict[ProcessStep, float]) -> datetime:
    """When the batch is expected to release its lane: rest of its step plus the later on-module steps."""
    cur = b.current(as_of)
    if cur is None:
        return as_of
    hours = 0.0
    if cur.ended_at is None or cur.ended_at > as_of:
        announced = cur.expected_duration_minutes
        own = announced / 60 if announced is not None else expected[cur.step]
        assert cur.started_at is not None
        hours += max(0.0, own - (as_of - cur.started_at).total_seconds() / HOUR)
    for step in STEPS[STEP_INDEX[cur.step] + 1 : STEP_INDEX[ON_MODULE_LAST] + 1]:
        hours += expected[step]
    return as_of + timedelta(hours=hours)


def capacity(  # noqa: PLR0912
    steps: Iterable[StepFact],
    deviations: Iterable[DeviationFact],
    configs: Iterable[ConfigFact],
    as_of: datetime,
    observed_from: datetime,
) -> CapacityResult:
    """The capacity view at ``as_of``; lane-days cover [observed_from, as_of).

    Each lane's observed window starts no earlier than its module's first configuration or
    batch step (``module_starts``).
    """
    steps, configs = list(steps), list(configs)  # each read twice
    all_batches = batches(steps)
    down = down_intervals(deviations)
    refs = lanes(configs, all_batches.values())
    first_seen = module_starts(configs, steps)
    expected = expected_step_hours(all_batches.values())

    occupancy: dict[LaneRef, list[tuple[Interval, Batch]]] = defaultdict(list)
    for b in all_batches.values():
        occ = b.occupancy()
        if occ is not None:
            occupancy[LaneRef(b.site_id, b.module_id, b.lane)].append((occ, b))

    lanes_now, lane_days = [], []
    for ref in refs:
        start = max(observed_from, first_seen.get(ref.module_id, observed_from))
        busy = _clip([o for o, _ in occupancy[ref]], start, as_of)
        down_all = _clip(down.get(ref.module_id, []), start, as_of)
        down_free = _minus(down_all, busy)
        busy_h, down_h = _hours_by_day(busy), _hours_by_day(down_free)
        window_h = _hours_by_day([(start, as_of)])
        for day in sorted(window_h):
            b_h, d_h = busy_h.get(day, 0.0), down_h.get(day, 0.0)
            lane_days.append(LaneDay(ref, day, b_h, d_h, max(0.0, window_h[day] - b_h - d_h)))
        holder = next(
            (b for (s, e), b in occupancy[ref] if s <= as_of and (e is None or e > as_of)),
            None,
        )
        is_down = any(s <= as_of and (e is None or e > as_of) for s, e in down.get(ref.module_id, []))
        if is_down:
            since = max(s for s, e in down[ref.module_id] if s <= as_of and (e is None or e > as_of))
            held = holder.batch_id if holder else None
            lanes_now.append(LaneNow(ref, LaneState.DOWN, held, None, since, None))
        elif holder is not None:
            cur = holder.current(as_of)
            lanes_now.append(
                LaneNow(
                    ref,
                    LaneState.BUSY,
                    holder.batch_id,
                    cur.step if cur else None,
                    holder.started_at,
                    expected_free_at(holder, as_of, expected),
                )
            )
        else:
            lanes_now.append(LaneNow(ref, LaneState.IDLE, None, None, None, as_of))

    counts: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0, 0, 0])
    in_progress: dict[tuple[str, ProcessStep], int] = defaultdict(int)
    for b in all_batches.values():
        if b.started_at is not None:
            counts[(b.site_id, b.started_at.date())][0] += 1
        if b.outcome is BatchOutcome.COMPLETED and b.completed_at is not None:
            counts[(b.site_id, b.completed_at.date())][1] += 1
        if b.failed_at is not None:
            counts[(b.site_id, b.failed_at.date())][2] += 1
        if b.outcome is BatchOutcome.IN_PROGRESS and b.started_at is not None:
            cur = b.current(as_of)
            if cur is not None:
                in_progress[(b.site_id, cur.step)] += 1
    site_days = [SiteDay(site, day, *c) for (site, day), c in sorted(counts.items())]

    forecast = []
    by_site: dict[str, list[LaneNow]] = defaultdict(list)
    for ln in lanes_now:
        by_site[ln.lane.site_id].append(ln)
    for site, site_lanes in sorted(by_site.items()):
        for d in range(1, FORECAST_DAYS + 1):
            horizon = as_of + timedelta(days=d)
            free = sum(
                1
                for ln in site_lanes
                if ln.state is LaneState.IDLE
                or (
                    ln.state is LaneState.BUSY
                    and ln.expected_free_at is not None
                    and ln.expected_free_at <= horizon
                )
            )
            forecast.append(Forecast(site, d, horizon, len(site_lanes), free))
    return CapacityResult(
        as_of, all_batches, lanes_now, lane_days, site_days, dict(in_progress), forecast, expected
    )
