"""Deviation planning: every class at its rate, their sensor effects, duplicates and closures.

Each planned deviation carries its whole lifecycle (raised, maybe updated, closed with a
resolution; the closure may fall after the end and so never be published). Alarm codes follow
the contract's prefixes: PRC- process excursion, EQP- equipment, ENV- environmental, DAT- data
integrity, SNS- sensor fault or noise.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

from atmpnet.contract.events import DetectionSource, ProcessStep
from atmpnet.site.simulation.batches import US_PER_DAY, US_PER_HOUR, US_PER_MINUTE, PlannedBatch, PlannedStep
from atmpnet.site.simulation.network import DeviationRates, Module, SiteProfile
from atmpnet.site.simulation.sensors import EffectKind, SensorEffect, excursion_peak, parameters_for

US_PER_SECOND = 1_000_000
SUSTAINED_SECONDS = 1800


@dataclass(frozen=True)
class PlannedDeviation:
    """One deviation's facts and lifecycle times (microseconds since the start)."""

    site_id: str
    module_id: str
    lane: int | None
    batch_id: str | None
    step: ProcessStep | None
    alarm_code: str
    description: str
    raised_at: int
    closed_at: int
    resolution: str
    updated_at: int | None = None
    parameter: str | None = None
    observed_value: float | None = None
    unit: str | None = None
    limit_low: float | None = None
    limit_high: float | None = None
    duration_seconds: float | None = None
    detection_source: DetectionSource = DetectionSource.SYSTEM
    raised_by: str = "controller/alarm-engine"
    deviation_id: str = ""
    duplicate_of: str | None = None  # intent only: the deviation this one re-raises while it is open
    ref: int = 0  # planning-time identity, before ids are given in raise order
    duplicate_ref: int | None = None


def _poisson(mean: float, rng: random.Random) -> int:
    """Poisson draw by counting exponential arrivals (means here are small)."""
    n, t = 0, rng.expovariate(1.0)
    while t < mean:
        n += 1
        t += rng.expovariate(1.0)
    return n


def _pick_step(steps: list[PlannedStep], min_len: int, rng: random.Random) -> PlannedStep | None:
    """A step chosen by its length among those at least ``min_len`` long."""
    fit = [s for s in steps if s.ended - s.started >= min_len]
    if not fit:
        return None
    return rng.choices(fit, weights=[s.ended - s.started for s in fit])[0]


def _on_lane(batch: PlannedBatch, step: PlannedStep) -> dict[str, Any]:
    """Where a batch's own deviation happens: its site, module, lane, batch and step."""
    return {
        "site_id": batch.module.site_id,
        "module_id": batch.module.module_id,
        "lane": batch.lane,
        "batch_id": batch.batch_id,
        "step": step.step,
    }


def _excursion(
    batch: PlannedBatch,
    steps: list[PlannedStep],
    kind: EffectKind,
    rng: random.Random,
    effects: list[SensorEffect],
) -> PlannedDeviation | None:
    if kind is EffectKind.SUSTAINED:
        seconds = rng.uniform(SUSTAINED_SECONDS, 4 * 3600)
    else:
        seconds = rng.uniform(60, SUSTAINED_SECONDS - 120)
    length = int(seconds * US_PER_SECOND)
    step = _pick_step(steps, length + US_PER_MINUTE, rng)
    if step is None:
        return None
    spec = rng.choice(parameters_for(step.step))
    high = rng.random() < 0.5
    peak = excursion_peak(spec, kind, high, rng)
    start = rng.randint(step.started, step.ended - length)
    effects.append(SensorEffect(start, start + length, kind, spec.name, peak))
    raised = start + length + rng.randint(5 * US_PER_SECOND, 90 * US_PER_SECOND)
    limits = spec.action if kind is EffectKind.SUSTAINED else spec.alert
    name = spec.name.split("_")[0].upper()
    which = "above the high" if high else "below the low"
    level = "action" if kind is EffectKind.SUSTAINED else "alert"
    if kind is EffectKind.SUSTAINED:
        updated = raised + rng.randint(2 * US_PER_HOUR, 12 * US_PER_HOUR)
        closed = raised + rng.randint(2 * US_PER_DAY, 10 * US_PER_DAY)
        resolution = "Investigation complete: root cause identified, CAPA opened, batch impact assessed."
    else:
        updated = None
        closed = raised + rng.randint(1 * US_PER_HOUR, 12 * US_PER_HOUR)
        resolution = "Transient alarm reviewed: returned within limits, no product impact."
    return PlannedDeviation(
        **_on_lane(batch, step),
        alarm_code=f"PRC-{name}-{'HI' if high else 'LO'}",
        description=f"{spec.name} {which} {level} limit for {seconds / 60:.0f} min "
        f"during {step.step.lower()}.",
        raised_at=raised,
        updated_at=updated,
        closed_at=closed,
        resolution=resolution,
        parameter=spec.name,
        observed_value=peak,
        unit=spec.unit,
        limit_low=limits[0],
        limit_high=limits[1],
        duration_seconds=round(seconds, 1),
    )


_SENSOR_FAULTS = (("SNS-NOISE", "noisy signal"), ("SNS-DRIFT", "probe drift"), ("SNS-FAIL", "probe failure"))
_EQUIPMENT_FAULTS = (
    ("EQP-PUMP-01", "Peristaltic pump occlusion alarm"),
    ("EQP-VALVE-03", "Pinch valve position fault"),
    ("EQP-DOOR-02", "Lane door interlock opened during processing"),
)
_ENVIRONMENTAL = (
    ("ENV-PART-05", "particles_0_5um_per_m3", "1/m3", (0.0, 352000.0), 352000.0, 900000.0),
    ("ENV-DP-01", "room_dp_pa", "Pa", (10.0, 30.0), 4.0, 9.5),
    ("ENV-RH-02", "room_humidity_pct", "%", (30.0, 60.0), 61.0, 72.0),
)
_DOWNTIME = (
    ("EQP-CTRL-OFFLINE", "Module controller offline: whole module unavailable"),
    ("EQP-POWER-01", "Module power supply fault: whole module unavailable"),
)


def _sensor_fault(
    batch: PlannedBatch, steps: list[PlannedStep], rng: random.Random, effects: list[SensorEffect]
) -> PlannedDeviation | None:
    length = rng.randint(10 * US_PER_MINUTE, 120 * US_PER_MINUTE)
    step = _pick_step(steps, length + US_PER_MINUTE, rng)
    if step is None:
        return None
    spec = rng.choice(parameters_for(step.step))
    code, what = rng.choice(_SENSOR_FAULTS)
    start = rng.randint(step.started, step.ended - length)
    effects.append(SensorEffect(start, start + length, EffectKind.NOISE, spec.name))
    raised = start + rng.randint(2 * US_PER_MINUTE, 10 * US_PER_MINUTE)
    return PlannedDeviation(
        **_on_lane(batch, step),
        alarm_code=f"{code}-{spec.name.split('_')[0].upper()}",
        description=f"{spec.name} sensor: {what}; readings unreliable.",
        raised_at=raised,
        closed_at=raised + rng.randint(4 * US_PER_HOUR, 48 * US_PER_HOUR),
        resolution="Sensor recalibrated or replaced; readings verified against a reference probe.",
        parameter=spec.name,
        unit=spec.unit,
        duration_seconds=(start + length - raised) / US_PER_SECOND if rng.random() < 0.5 else None,
    )


def _data_gap(
    batch: PlannedBatch, steps: list[PlannedStep], rng: random.Random, effects: list[SensorEffect]
) -> PlannedDeviation | None:
    length = rng.randint(10 * US_PER_MINUTE, 90 * US_PER_MINUTE)
    step = _pick_step(steps, length + US_PER_MINUTE, rng)
    if step is None:
        return None
    start = rng.randint(step.started, step.ended - length)
    effects.append(SensorEffect(start, start + length, EffectKind.GAP))
    raised = start + length + rng.randint(5 * US_PER_MINUTE, 30 * US_PER_MINUTE)
    return PlannedDeviation(
        **_on_lane(batch, step),
        alarm_code="DAT-GAP-01",
        description=f"Historian gap: no sensor data from lane {batch.lane} "
        f"for {length / US_PER_MINUTE:.0f} min.",
        raised_at=raised,
        updated_at=raised + rng.randint(1 * US_PER_HOUR, 8 * US_PER_HOUR),
        closed_at=raised + rng.randint(1 * US_PER_DAY, 3 * US_PER_DAY),
        resolution="Data gap documented; controller buffer reconciled, audit trail annotated.",
        duration_seconds=length / US_PER_SECOND,
        raised_by="historian/completeness-check",
    )


def _equipment(batch: PlannedBatch, steps: list[PlannedStep], rng: random.Random) -> PlannedDeviation | None:
    step = _pick_step(steps, 2 * US_PER_MINUTE, rng)
    if step is None:
        return None
    code, what = rng.choice(_EQUIPMENT_FAULTS)
    raised = rng.randint(step.started, step.ended - US_PER_MINUTE)
    return PlannedDeviation(
        **_on_lane(batch, step),
        alarm_code=code,
        description=f"{what} on lane {batch.lane}.",
        raised_at=raised,
        updated_at=raised + rng.randint(1 * US_PER_HOUR, 6 * US_PER_HOUR),
        closed_at=raised + rng.randint(6 * US_PER_HOUR, 3 * US_PER_DAY),
        resolution="Equipment fault cleared by maintenance; function verified, batch impact assessed.",
    )


def _duplicate(original: PlannedDeviation, rng: random.Random) -> PlannedDeviation:
    raised = original.raised_at + rng.randint(30 * US_PER_SECOND, 20 * US_PER_MINUTE)
    assert raised < original.closed_at
    return replace(
        original,
        raised_at=raised,
        updated_at=None,
        closed_at=raised + rng.randint(1 * US_PER_HOUR, 8 * US_PER_HOUR),
        description="Re-raised: " + original.description,
        resolution="Closed as a duplicate of an open deviation with the same alarm.",
        ref=original.ref + 1,
        duplicate_ref=original.ref,
    )


def _environmental(
    profile: SiteProfile, modules: list[Module], end: int, rng: random.Random
) -> PlannedDeviation:
    code, parameter, unit, limits, low_obs, high_obs = rng.choice(_ENVIRONMENTAL)
    module = rng.choice(modules)
    raised = rng.randint(0, end - 1)
    return PlannedDeviation(
        site_id=profile.site_id,
        module_id=module.module_id,
        lane=None,
        batch_id=None,
        step=None,
        alarm_code=code,
        description=f"Cleanroom monitoring: {parameter} outside limits in the room of {module.module_id}.",
        raised_at=raised,
        updated_at=raised + rng.randint(1 * US_PER_HOUR, 12 * US_PER_HOUR),
        closed_at=raised + rng.randint(1 * US_PER_DAY, 5 * US_PER_DAY),
        resolution="Room cleaned and re-sampled within limits; impact on open processes assessed.",
        parameter=parameter,
        observed_value=round(rng.uniform(low_obs, high_obs), 1),
        unit=unit,
        limit_low=limits[0],
        limit_high=limits[1],
        detection_source=DetectionSource.OPERATOR if rng.random() < 0.3 else DetectionSource.SYSTEM,
        raised_by="ems/room-monitor",
    )


def _batch_deviations(
    batch: PlannedBatch,
    rates: DeviationRates,
    end: int,
    rng: random.Random,
    effects: dict[tuple[str, int], list[SensorEffect]],
) -> list[tuple[PlannedDeviation | None, bool]]:
    """The batch's own deviations (and whether each may be re-raised as a duplicate)."""
    steps = []
    for s in batch.on_module_steps():
        stop = min(s.ended, end)
        if s.started < stop:
            steps.append(PlannedStep(s.step, s.started, stop, s.outcome, s.expected_minutes))
    if not steps:
        return []
    out: list[tuple[PlannedDeviation | None, bool]] = []
    lane_effects = effects[(batch.module.module_id, batch.lane)]
    busy_days = (steps[-1].ended - steps[0].started) / US_PER_DAY
    for _ in range(_poisson(rates.sustained_excursions_per_batch, rng)):
        out.append((_excursion(batch, steps, EffectKind.SUSTAINED, rng, lane_effects), True))
    for _ in range(_poisson(rates.transient_alarms_per_lane_day * busy_days, rng)):
        out.append((_excursion(batch, steps, EffectKind.TRANSIENT, rng, lane_effects), True))
    for _ in range(_poisson(rates.sensor_faults_per_lane_day * busy_days, rng)):
        out.append((_sensor_fault(batch, steps, rng, lane_effects), False))
    for _ in range(_poisson(rates.data_gaps_per_lane_day * busy_days, rng)):
        out.append((_data_gap(batch, steps, rng, lane_effects), False))
    for _ in range(_poisson(rates.equipment_faults_per_batch, rng)):
        out.append((_equipment(batch, steps, rng), True))
    return out


def plan_site_deviations(
    profile: SiteProfile,
    modules: list[Module],
    batches: list[PlannedBatch],
    downtimes: dict[str, list[tuple[int, int]]],
    end: int,
    rng: random.Random,
) -> tuple[list[PlannedDeviation], dict[tuple[str, int], list[SensorEffect]]]:
    """The site's deviations (ids in raise order) and the sensor effects per (module, lane)."""
    rates = profile.deviation_rates
    deviations: list[PlannedDeviation] = []
    effects: dict[tuple[str, int], list[SensorEffect]] = defaultdict(list)

    def add(dev: PlannedDeviation | None, may_repeat: bool) -> None:
        if dev is None:
            return
        dev = replace(dev, ref=2 * len(deviations))
        deviations.append(dev)
        if may_repeat and rng.random() < rates.duplicate_share:
            deviations.append(_duplicate(dev, rng))

    for batch in batches:
        for dev, may_repeat in _batch_deviations(batch, rates, end, rng, effects):
            add(dev, may_repeat)

    for module in modules:
        for start, stop in downtimes.get(module.module_id, []):
            code, what = rng.choice(_DOWNTIME)
            add(
                PlannedDeviation(
                    site_id=profile.site_id,
                    module_id=module.module_id,
                    lane=None,
                    batch_id=None,
                    step=None,
                    alarm_code=code,
                    description=what + ".",
                    raised_at=start,
                    updated_at=start + (stop - start) // 2,
                    closed_at=stop,
                    resolution="Module repaired and requalified; released back to production.",
                ),
                False,
            )

    environmental = _poisson(rates.environmental_per_site_day * end / US_PER_DAY, rng) if modules else 0
    for _ in range(environmental):
        add(_environmental(profile, modules, end, rng), False)

    deviations = [d for d in deviations if d.raised_at < end]
    deviations.sort(key=lambda d: (d.raised_at, d.module_id, d.alarm_code))
    prefix = f"DEV-{profile.site_id.upper()}-"
    ids = {d.ref: f"{prefix}{n:05d}" for n, d in enumerate(deviations, 1)}
    out = [
        replace(
            d,
            deviation_id=ids[d.ref],
            duplicate_of=ids.get(d.duplicate_ref) if d.duplicate_ref is not None else None,
        )
        for d in deviations
    ]
    for lane_effects in effects.values():
        lane_effects.sort(key=lambda e: (e.start, e.end))
    return out, dict(effects)
