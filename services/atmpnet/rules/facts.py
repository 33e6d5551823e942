"""Facts: the fields of each event the rules read, as small immutable records.

The projector builds them straight from event-store rows (no model validation on the hot
path); tests build them from contract events with ``from_event``. Every fact keeps its
``event_id`` so a rule can drop duplicates: the same event delivered twice is one fact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from atmpnet.contract.events import (
    BatchStep,
    ComponentKind,
    Deviation,
    DeviationTransition,
    ModuleConfiguration,
    ProcessStep,
    StepTransition,
    ValidatedBaseline,
)


class HasEventId(Protocol):
    """Anything identified by the event it came from."""

    @property
    def event_id(self) -> str:
        """The event's id."""
        ...


F = TypeVar("F", bound=HasEventId)


def unique(facts: Iterable[F]) -> list[F]:
    """One fact per event id, in event-id order: duplicates and arrival order are neutralized.

    Two deliveries of one event id carry the same event, so which copy is kept does not matter.
    """
    by_id: dict[str, F] = {}
    for f in facts:
        by_id.setdefault(f.event_id, f)
    return [by_id[k] for k in sorted(by_id)]


@dataclass(frozen=True, slots=True)
class StepFact:
    """A batch step transition."""

    event_id: str
    site_id: str
    module_id: str
    lane: int
    batch_id: str
    step: ProcessStep
    transition: StepTransition
    attempt: int
    occurred_at: datetime
    product_code: str = ""
    expected_duration_minutes: int | None = None

    @classmethod
    def from_event(cls, e: BatchStep) -> StepFact:
        """The fact of a BatchStep event."""
        env = e.envelope
        assert env.site_id
        assert env.module_id
        assert env.lane
        assert env.batch_id
        return cls(
            event_id=str(env.event_id),
            site_id=env.site_id,
            module_id=env.module_id,
            lane=env.lane,
            batch_id=env.batch_id,
            step=e.step,
            transition=e.transition,
            attempt=e.attempt,
            occurred_at=env.occurred_at,
            product_code=e.product_code,
            expected_duration_minutes=e.expected_duration_minutes,
        )


@dataclass(frozen=True, slots=True)
class DeviationFact:
    """A deviation transition."""

    event_id: str
    site_id: str
    module_id: str
    lane: int | None
    batch_id: str | None
    deviation_id: str
    transition: DeviationTransition
    occurred_at: datetime
    step: ProcessStep | None = None
    parameter: str | None = None
    alarm_code: str | None = None
    duration_seconds: float | None = None

    @classmethod
    def from_event(cls, e: Deviation) -> DeviationFact:
        """The fact of a Deviation event."""
        env = e.envelope
        assert env.site_id
        assert env.module_id
        return cls(
            event_id=str(env.event_id),
            site_id=env.site_id,
            module_id=env.module_id,
            lane=env.lane,
            batch_id=env.batch_id,
            deviation_id=e.deviation_id,
            transition=e.transition,
            occurred_at=env.occurred_at,
            step=e.step,
            parameter=e.parameter,
            alarm_code=e.alarm_code,
            duration_seconds=e.duration_seconds,
        )


@dataclass(frozen=True, slots=True)
class ComponentFact:
    """One versioned component of a configuration or a baseline."""

    name: str
    kind: ComponentKind
    version: str
    content_hash: str


@dataclass(frozen=True, slots=True)
class ConfigFact:
    """A module's full configuration from ``occurred_at`` on."""

    event_id: str
    site_id: str
    module_id: str
    module_type: str
    lanes: int
    components: tuple[ComponentFact, ...]
    occurred_at: datetime
    sequence: int = 0

    @classmethod
    def from_event(cls, e: ModuleConfiguration) -> ConfigFact:
        """The fact of a ModuleConfiguration event."""
        env = e.envelope
        assert env.site_id
        assert env.module_id
        return cls(
            event_id=str(env.event_id),
            site_id=env.site_id,
            module_id=env.module_id,
            module_type=e.module_type,
            lanes=e.lanes,
            components=tuple(ComponentFact(c.name, c.kind, c.version, c.content_hash) for c in e.components),
            occurred_at=env.occurred_at,
            sequence=env.sequence,
        )

    def order_key(self) -> tuple[datetime, int, str]:
        """Later configurations win; ties by sequence, then event id (deterministic)."""
        return (self.occurred_at, self.sequence, self.event_id)

    def control_software(self) -> str | None:
        """Versions of the control software components, ``name=version`` joined by ``;``."""
        found = sorted(
            f"{c.name}={c.version}" for c in self.components if c.kind is ComponentKind.CONTROL_SOFTWARE
        )
        return ";".join(found) or None


@dataclass(frozen=True, slots=True)
class BaselineFact:
    """A validated baseline of a module type, in force from ``effective_from``."""

    event_id: str
    baseline_id: str
    module_type: str
    components: tuple[ComponentFact, ...]
    effective_from: datetime
    approved_at: datetime
    occurred_at: datetime

    @classmethod
    def from_event(cls, e: ValidatedBaseline) -> BaselineFact:
        """The fact of a ValidatedBaseline event."""
        return cls(
            event_id=str(e.envelope.event_id),
            baseline_id=e.baseline_id,
            module_type=e.module_type,
            components=tuple(ComponentFact(c.name, c.kind, c.version, c.content_hash) for c in e.components),
            effective_from=e.effective_from,
            approved_at=e.approved_at,
            occurred_at=e.envelope.occurred_at,
        )

    def order_key(self) -> tuple[datetime, datetime, datetime, str]:
        """The latest effective baseline wins; ties by approval, then event time, then event id."""
        return (self.effective_from, self.approved_at, self.occurred_at, self.event_id)
