"""Small builders of facts for rule tests: times are hours after T0."""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime, timedelta

from atmpnet.contract.events import ComponentKind, DeviationTransition, ProcessStep, StepTransition
from atmpnet.rules.facts import BaselineFact, ComponentFact, ConfigFact, DeviationFact, StepFact

T0 = datetime(2026, 3, 2, tzinfo=UTC)
_ids = itertools.count(1)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def eid() -> str:
    return f"00000000-0000-4000-8000-{next(_ids):012d}"


def step(
    batch: str,
    s: ProcessStep,
    tr: StepTransition,
    hours: float,
    *,
    site: str = "site-a",
    module: str = "site-a-m01",
    lane: int = 1,
    attempt: int = 1,
    expected_minutes: int | None = None,
) -> StepFact:
    return StepFact(
        eid(), site, module, lane, batch, s, tr, attempt, at(hours), "CART-CD19", expected_minutes
    )


def batch_run(
    batch: str,
    start: float,
    hours_per_step: float = 10.0,
    *,
    fail_at: ProcessStep | None = None,
    until: ProcessStep | None = None,
    **where: object,
) -> list[StepFact]:
    """Steps back to back from ``start``; fail at ``fail_at`` or stop (running) at ``until``."""
    out = []
    t = start
    for s in ProcessStep:
        out.append(step(batch, s, StepTransition.STARTED, t, **where))  # type: ignore[arg-type]
        if s is until:
            return out
        t += hours_per_step
        end = StepTransition.FAILED if s is fail_at else StepTransition.COMPLETED
        out.append(step(batch, s, end, t, **where))  # type: ignore[arg-type]
        if s is fail_at:
            return out
    return out


def deviation(
    dev_id: str,
    tr: DeviationTransition,
    hours: float,
    *,
    site: str = "site-a",
    module: str = "site-a-m01",
    lane: int | None = 1,
    batch: str | None = "B1",
    step_: ProcessStep | None = ProcessStep.EXPANSION,
    parameter: str | None = "temperature",
    alarm: str | None = "PRC-TEMP-HI",
    duration: float | None = None,
) -> DeviationFact:
    return DeviationFact(
        eid(), site, module, lane, batch, dev_id, tr, at(hours), step_, parameter, alarm, duration
    )


def comp(name: str, version: str, kind: ComponentKind = ComponentKind.CONTROL_SOFTWARE) -> ComponentFact:
    return ComponentFact(name, kind, version, hashlib.sha256(f"{name} {version}".encode()).hexdigest())


def config(
    hours: float,
    *components: ComponentFact,
    module: str = "site-a-m01",
    site: str = "site-a",
    module_type: str = "cytoloop-4",
    lanes: int = 2,
) -> ConfigFact:
    return ConfigFact(eid(), site, module, module_type, lanes, tuple(components), at(hours), 1)


def baseline(
    hours: float, *components: ComponentFact, module_type: str = "cytoloop-4", baseline_id: str = "VB1"
) -> BaselineFact:
    return BaselineFact(
        eid(), baseline_id, module_type, tuple(components), at(hours), at(hours - 1), at(hours - 2)
    )
