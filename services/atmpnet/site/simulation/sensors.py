"""Sensor parameters, their limits, and the statistics of one window on one lane.

Culture steps (activation, transduction, expansion) measure temperature, pH, dissolved oxygen and
CO2 at 37 °C; the other on-module steps measure only the process temperature at room level.
Normal windows stay inside the alert limits; an excursion, sensor noise or a data gap (each
planned with its deviation) shapes the windows it overlaps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from atmpnet.contract.events import ProcessStep

SAMPLE_SECONDS = 10  # one sample every 10 s


@dataclass(frozen=True)
class ParameterSpec:
    """One measured parameter in one process phase, with its setpoint, noise and limits."""

    name: str
    unit: str
    setpoint: float
    noise: float
    alert: tuple[float, float]
    action: tuple[float, float]


CULTURE_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("temperature_c", "Cel", 37.0, 0.05, (36.5, 37.5), (36.0, 38.0)),
    ParameterSpec("ph", "pH", 7.2, 0.015, (7.0, 7.4), (6.9, 7.5)),
    ParameterSpec("dissolved_oxygen_pct", "%", 42.0, 1.2, (30.0, 60.0), (20.0, 70.0)),
    ParameterSpec("co2_pct", "%", 5.0, 0.04, (4.5, 5.5), (4.0, 6.0)),
)
PROCESSING_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("temperature_c", "Cel", 21.0, 0.15, (18.0, 25.0), (15.0, 28.0)),
)
CULTURE_STEPS = frozenset({ProcessStep.ACTIVATION, ProcessStep.TRANSDUCTION, ProcessStep.EXPANSION})


def parameters_for(step: ProcessStep) -> tuple[ParameterSpec, ...]:
    """The parameters measured on the lane during ``step``."""
    return CULTURE_PARAMETERS if step in CULTURE_STEPS else PROCESSING_PARAMETERS


class EffectKind(Enum):
    """What shapes a lane's sensor windows for a while."""

    TRANSIENT = "transient"  # beyond the alert limit, inside the action limit
    SUSTAINED = "sustained"  # beyond the action limit
    NOISE = "noise"  # a faulty or noisy sensor
    GAP = "gap"  # no data at all (every parameter of the lane)


@dataclass(frozen=True)
class SensorEffect:
    """An interval [start, end) in which a lane's parameter (or all, for a gap) is abnormal."""

    start: int
    end: int
    kind: EffectKind
    parameter: str | None = None
    peak: float = 0.0  # the excursion's extreme value


def excursion_peak(spec: ParameterSpec, kind: EffectKind, high: bool, rng: random.Random) -> float:
    """An extreme value consistent with ``kind``: between alert and action, or beyond action."""
    if kind is EffectKind.SUSTAINED:
        span = spec.action[1] - spec.action[0]
        beyond = rng.uniform(0.02, 0.10) * span
        return round(spec.action[1] + beyond if high else spec.action[0] - beyond, 3)
    low_gap = spec.action[0] + 0.25 * (spec.alert[0] - spec.action[0])
    high_gap = spec.action[1] - 0.25 * (spec.action[1] - spec.alert[1])
    return round(rng.uniform(spec.alert[1], high_gap) if high else rng.uniform(low_gap, spec.alert[0]), 3)


WindowStats = tuple[int, float, float, float, float, float, int, int]
"""count, min, max, mean, stddev, last, samples outside alert, samples outside action."""


def normal_window(spec: ParameterSpec, count: int, rng: random.Random) -> WindowStats:
    """A window in control: every sample inside the alert limits."""
    random_ = rng.random
    sd = spec.noise * (0.8 + 0.4 * random_())
    mean = spec.setpoint + spec.noise * 0.3 * (2.0 * random_() - 1.0)
    lo = mean - sd * (1.0 + random_())
    hi = mean + sd * (1.0 + random_())
    last = lo + (hi - lo) * random_()
    return (count, round(lo, 4), round(hi, 4), round(mean, 4), round(sd, 4), round(last, 4), 0, 0)


def effect_window(
    spec: ParameterSpec, count: int, effect: SensorEffect, ws: int, we: int, rng: random.Random
) -> WindowStats:
    """A window that overlaps an excursion or a sensor fault."""
    base = normal_window(spec, count, rng)
    _, lo, hi, mean, sd, last, _, _ = base
    if effect.kind is EffectKind.NOISE:
        sd = sd * rng.uniform(6.0, 12.0)
        lo, hi = mean - 3.0 * sd, mean + 3.0 * sd
        last = lo + (hi - lo) * rng.random()
        out_alert = out_action = 0
        if lo < spec.alert[0] or hi > spec.alert[1]:
            out_alert = max(1, int(count * rng.uniform(0.01, 0.1)))
            if lo < spec.action[0] or hi > spec.action[1]:
                out_action = rng.randint(0, out_alert)
        return (
            count,
            round(lo, 4),
            round(hi, 4),
            round(mean, 4),
            round(sd, 4),
            round(last, 4),
            out_alert,
            out_action,
        )
    share = (min(we, effect.end) - max(ws, effect.start)) / (we - ws)
    outside = min(count, max(1, int(share * count)))
    peak = effect.peak
    mean = (1.0 - share) * mean + share * peak
    if peak > hi:
        hi = peak
    else:
        lo = peak
    last = peak if effect.end > we else last
    sd = sd + abs(peak - spec.setpoint) * share**0.5
    out_action = outside if effect.kind is EffectKind.SUSTAINED else 0
    return (
        count,
        round(lo, 4),
        round(hi, 4),
        round(min(max(mean, lo), hi), 4),
        round(sd, 4),
        round(last, 4),
        outside,
        out_action,
    )
