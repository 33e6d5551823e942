"""Batch planning: which batch runs on which lane when, its steps, and whether and where it fails.

All times are integer microseconds since the simulation start. A lane takes its next batch once
the previous one has left it (CRYOPRESERVATION ended, or the batch failed) plus cleaning and a
demand gap; no batch starts while its module is down.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from atmpnet.contract.events import ProcessStep, StepTransition
from atmpnet.site.simulation.network import Module, SiteProfile

US_PER_MINUTE = 60_000_000
US_PER_HOUR = 60 * US_PER_MINUTE
US_PER_DAY = 24 * US_PER_HOUR

# (low, high, expected) step durations in minutes: an automated closed process of about 7-12 days
# on the module, then 3-7 days of release testing off the module.
STEP_MINUTES: dict[ProcessStep, tuple[int, int, int]] = {
    ProcessStep.APHERESIS_RECEIPT: (60, 180, 120),
    ProcessStep.SELECTION: (180, 300, 240),
    ProcessStep.ACTIVATION: (1200, 1680, 1440),
    ProcessStep.TRANSDUCTION: (1200, 1680, 1440),
    ProcessStep.EXPANSION: (7200, 12960, 10080),
    ProcessStep.HARVEST: (120, 240, 180),
    ProcessStep.FORMULATION: (60, 180, 120),
    ProcessStep.CRYOPRESERVATION: (180, 300, 240),
    ProcessStep.QC_RELEASE: (4320, 10080, 7200),
}
ON_MODULE_STEPS: tuple[ProcessStep, ...] = tuple(s for s in ProcessStep if s is not ProcessStep.QC_RELEASE)

# where failures happen (weights) and why
FAILURE_WEIGHTS: dict[ProcessStep, float] = {
    ProcessStep.SELECTION: 0.10,
    ProcessStep.ACTIVATION: 0.05,
    ProcessStep.TRANSDUCTION: 0.15,
    ProcessStep.EXPANSION: 0.38,
    ProcessStep.HARVEST: 0.05,
    ProcessStep.FORMULATION: 0.03,
    ProcessStep.CRYOPRESERVATION: 0.04,
    ProcessStep.QC_RELEASE: 0.20,
}
FAILURE_REASONS: dict[ProcessStep, tuple[str, ...]] = {
    ProcessStep.SELECTION: ("CD4/CD8 recovery below specification after selection",),
    ProcessStep.ACTIVATION: ("activation marker CD25 below specification",),
    ProcessStep.TRANSDUCTION: ("transduction efficiency below specification", "vector lot hold"),
    ProcessStep.EXPANSION: (
        "insufficient expansion: viable cell count below target dose",
        "suspected microbial contamination in culture",
        "viability fell below 70% during expansion",
    ),
    ProcessStep.HARVEST: ("cell loss during harvest exceeds limit",),
    ProcessStep.FORMULATION: ("final volume outside specification",),
    ProcessStep.CRYOPRESERVATION: ("controlled-rate freezer profile deviation",),
    ProcessStep.QC_RELEASE: (
        "sterility test out of specification",
        "endotoxin above release limit",
        "vector copy number above specification",
    ),
}
ABORT_REASONS = ("process aborted: patient withdrawn from treatment", "process aborted by QA hold")
PRODUCT_CODES = ("CART-CD19", "CART-BCMA", "CART-CD22")


@dataclass
class PlannedStep:
    """One step of a batch as planned: its start, its end and how it ends."""

    step: ProcessStep
    started: int
    ended: int
    outcome: StepTransition
    expected_minutes: int
    failure_reason: str | None = None
    results: dict[str, float] | None = None


@dataclass
class PlannedBatch:
    """One batch on one lane of one module, with its steps in order."""

    batch_id: str
    module: Module
    lane: int
    product_code: str
    operator: str
    steps: list[PlannedStep] = field(default_factory=list)

    @property
    def busy_start(self) -> int:
        """When the lane becomes busy: APHERESIS_RECEIPT started."""
        return self.steps[0].started

    @property
    def busy_end(self) -> int:
        """When the lane is free again: CRYOPRESERVATION ended, or the failing step ended."""
        for s in self.steps:
            if s.step is ProcessStep.QC_RELEASE:
                break
            if s.outcome is not StepTransition.COMPLETED or s.step is ProcessStep.CRYOPRESERVATION:
                return s.ended
        raise AssertionError("a batch ends on the module")  # pragma: no cover

    @property
    def failure(self) -> PlannedStep | None:
        """The step that failed or was aborted, if any."""
        last = self.steps[-1]
        return None if last.outcome is StepTransition.COMPLETED else last

    def on_module_steps(self) -> list[PlannedStep]:
        """The steps that occupy the lane."""
        return [s for s in self.steps if s.step is not ProcessStep.QC_RELEASE]


def _results(step: ProcessStep, rng: random.Random) -> dict[str, float] | None:
    if step is ProcessStep.SELECTION:
        return {"viable_cell_count": round(rng.uniform(1.0e8, 3.0e8), -5), "viability_percent": 95.0}
    if step is ProcessStep.EXPANSION:
        return {
            "viable_cell_count": round(rng.uniform(1.0e9, 5.0e9), -6),
            "viability_percent": round(rng.uniform(85.0, 96.0), 1),
        }
    if step is ProcessStep.HARVEST:
        return {"volume_ml": round(rng.uniform(60.0, 150.0), 1)}
    if step is ProcessStep.FORMULATION:
        return {"volume_ml": round(rng.uniform(20.0, 70.0), 1)}
    return None


def plan_batch_steps(
    batch: PlannedBatch, start: int, failure_rate: float, rng: random.Random
) -> PlannedBatch:
    """Fill in the batch's steps from ``start``; with probability ``failure_rate`` one step fails."""
    fail_at: ProcessStep | None = None
    if rng.random() < failure_rate:
        fail_at = rng.choices(list(FAILURE_WEIGHTS), weights=list(FAILURE_WEIGHTS.values()))[0]
    t = start
    for step in ProcessStep:
        low, high, expected = STEP_MINUTES[step]
        if step is ProcessStep.QC_RELEASE:
            t += rng.randint(1 * US_PER_HOUR, 6 * US_PER_HOUR)  # samples travel to the QC lab
        duration = rng.randint(low * US_PER_MINUTE, high * US_PER_MINUTE)
        if step is fail_at:
            aborted = rng.random() < 0.2
            ended = t + int(duration * rng.uniform(0.1, 0.95))
            reasons = ABORT_REASONS if aborted else FAILURE_REASONS[step]
            batch.steps.append(
                PlannedStep(
                    step,
                    t,
                    ended,
                    StepTransition.ABORTED if aborted else StepTransition.FAILED,
                    expected,
                    failure_reason=rng.choice(reasons),
                )
            )
            return batch
        batch.steps.append(
            PlannedStep(
                step, t, t + duration, StepTransition.COMPLETED, expected, results=_results(step, rng)
            )
        )
        t += duration + rng.randint(5 * US_PER_MINUTE, 45 * US_PER_MINUTE)
    return batch


def plan_module_downtimes(
    module: Module, rate_per_day: float, end: int, rng: random.Random
) -> list[tuple[int, int]]:
    """Non-overlapping whole-module outages (start, end) as a Poisson process; may run past the end."""
    out: list[tuple[int, int]] = []
    if rate_per_day <= 0:
        return out
    t = 0
    while True:
        t += int(rng.expovariate(rate_per_day) * US_PER_DAY)
        if t >= end:
            return out
        duration = rng.randint(2 * US_PER_HOUR, 16 * US_PER_HOUR)
        out.append((t, t + duration))
        t += duration


def _after_downtime(t: int, downtimes: list[tuple[int, int]]) -> int:
    for start, stop in downtimes:
        if start <= t < stop:
            return stop + US_PER_HOUR  # requalification before the next start
    return t


def plan_site_batches(
    profile: SiteProfile,
    modules: list[Module],
    downtimes: dict[str, list[tuple[int, int]]],
    end: int,
    rng: random.Random,
) -> list[PlannedBatch]:
    """Every batch that starts at the site before ``end``, lane by lane, numbered in start order."""
    planned: list[PlannedBatch] = []
    gap_mean_us = profile.demand_gap_hours * US_PER_HOUR
    operators = [f"op-{profile.site_id}-{i:02d}" for i in range(1, 9)]
    for module in modules:
        for lane in range(1, module.lanes + 1):
            # lanes start empty; first batches are staggered over the first days
            t = rng.randint(0, 3 * US_PER_DAY)
            while True:
                t = _after_downtime(t, downtimes.get(module.module_id, []))
                if t >= end:
                    break
                batch = PlannedBatch("", module, lane, rng.choice(PRODUCT_CODES), rng.choice(operators))
                plan_batch_steps(batch, t, profile.failure_rate, rng)
                planned.append(batch)
                cleaning = rng.randint(2 * US_PER_HOUR, 6 * US_PER_HOUR)
                t = batch.busy_end + cleaning + int(rng.expovariate(1.0) * gap_mean_us)
    planned.sort(key=lambda b: (b.busy_start, b.module.module_id, b.lane))
    for n, batch in enumerate(planned, 1):
        batch.batch_id = f"{profile.site_id.upper()}-B{n:05d}"
    return planned
