"""Pydantic models of every event, mirroring ``schemas/`` field for field.

A contract test fails if a model and its Avro schema drift apart. Models are frozen:
an event is a fact and is never altered once made.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from atmpnet.errors import EventValidationError, FieldError


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
Ident = Annotated[str, Field(min_length=1, max_length=128)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Finite = Annotated[float, Field(allow_inf_nan=False)]
# Avro int and long ranges: Java consumers and Int32/Int64 columns hold no more
AvroInt = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
AvroLong = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


E = TypeVar("E", bound="Event")


class RuleViolation(ValueError):
    """A cross-field rule broken at ``path``; becomes a FieldError with that path."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ProducerKind(StrEnum):
    """Kinds of system that produce events."""

    MODULE_CONTROLLER = "MODULE_CONTROLLER"
    SITE_MES = "SITE_MES"
    HISTORIAN = "HISTORIAN"
    INGEST_GATEWAY = "INGEST_GATEWAY"
    NETWORK_QUALITY = "NETWORK_QUALITY"
    SIMULATOR = "SIMULATOR"
    PROCESSOR = "PROCESSOR"
    OTHER = "OTHER"


class ProcessStep(StrEnum):
    """Steps of the autologous cell-therapy process, in process order."""

    APHERESIS_RECEIPT = "APHERESIS_RECEIPT"
    SELECTION = "SELECTION"
    ACTIVATION = "ACTIVATION"
    TRANSDUCTION = "TRANSDUCTION"
    EXPANSION = "EXPANSION"
    HARVEST = "HARVEST"
    FORMULATION = "FORMULATION"
    CRYOPRESERVATION = "CRYOPRESERVATION"
    QC_RELEASE = "QC_RELEASE"


class StepTransition(StrEnum):
    """Step lifecycle transitions."""

    STARTED = "STARTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    ABORTED = "ABORTED"


class DeviationTransition(StrEnum):
    """Deviation lifecycle transitions."""

    RAISED = "RAISED"
    UPDATED = "UPDATED"
    CLOSED = "CLOSED"


class DetectionSource(StrEnum):
    """How a deviation was detected."""

    SYSTEM = "SYSTEM"
    OPERATOR = "OPERATOR"


class ComponentKind(StrEnum):
    """Kinds of versioned software component on a module."""

    CONTROL_SOFTWARE = "CONTROL_SOFTWARE"
    FIRMWARE = "FIRMWARE"
    RECIPE = "RECIPE"
    ANALYTICS_MODEL = "ANALYTICS_MODEL"
    OTHER = "OTHER"


class ContractModel(BaseModel):
    """Base of every contract model: frozen, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Producer(ContractModel):
    """Identity of the producing system."""

    kind: ProducerKind
    id: Ident
    software_version: str | None = None


class Envelope(ContractModel):
    """Carried by every event: identity, place, time, sequence and producer."""

    event_id: UUID
    site_id: Slug | None = None
    module_id: Ident | None = None
    lane: Annotated[AvroInt, Field(ge=1, le=1024)] | None = None
    batch_id: Ident | None = None
    occurred_at: UtcDatetime
    published_at: UtcDatetime
    sequence: Annotated[AvroLong, Field(ge=1)]
    previous_hash: Sha256Hex | None = None
    producer: Producer
    schema_version: Annotated[AvroInt, Field(ge=1)]


class Event(ContractModel):
    """Base of the five event types; each names its topic, subject and record."""

    TOPIC: ClassVar[str]
    RECORD: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]
    # envelope fields this event type must carry
    REQUIRED_CONTEXT: ClassVar[tuple[str, ...]] = ()

    envelope: Envelope

    @classmethod
    def subject(cls) -> str:
        """Schema Registry subject (TopicNameStrategy)."""
        return f"{cls.TOPIC}-value"

    @model_validator(mode="after")
    def _context_present(self) -> Event:
        for name in self.REQUIRED_CONTEXT:
            if getattr(self.envelope, name) is None:
                raise RuleViolation(f"envelope.{name}", f"required for {type(self).__name__} events")
        return self

    def partition_key(self) -> str:
        """Kafka key: events with one key keep their order."""
        raise NotImplementedError

    def with_envelope(self: E, **changes: Any) -> E:
        """A copy of the event with envelope fields replaced (not re-validated)."""
        return self.model_copy(update={"envelope": self.envelope.model_copy(update=changes)})

    def to_avro(self) -> dict[str, Any]:
        """The event as the dict fastavro writes (enums as symbols, UTC datetimes, UUIDs)."""
        return self.model_dump()

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> Event:
        """Build and validate the event from a decoded Avro record."""
        return parse_event(cls, record)


class StepResults(ContractModel):
    """In-process results of a step."""

    viable_cell_count: Annotated[Finite, Field(ge=0)] | None = None
    viability_percent: Annotated[Finite, Field(ge=0, le=100)] | None = None
    volume_ml: Annotated[Finite, Field(ge=0)] | None = None


class BatchStep(Event):
    """A batch's step started, completed, failed or was aborted."""

    TOPIC = "atmp.batch-steps.v1"
    RECORD = "atmp.BatchStep"
    SCHEMA_VERSION = 2
    REQUIRED_CONTEXT = ("site_id", "module_id", "lane", "batch_id")

    transition: StepTransition
    step: ProcessStep
    product_code: Ident
    attempt: Annotated[AvroInt, Field(ge=1)] = 1
    expected_duration_minutes: Annotated[AvroInt, Field(ge=1)] | None = None
    results: StepResults | None = None
    failure_reason: str | None = None
    performed_by: Ident | None = None

    @model_validator(mode="after")
    def _failure_has_reason(self) -> BatchStep:
        ends_badly = self.transition in (StepTransition.FAILED, StepTransition.ABORTED)
        if ends_badly and not self.failure_reason:
            raise RuleViolation("failure_reason", f"required when the step is {self.transition}")
        if not ends_badly and self.failure_reason is not None:
            raise RuleViolation("failure_reason", "only FAILED or ABORTED steps have one")
        return self

    def partition_key(self) -> str:
        """Keyed by batch id: a batch's steps stay in order."""
        assert self.envelope.batch_id is not None
        return self.envelope.batch_id


class SensorSummary(Event):
    """Windowed statistics of one parameter on one lane, with its limits."""

    TOPIC = "atmp.sensor-summaries.v1"
    RECORD = "atmp.SensorSummary"
    SCHEMA_VERSION = 2
    REQUIRED_CONTEXT = ("site_id", "module_id", "lane")

    window_start: UtcDatetime
    window_end: UtcDatetime
    parameter: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    unit: Annotated[str, Field(min_length=1, max_length=32)]
    count: Annotated[AvroLong, Field(ge=0)]
    min: Finite | None = None
    max: Finite | None = None
    mean: Finite | None = None
    stddev: Annotated[Finite, Field(ge=0)] | None = None
    last: Finite | None = None
    alert_low: Finite | None = None
    alert_high: Finite | None = None
    action_low: Finite | None = None
    action_high: Finite | None = None
    samples_outside_alert: Annotated[AvroLong, Field(ge=0)] = 0
    samples_outside_action: Annotated[AvroLong, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _consistent(self) -> SensorSummary:
        if self.window_end <= self.window_start:
            raise RuleViolation("window_end", "must be after window_start")
        stats = {
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "stddev": self.stddev,
            "last": self.last,
        }
        for name, value in stats.items():
            if (value is None) != (self.count == 0):
                raise RuleViolation(name, "required when count > 0, absent when count is 0")
        if self.min is not None and self.max is not None:
            slack = 1e-9 * max(1.0, abs(self.min), abs(self.max))
            for name in ("mean", "last"):
                value = getattr(self, name)
                if not self.min - slack <= value <= self.max + slack:
                    raise RuleViolation(name, f"{value} lies outside [min {self.min}, max {self.max}]")
        for low, high in (("alert_low", "alert_high"), ("action_low", "action_high")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise RuleViolation(high, f"{hi} is below {low} {lo}")
        if self.samples_outside_alert > self.count:
            raise RuleViolation("samples_outside_alert", f"exceeds count {self.count}")
        if self.samples_outside_action > self.samples_outside_alert:
            raise RuleViolation("samples_outside_action", "exceeds samples_outside_alert")
        return self

    def partition_key(self) -> str:
        """Keyed by module and lane: a lane's windows stay in order."""
        return f"{self.envelope.module_id}/{self.envelope.lane}"


class Deviation(Event):
    """A deviation was raised, updated or closed."""

    TOPIC = "atmp.deviations.v1"
    RECORD = "atmp.Deviation"
    SCHEMA_VERSION = 2
    REQUIRED_CONTEXT = ("site_id", "module_id")

    deviation_id: Ident
    transition: DeviationTransition
    step: ProcessStep | None = None
    parameter: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")] | None = None
    observed_value: Finite | None = None
    unit: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    limit_low: Finite | None = None
    limit_high: Finite | None = None
    duration_seconds: Annotated[Finite, Field(ge=0)] | None = None
    detection_source: DetectionSource
    raised_by: Ident
    alarm_code: str | None = None
    description: Annotated[str, Field(min_length=1, max_length=4000)]
    resolution: str | None = None

    @model_validator(mode="after")
    def _closure_has_resolution(self) -> Deviation:
        if self.transition is DeviationTransition.CLOSED and not self.resolution:
            raise RuleViolation("resolution", "required when the deviation is CLOSED")
        if self.limit_low is not None and self.limit_high is not None and self.limit_low > self.limit_high:
            raise RuleViolation("limit_high", f"{self.limit_high} is below limit_low {self.limit_low}")
        return self

    def partition_key(self) -> str:
        """Keyed by batch id, else module id: a batch's deviations stay with its steps' order."""
        return self.envelope.batch_id or str(self.envelope.module_id)


class Component(ContractModel):
    """One versioned software component."""

    kind: ComponentKind
    name: Ident
    version: Annotated[str, Field(min_length=1, max_length=128)]
    content_hash: Sha256Hex


def _unique_names(components: list[Component]) -> None:
    seen: set[str] = set()
    for i, c in enumerate(components):
        if c.name in seen:
            raise RuleViolation(f"components.{i}.name", f"component {c.name!r} appears twice")
        seen.add(c.name)


class ModuleConfiguration(Event):
    """The full configuration a module runs now."""

    TOPIC = "atmp.module-configs.v1"
    RECORD = "atmp.ModuleConfiguration"
    SCHEMA_VERSION = 2
    REQUIRED_CONTEXT = ("site_id", "module_id")

    module_type: Slug
    serial_number: Ident
    lanes: Annotated[AvroInt, Field(ge=1, le=1024)]
    components: list[Component]
    change_reason: str | None = None

    @model_validator(mode="after")
    def _components_unique(self) -> ModuleConfiguration:
        _unique_names(self.components)
        return self

    def partition_key(self) -> str:
        """Keyed by module id: a module's configurations stay in order."""
        return str(self.envelope.module_id)


class ValidatedBaseline(Event):
    """A validated baseline approved by network quality for a module type."""

    TOPIC = "atmp.baselines.v1"
    RECORD = "atmp.ValidatedBaseline"
    SCHEMA_VERSION = 2

    baseline_id: Ident
    module_type: Slug
    components: list[Component]
    approved_by: Ident
    approved_at: UtcDatetime
    effective_from: UtcDatetime
    change_reference: str | None = None

    @model_validator(mode="after")
    def _components_unique(self) -> ValidatedBaseline:
        _unique_names(self.components)
        return self

    def partition_key(self) -> str:
        """Keyed by module type: a type's baselines stay in order."""
        return self.module_type


EVENT_TYPES: tuple[type[Event], ...] = (
    BatchStep,
    SensorSummary,
    Deviation,
    ModuleConfiguration,
    ValidatedBaseline,
)
EVENT_TYPE_BY_RECORD: dict[str, type[Event]] = {t.RECORD: t for t in EVENT_TYPES}


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Turn pydantic's errors into FieldErrors with dotted paths and plain reasons."""
    out = []
    for err in exc.errors(include_url=False):
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, RuleViolation):
            out.append(FieldError(cause.path, cause.reason))
            continue
        path = ".".join(str(p) for p in err["loc"])
        reason = err["msg"]
        if err["type"] == "missing":
            reason = "required"
        out.append(FieldError(path, reason))
    return out


def parse_event(event_type: type[E], data: Any) -> E:
    """Validate ``data`` as an ``event_type``; raise EventValidationError naming each bad field."""
    try:
        return event_type.model_validate(data)
    except ValidationError as exc:
        raise EventValidationError(event_type.__name__, field_errors(exc)) from exc


# --- derived events: published by the view projector (atmp.deviation-triage.v1, atmp.config-drift.v1) ---


class DeviationClass(StrEnum):
    """Triage classes of a deviation (docs/views.md)."""

    PROCESS_EXCURSION = "PROCESS_EXCURSION"
    EQUIPMENT = "EQUIPMENT"
    ENVIRONMENTAL = "ENVIRONMENTAL"
    DATA_INTEGRITY = "DATA_INTEGRITY"
    SENSOR_FAULT = "SENSOR_FAULT"
    DUPLICATE = "DUPLICATE"


class Severity(StrEnum):
    """Triage severities."""

    CRITICAL = "CRITICAL"
    MAJOR = "MAJOR"
    MINOR = "MINOR"


class DeviationStatus(StrEnum):
    """Lifecycle status of a deviation."""

    OPEN = "OPEN"
    INVESTIGATING = "INVESTIGATING"
    CLOSED = "CLOSED"


class ComponentStatus(StrEnum):
    """A module's component against the validated baseline of its type."""

    IN_BASELINE = "IN_BASELINE"
    DRIFTED = "DRIFTED"
    MISSING = "MISSING"
    UNKNOWN = "UNKNOWN"


class DriftChange(StrEnum):
    """A drift interval opened or closed."""

    OPENED = "OPENED"
    CLOSED = "CLOSED"


class DeviationTriage(Event):
    """A deviation's triage: on its first triage and on every change of status."""

    TOPIC = "atmp.deviation-triage.v1"
    RECORD = "atmp.DeviationTriage"
    SCHEMA_VERSION = 2
    REQUIRED_CONTEXT = ("site_id", "module_id")

    deviation_id: Ident
    status: DeviationStatus
    deviation_class: DeviationClass
    severity: Severity
    priority: Annotated[AvroInt, Field(ge=1, le=3)]
    raised_at: UtcDatetime
    due_at: UtcDatetime
    closed_at: UtcDatetime | None = None
    step: ProcessStep | None = None
    parameter: str | None = None
    alarm_code: str | None = None
    duplicate_of: str | None = None
    software_versions: str | None = None
    module_cluster: str | None = None
    module_cluster_size: Annotated[AvroInt, Field(ge=1)] = 1
    version_cluster: str | None = None
    version_cluster_sites: Annotated[AvroInt, Field(ge=1)] = 1

    def partition_key(self) -> str:
        """Keyed by deviation id: a deviation's triage changes stay in order."""
        return self.deviation_id


class DriftedComponent(ContractModel):
    """One component that is not in baseline."""

    name: Ident
    kind: str
    running_version: str | None = None
    baseline_version: str | None = None
    status: ComponentStatus


class ConfigDrift(Event):
    """A module's drift interval opened or closed."""

    TOPIC = "atmp.config-drift.v1"
    RECORD = "atmp.ConfigDrift"
    SCHEMA_VERSION = 2
    REQUIRED_CONTEXT = ("site_id", "module_id")

    change: DriftChange
    module_type: Slug
    opened_at: UtcDatetime
    closed_at: UtcDatetime | None = None
    components: list[DriftedComponent]

    def partition_key(self) -> str:
        """Keyed by module id: a module's drift changes stay in order."""
        return str(self.envelope.module_id)


# derived events are not input: the ingest reads EVENT_TYPES, the projector publishes these
DERIVED_EVENT_TYPES: tuple[type[Event], ...] = (DeviationTriage, ConfigDrift)
EVENT_TYPE_BY_RECORD.update({t.RECORD: t for t in DERIVED_EVENT_TYPES})
