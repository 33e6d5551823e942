"""Integrity faults the simulator can inject, and the exact record of each one for the ground truth.

Each kind is one thing that goes wrong in a real network, chosen so that the data-integrity rules
(``rules/integrity.py``) must find it exactly once and nothing else:

- **dropped events**: a run of consecutive sensor summaries of one module is produced (sequenced
  and chained) but lost in transit: a sequence gap. Only sensor summaries are dropped: a lost
  batch step would also change the lane-occupancy evidence the segregation rules read.
- **skewed clock**: a module controller's clock is off for some hours, so ``published_at`` of
  every event of its stream published then is off by 6-12 min (late) or 10 s-10 min (early):
  beyond the reporting bound (5 min) or the negative tolerance (1 s), but within the lateness
  bound (15 min), so it is a clock-skew episode and not a late arrival.
- **batch on two lanes**: one on-module step of a batch (not its start) is reported with another
  lane of the same module.
- **lane overlap**: an operator starts an extra batch on a lane that another batch still holds;
  it is aborted 10-40 minutes later.
- **steps out of order**: a batch's next step starts before its current step has completed.

Faults are planned with their own random stream (``{seed}/{site}/faults``), so the rest of the
plan is the same with faults on (event ids, drawn in emission order, and the sequences after an
injected event do shift). Dropped events and skewed clocks are applied at
emission (they are about publishing); the segregation faults change the plan (they are about
what happened on the floor). The truth records what was injected with the sequence numbers and
event ids involved, filled in as the events are emitted.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from atmpnet.contract.events import ProcessStep, StepTransition
from atmpnet.site.simulation.batches import (
    ON_MODULE_STEPS,
    PRODUCT_CODES,
    STEP_MINUTES,
    US_PER_HOUR,
    US_PER_MINUTE,
    PlannedBatch,
    PlannedStep,
)
from atmpnet.site.simulation.network import IntegrityFaults, Module
from atmpnet.site.simulation.truth import InjectedFault

US_PER_SECOND = 1_000_000
# one emitted step event of a watched batch: (step, transition, lane, sequence, event id)
SeenStep = tuple[ProcessStep, StepTransition, int, int, str]


class FaultKind(StrEnum):
    """Kinds of injected integrity fault."""

    DROPPED_EVENTS = "DROPPED_EVENTS"
    SKEWED_CLOCK = "SKEWED_CLOCK"
    BATCH_ON_TWO_LANES = "BATCH_ON_TWO_LANES"
    LANE_OVERLAP = "LANE_OVERLAP"
    STEPS_OUT_OF_ORDER = "STEPS_OUT_OF_ORDER"


# the integrity finding (rules.integrity.FindingKind value) each fault must produce, once
EXPECTED_FINDING: dict[FaultKind, str] = {
    FaultKind.DROPPED_EVENTS: "SEQUENCE_GAP",
    FaultKind.SKEWED_CLOCK: "CLOCK_SKEW",
    FaultKind.BATCH_ON_TWO_LANES: "BATCH_ON_TWO_LANES",
    FaultKind.LANE_OVERLAP: "LANE_OVERLAP",
    FaultKind.STEPS_OUT_OF_ORDER: "STEPS_OUT_OF_ORDER",
}


@dataclass
class DropFault:
    """Consecutive sensor summaries of one module lost after ``start_us`` (publication time)."""

    site_id: str
    module_id: str
    start_us: int
    count: int
    dropped: list[tuple[int, str]] = field(default_factory=list)  # (sequence, event id)
    done: bool = False

    def takes(self, published_us: int, is_sensor: bool) -> bool:
        """Whether this event is lost; a run ends at its count or at the first other event."""
        if self.done or published_us < self.start_us:
            return False
        if not is_sensor:
            self.done = bool(self.dropped)  # the run is over once something else got through
            return False
        if len(self.dropped) + 1 >= self.count:
            self.done = True
        return True


@dataclass
class SkewFault:
    """A module controller's clock off by ``offset_us`` for events published in [start, end)."""

    site_id: str
    module_id: str
    start_us: int
    end_us: int
    offset_us: int
    affected: list[tuple[int, str]] = field(default_factory=list)  # emitted (sequence, event id)


@dataclass
class LaneSwap:
    """One step of a batch reported with another lane of its module."""

    site_id: str
    batch: PlannedBatch
    step: ProcessStep
    lane: int


@dataclass
class InjectedStart:
    """An extra batch started on a lane ``held`` still occupies, aborted soon after."""

    site_id: str
    held: PlannedBatch
    batch: PlannedBatch  # its one step: APHERESIS_RECEIPT, ABORTED


@dataclass
class StepInversion:
    """A batch whose step ``later`` started before ``earlier`` completed."""

    site_id: str
    batch: PlannedBatch
    earlier: ProcessStep
    later: ProcessStep


@dataclass
class FaultPlan:
    """The faults of a whole run, and the step events they need to name in the truth."""

    drops: dict[str, DropFault] = field(default_factory=dict)  # by module id (its stream)
    skews: dict[str, SkewFault] = field(default_factory=dict)
    swaps: list[LaneSwap] = field(default_factory=list)
    starts: list[InjectedStart] = field(default_factory=list)
    inversions: list[StepInversion] = field(default_factory=list)
    # batch id -> its emitted step events: (step, transition, lane, sequence, event id)
    seen: dict[str, list[SeenStep]] = field(default_factory=dict)

    def swapped_lane(self, batch_id: str, step: ProcessStep) -> int | None:
        """The stray lane of a batch's step, if that step is swapped."""
        for swap in self.swaps:
            if swap.batch.batch_id == batch_id and swap.step is step:
                return swap.lane
        return None

    def watched_batches(self) -> set[str]:
        """Batches whose step events are evidence of a segregation fault."""
        return (
            {s.batch.batch_id for s in self.swaps}
            | {s.held.batch_id for s in self.starts}
            | {s.batch.batch_id for s in self.starts}
            | {s.batch.batch_id for s in self.inversions}
        )


def _left_lane(batch: PlannedBatch, end: int) -> bool:
    """The batch started and left its lane (its on-module end occurred) before the end."""
    return batch.busy_end < end


def plan_site_faults(
    site_id: str,
    modules: list[Module],
    batches: list[PlannedBatch],
    end: int,
    faults: IntegrityFaults,
    rng: random.Random,
    plan: FaultPlan,
) -> None:
    """Choose this site's faults into ``plan``; step inversions change ``batches`` in place."""
    early, late = int(0.1 * end), int(0.7 * end)  # well inside the run: events follow each fault
    for module in rng.sample(modules, min(faults.dropped_runs, len(modules))):
        plan.drops[module.module_id] = DropFault(
            site_id, module.module_id, rng.randint(early, late), rng.randint(*faults.dropped_run_length)
        )
    for module in rng.sample(modules, min(faults.skewed_clocks, len(modules))):
        start = rng.randint(early, late)
        hours = rng.uniform(*faults.skew_hours)
        if rng.random() < 0.5:
            offset = rng.randint(6 * US_PER_MINUTE, 12 * US_PER_MINUTE)  # published "late"
        else:
            offset = -rng.randint(10 * US_PER_SECOND, 10 * US_PER_MINUTE)  # published "before it occurred"
        plan.skews[module.module_id] = SkewFault(
            site_id, module.module_id, start, start + int(hours * US_PER_HOUR), offset
        )

    candidates = [b for b in batches if _left_lane(b, end)]
    rng.shuffle(candidates)
    for _ in range(faults.batches_on_two_lanes):
        batch = _take(candidates, lambda b: len(_swappable(b)) > 0 and b.module.lanes > 1)
        if batch is None:
            break
        step = rng.choice(_swappable(batch))
        lane = rng.choice([n for n in range(1, batch.module.lanes + 1) if n != batch.lane])
        plan.swaps.append(LaneSwap(site_id, batch, step, lane))
    extra = len(batches)
    for _ in range(faults.lane_overlaps):
        held = _take(candidates, lambda b: b.busy_end - b.busy_start > 2 * US_PER_HOUR)
        if held is None:
            break
        extra += 1
        started = held.busy_start + int(rng.uniform(0.2, 0.8) * (held.busy_end - held.busy_start))
        aborted = min(started + rng.randint(10 * US_PER_MINUTE, 40 * US_PER_MINUTE), held.busy_end - 1)
        intruder = PlannedBatch(
            f"{site_id.upper()}-B{extra:05d}",
            held.module,
            held.lane,
            rng.choice(PRODUCT_CODES),
            held.operator,
        )
        intruder.steps.append(
            PlannedStep(
                ProcessStep.APHERESIS_RECEIPT,
                started,
                aborted,
                StepTransition.ABORTED,
                STEP_MINUTES[ProcessStep.APHERESIS_RECEIPT][2],
                failure_reason="process aborted: lane still in use by another batch",
            )
        )
        plan.starts.append(InjectedStart(site_id, held, intruder))
    for _ in range(faults.steps_out_of_order):
        batch = _take(candidates, lambda b: len(_invertible(b)) > 0)
        if batch is None:
            break
        k = rng.choice(_invertible(batch))
        earlier, later = batch.steps[k], batch.steps[k + 1]
        # the next step starts while this one is still running: 10-50% of it before its end
        later.started = earlier.ended - int(rng.uniform(0.1, 0.5) * (earlier.ended - earlier.started))
        plan.inversions.append(StepInversion(site_id, batch, earlier.step, later.step))


def _take(candidates: list[PlannedBatch], fits: Callable[[PlannedBatch], bool]) -> PlannedBatch | None:
    """Remove and return the first candidate that ``fits``; each batch carries one fault at most."""
    for i, batch in enumerate(candidates):
        if fits(batch):
            return candidates.pop(i)
    return None


def _swappable(batch: PlannedBatch) -> list[ProcessStep]:
    """On-module steps after the first: a stray lane there does not move the batch's start."""
    return [s.step for s in batch.steps[1:] if s.step in ON_MODULE_STEPS]


def _invertible(batch: PlannedBatch) -> list[int]:
    """Indices k of steps that completed and are followed by an on-module step (not the first)."""
    steps = batch.steps
    return [
        k
        for k in range(1, len(steps) - 1)
        if steps[k].outcome is StepTransition.COMPLETED and steps[k + 1].step in ON_MODULE_STEPS
    ]


def fault_records(plan: FaultPlan, site_ids: list[str]) -> dict[str, list[InjectedFault]]:
    """The truth of every injected fault that took effect, per site, once the events are emitted."""
    out: dict[str, list[InjectedFault]] = {site: [] for site in site_ids}
    for drop in plan.drops.values():
        if drop.dropped:
            sequences = [s for s, _ in drop.dropped]
            out[drop.site_id].append(
                InjectedFault(
                    kind=FaultKind.DROPPED_EVENTS,
                    finding=EXPECTED_FINDING[FaultKind.DROPPED_EVENTS],
                    site_id=drop.site_id,
                    module_id=drop.module_id,
                    stream=f"module/{drop.module_id}",
                    sequences=sequences,
                    event_ids=sorted(i for _, i in drop.dropped),
                    description=f"{len(sequences)} sensor summaries of {drop.module_id} lost in transit "
                    f"(sequence {sequences[0]} to {sequences[-1]})",
                )
            )
    for skew in plan.skews.values():
        if skew.affected:
            sequences = [s for s, _ in skew.affected]
            out[skew.site_id].append(
                InjectedFault(
                    kind=FaultKind.SKEWED_CLOCK,
                    finding=EXPECTED_FINDING[FaultKind.SKEWED_CLOCK],
                    site_id=skew.site_id,
                    module_id=skew.module_id,
                    stream=f"module/{skew.module_id}",
                    sequences=sequences,
                    event_ids=sorted(i for _, i in skew.affected),
                    description=f"controller clock of {skew.module_id} off by "
                    f"{skew.offset_us / US_PER_SECOND:+.0f} s for {len(sequences)} events "
                    f"(sequence {sequences[0]} to {sequences[-1]})",
                )
            )
    for swap in plan.swaps:
        seen = plan.seen.get(swap.batch.batch_id, [])
        evidence = [_start(seen), *(e for e in seen if e[2] == swap.lane)]
        out[swap.site_id].append(
            _segregation(
                FaultKind.BATCH_ON_TWO_LANES,
                swap.site_id,
                swap.batch,
                evidence,
                f"{swap.step} of batch {swap.batch.batch_id} reported on lane {swap.lane} "
                f"of {swap.batch.module.module_id} instead of lane {swap.batch.lane}",
            )
        )
    for start in plan.starts:
        held = plan.seen.get(start.held.batch_id, [])
        intruder = plan.seen.get(start.batch.batch_id, [])
        end = next(e for e in held if _ends_occupancy(e[0], e[1]))
        out[start.site_id].append(
            _segregation(
                FaultKind.LANE_OVERLAP,
                start.site_id,
                start.batch,
                [_start(held), end, _start(intruder)],
                f"batch {start.batch.batch_id} started on {start.held.module.module_id} lane "
                f"{start.held.lane} while batch {start.held.batch_id} held it; aborted",
            )
        )
    for inversion in plan.inversions:
        seen = plan.seen.get(inversion.batch.batch_id, [])
        completed = next(e for e in seen if e[0] is inversion.earlier and e[1] is StepTransition.COMPLETED)
        started = next(e for e in seen if e[0] is inversion.later and e[1] is StepTransition.STARTED)
        out[inversion.site_id].append(
            _segregation(
                FaultKind.STEPS_OUT_OF_ORDER,
                inversion.site_id,
                inversion.batch,
                [completed, started],
                f"{inversion.later} of batch {inversion.batch.batch_id} started before "
                f"{inversion.earlier} completed",
            )
        )
    return out


def _start(seen: list[SeenStep]) -> SeenStep:
    return next(e for e in seen if e[0] is ProcessStep.APHERESIS_RECEIPT and e[1] is StepTransition.STARTED)


def _ends_occupancy(step: ProcessStep, transition: StepTransition) -> bool:
    """The contract's end of a lane's occupancy: CRYOPRESERVATION ended, or an on-module step failed."""
    if step not in ON_MODULE_STEPS or transition is StepTransition.STARTED:
        return False
    return transition is not StepTransition.COMPLETED or step is ProcessStep.CRYOPRESERVATION


def _segregation(
    kind: FaultKind, site_id: str, batch: PlannedBatch, evidence: list[SeenStep], description: str
) -> InjectedFault:
    return InjectedFault(
        kind=kind,
        finding=EXPECTED_FINDING[kind],
        site_id=site_id,
        module_id=batch.module.module_id,
        # as the rules name it: a lane overlap is about the lane, the others about the batch
        stream=f"lane/{batch.module.module_id}/{batch.lane}"
        if kind is FaultKind.LANE_OVERLAP
        else f"batch/{batch.batch_id}",
        lane=batch.lane,
        batch_id=batch.batch_id,
        sequences=sorted({e[3] for e in evidence}),
        event_ids=sorted({e[4] for e in evidence}),
        description=description,
    )
