"""One valid example of every event type: for docs, the sample run, OpenAPI and tests."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid5

from atmpnet.contract.events import (
    BatchStep,
    Component,
    ComponentKind,
    DetectionSource,
    Deviation,
    DeviationTransition,
    Envelope,
    Event,
    ModuleConfiguration,
    ProcessStep,
    Producer,
    ProducerKind,
    SensorSummary,
    StepResults,
    StepTransition,
    ValidatedBaseline,
)

_NAMESPACE = UUID("6f1c7a52-0d7e-4c55-9a8e-1f0b7d1c2a10")
EXAMPLE_TIME = datetime(2026, 11, 2, 9, 30, 0, 123456, tzinfo=UTC)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _envelope(
    name: str,
    event_type: type[Event],
    *,
    at: datetime,
    sequence: int,
    producer: Producer,
    site_id: str | None = "site-boston",
    module_id: str | None = "bos-m01",
    lane: int | None = None,
    batch_id: str | None = None,
) -> Envelope:
    return Envelope(
        event_id=uuid5(_NAMESPACE, f"{name}@{at.isoformat()}"),
        site_id=site_id,
        module_id=module_id,
        lane=lane,
        batch_id=batch_id,
        occurred_at=at,
        published_at=at + timedelta(milliseconds=850),
        sequence=sequence,
        producer=producer,
        schema_version=event_type.SCHEMA_VERSION,
    )


def example_components(version: str = "4.2.1") -> list[Component]:
    """A module type's components at a given control-software version."""
    return [
        Component(
            kind=ComponentKind.CONTROL_SOFTWARE,
            name="controller",
            version=version,
            content_hash=_hash(f"controller {version}"),
        ),
        Component(
            kind=ComponentKind.FIRMWARE,
            name="pump-firmware",
            version="2.0.7",
            content_hash=_hash("pump-firmware 2.0.7"),
        ),
        Component(
            kind=ComponentKind.RECIPE,
            name="cart-cd19-recipe",
            version="R12",
            content_hash=_hash("cart-cd19-recipe R12"),
        ),
        Component(
            kind=ComponentKind.ANALYTICS_MODEL,
            name="viability-model",
            version="2026.09",
            content_hash=_hash("viability-model 2026.09"),
        ),
    ]


def example_events(at: datetime = EXAMPLE_TIME) -> list[Event]:
    """One realistic event of every type, all valid, deterministic for a given time."""
    controller = Producer(kind=ProducerKind.MODULE_CONTROLLER, id="ctl-SN4471", software_version="4.2.1")
    lane, batch = 2, "B-2026-00417"
    return [
        BatchStep(
            envelope=_envelope(
                "step", BatchStep, at=at, sequence=1041, producer=controller, lane=lane, batch_id=batch
            ),
            transition=StepTransition.COMPLETED,
            step=ProcessStep.EXPANSION,
            product_code="CART-CD19",
            results=StepResults(viable_cell_count=2.4e9, viability_percent=93.5, volume_ml=480.0),
            performed_by="op-jsmith",
        ),
        SensorSummary(
            envelope=_envelope(
                "sensor", SensorSummary, at=at, sequence=1042, producer=controller, lane=lane, batch_id=batch
            ),
            window_start=at - timedelta(minutes=1),
            window_end=at,
            parameter="temperature",
            unit="Cel",
            count=60,
            min=36.6,
            max=37.3,
            mean=37.02,
            stddev=0.11,
            last=37.0,
            alert_low=36.5,
            alert_high=37.5,
            action_low=36.0,
            action_high=38.0,
        ),
        Deviation(
            envelope=_envelope(
                "deviation", Deviation, at=at, sequence=1043, producer=controller, lane=lane, batch_id=batch
            ),
            deviation_id="DEV-BOS-2026-0193",
            transition=DeviationTransition.RAISED,
            step=ProcessStep.EXPANSION,
            parameter="dissolved_oxygen",
            observed_value=31.5,
            unit="%",
            limit_low=35.0,
            limit_high=60.0,
            duration_seconds=540.0,
            detection_source=DetectionSource.SYSTEM,
            raised_by="controller/alarm-engine",
            alarm_code="DO-LOW-02",
            description="Dissolved oxygen below the alert limit for 9 minutes during expansion.",
        ),
        ModuleConfiguration(
            envelope=_envelope("config", ModuleConfiguration, at=at, sequence=1044, producer=controller),
            module_type="closed-expansion-a",
            serial_number="SN4471",
            lanes=4,
            components=example_components(),
            change_reason="CC-2026-118 controller upgrade",
        ),
        ValidatedBaseline(
            envelope=_envelope(
                "baseline",
                ValidatedBaseline,
                at=at,
                sequence=12,
                site_id=None,
                module_id=None,
                producer=Producer(kind=ProducerKind.NETWORK_QUALITY, id="network-quality"),
            ),
            baseline_id="VB-CEA-2026-04",
            module_type="closed-expansion-a",
            components=example_components(),
            approved_by="qa-mlopez",
            approved_at=at - timedelta(days=3),
            effective_from=at - timedelta(days=1),
            change_reference="CC-2026-118",
        ),
    ]


def example_derived_events(at: datetime = EXAMPLE_TIME) -> list[Event]:
    """One example of each derived event the view projector publishes (triage, drift)."""
    from atmpnet.contract.events import (
        ComponentStatus,
        ConfigDrift,
        DeviationClass,
        DeviationStatus,
        DeviationTriage,
        DriftChange,
        DriftedComponent,
        Severity,
    )

    processor = Producer(kind=ProducerKind.PROCESSOR, id="atmpnet-views")
    return [
        DeviationTriage(
            envelope=_envelope(
                "triage",
                DeviationTriage,
                at=at,
                sequence=1,
                producer=processor,
                lane=2,
                batch_id="B-2026-00417",
            ),
            deviation_id="DEV-BOS-2026-0193",
            status=DeviationStatus.OPEN,
            deviation_class=DeviationClass.PROCESS_EXCURSION,
            severity=Severity.MINOR,
            priority=3,
            raised_at=at,
            due_at=at + timedelta(days=30),
            step=ProcessStep.EXPANSION,
            parameter="dissolved_oxygen",
            alarm_code="PRC-DO-LOW",
            software_versions="controller=4.2.1",
            module_cluster="bos-m01/dissolved_oxygen/DEV-BOS-2026-0193",
            version_cluster="dissolved_oxygen@controller=4.2.1",
        ),
        ConfigDrift(
            envelope=_envelope("drift", ConfigDrift, at=at, sequence=1, producer=processor),
            change=DriftChange.OPENED,
            module_type="closed-expansion-a",
            opened_at=at,
            components=[
                DriftedComponent(
                    name="controller",
                    kind="CONTROL_SOFTWARE",
                    running_version="4.3.0",
                    baseline_version="4.2.1",
                    status=ComponentStatus.DRIFTED,
                )
            ],
        ),
    ]
