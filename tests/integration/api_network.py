"""A small hand-built network for the API and dashboard tests, stored through the real write path.

Two sites, three modules of one type, six batches, six deviations (one of each interesting
triage case), one drift interval that closed and one still open, one module down now, and
sensor summaries around the critical deviation. Every expected figure is stated next to the
events that make it, so a test failure points at the rule, not at a magic number.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from atmpnet.contract.codec import AvroCodec
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
    StepTransition,
    ValidatedBaseline,
)
from atmpnet.settings import ApiToken, Settings
from atmpnet.warehouse.connection import connect
from atmpnet.warehouse.event_store import StoredEvent, insert_events
from atmpnet.warehouse.migrations import apply_migrations
from atmpnet.warehouse.views import refresh_views
from clickhouse_connect.driver.client import Client
from pydantic import SecretStr

T0 = datetime(2026, 3, 1, tzinfo=UTC)
MODULE_TYPE = "cliniprep-x"
STEPS = list(ProcessStep)
DAY = timedelta(days=1)

# expected figures (see build_network)
EXPECTED: dict[str, Any] = {
    "sites": ["site-a", "site-b"],
    "lanes": {"site-a": 8, "site-b": 4},
    "down": {"site-a": 0, "site-b": 4},
    "busy": {"site-a": 1, "site-b": 0},  # A3 on a-m2 lane 1; B3's lane is on the module that is down
    "started": {"site-a": 3, "site-b": 3},
    "completed": {"site-a": 1, "site-b": 2},
    "failed": {"site-a": 1, "site-b": 0},
    "deviations": {"site-a": 4, "site-b": 2},
    "class": {
        "D1": ("PROCESS_EXCURSION", "CRITICAL", "CLOSED"),
        "D2": ("SENSOR_FAULT", "MINOR", "OPEN"),
        "D3": ("DUPLICATE", "MINOR", "OPEN"),
        "D4": ("EQUIPMENT", "MINOR", "OPEN"),
        "D5": ("ENVIRONMENTAL", "MAJOR", "CLOSED"),
        "D6": ("PROCESS_EXCURSION", "MINOR", "INVESTIGATING"),
    },
}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def components(controller: str) -> list[Component]:
    """The module type's components with a given controller version."""
    return [
        Component(
            kind=ComponentKind.CONTROL_SOFTWARE,
            name="controller",
            version=controller,
            content_hash=_hash(f"controller {controller}"),
        ),
        Component(
            kind=ComponentKind.FIRMWARE, name="pump-fw", version="2.0.7", content_hash=_hash("pump 2.0.7")
        ),
    ]


@dataclass
class NetworkBuilder:
    """Makes valid events with unique ids and per-module sequences."""

    events: list[Event] = field(default_factory=list)
    _seq: dict[str, int] = field(default_factory=dict)

    def envelope(
        self,
        at: datetime,
        *,
        site: str | None,
        module: str | None,
        lane: int | None = None,
        batch: str | None = None,
        schema_version: int = 1,
    ) -> Envelope:
        key = module or "network"
        self._seq[key] = self._seq.get(key, 0) + 1
        return Envelope(
            event_id=uuid5(NAMESPACE_URL, f"{key}/{self._seq[key]}/{at.isoformat()}/{len(self.events)}"),
            site_id=site,
            module_id=module,
            lane=lane,
            batch_id=batch,
            occurred_at=at,
            published_at=at + timedelta(seconds=1),
            sequence=self._seq[key],
            producer=Producer(kind=ProducerKind.SIMULATOR, id=f"ctl-{key}", software_version="4.2.1"),
            schema_version=schema_version,
        )

    def config(self, at: datetime, site: str, module: str, controller: str, lanes: int = 4) -> None:
        self.events.append(
            ModuleConfiguration(
                envelope=self.envelope(at, site=site, module=module),
                module_type=MODULE_TYPE,
                serial_number=f"SN-{module}",
                lanes=lanes,
                components=components(controller),
            )
        )

    def batch(
        self,
        site: str,
        module: str,
        lane: int,
        batch: str,
        start: datetime,
        until: datetime,
        fail_at: int | None = None,
    ) -> None:
        """One day per on-module step, two for QC release; events after ``until`` are not emitted."""
        t = start
        for i, step in enumerate(STEPS):
            span = 2 * DAY if step is ProcessStep.QC_RELEASE else DAY
            for transition, when in ((StepTransition.STARTED, t), (StepTransition.COMPLETED, t + span)):
                if when > until:
                    return
                failed = fail_at == i and transition is StepTransition.COMPLETED
                self.events.append(
                    BatchStep(
                        envelope=self.envelope(when, site=site, module=module, lane=lane, batch=batch),
                        transition=StepTransition.FAILED if failed else transition,
                        step=step,
                        product_code="CART-CD19",
                        expected_duration_minutes=int(span.total_seconds() // 60),
                        failure_reason="viability below 70%" if failed else None,
                    )
                )
                if failed:
                    return
            t += span

    def formulation_excursion(self, dev_id: str, transition: DeviationTransition, at: datetime) -> None:
        """An hour-long temperature excursion on site-a's A3 in FORMULATION: triaged CRITICAL."""
        self.deviation(
            dev_id,
            transition,
            at,
            site="site-a",
            module="a-m2",
            lane=1,
            batch="A3",
            step=ProcessStep.FORMULATION,
            parameter="temperature",
            alarm_code="PRC-T9",
            duration=3600,
        )

    def deviation(
        self,
        dev_id: str,
        transition: DeviationTransition,
        at: datetime,
        *,
        site: str,
        module: str,
        lane: int | None = None,
        batch: str | None = None,
        step: ProcessStep | None = None,
        parameter: str | None = None,
        alarm_code: str | None = None,
        duration: float | None = None,
    ) -> None:
        self.events.append(
            Deviation(
                envelope=self.envelope(at, site=site, module=module, lane=lane, batch=batch),
                deviation_id=dev_id,
                transition=transition,
                step=step,
                parameter=parameter,
                observed_value=39.1 if parameter else None,
                unit="Cel" if parameter else None,
                limit_low=36.0 if parameter else None,
                limit_high=38.0 if parameter else None,
                duration_seconds=duration,
                detection_source=DetectionSource.SYSTEM,
                raised_by="alarm-engine",
                alarm_code=alarm_code,
                description=f"{dev_id} {transition.value.lower()}: confidential detail",
                resolution="root cause fixed" if transition is DeviationTransition.CLOSED else None,
            )
        )


def build_network() -> list[Event]:
    """The test network; "now" (newest event) is T0 + 11.5 days."""
    b = NetworkBuilder()
    end = T0 + timedelta(days=11, hours=12)
    b.events.append(
        ValidatedBaseline(
            envelope=b.envelope(T0 - DAY, site=None, module=None),
            baseline_id="VB-1",
            module_type=MODULE_TYPE,
            components=components("4.2.1"),
            approved_by="qa",
            approved_at=T0 - 2 * DAY,
            effective_from=T0 - DAY,
        )
    )
    for site, module in (("site-a", "a-m1"), ("site-a", "a-m2"), ("site-b", "b-m1")):
        b.config(T0 - DAY, site, module, "4.2.1")
    b.config(T0 + 2 * DAY, "site-b", "b-m1", "4.2.9")  # drift opens ...
    b.config(T0 + 4 * DAY, "site-b", "b-m1", "4.2.1")  # ... and closes
    b.config(T0 + 5 * DAY, "site-a", "a-m2", "4.3.0")  # drift still open
    b.batch("site-a", "a-m1", 1, "A1", T0, end)  # completed at T0+10d
    b.batch("site-a", "a-m1", 2, "A2", T0 + DAY, end, fail_at=4)  # failed in EXPANSION at T0+6d
    b.batch("site-a", "a-m2", 1, "A3", T0 + 6 * DAY, end)  # in progress, busy (started under drift)
    b.batch("site-b", "b-m1", 1, "B1", T0, end)  # completed at T0+10d, ran during drift
    b.batch("site-b", "b-m1", 2, "B2", T0 + DAY / 2, end)  # completed at T0+10.5d
    b.batch("site-b", "b-m1", 3, "B3", T0 + 9 * DAY, end)  # in progress
    raised, updated, closed = (
        DeviationTransition.RAISED,
        DeviationTransition.UPDATED,
        DeviationTransition.CLOSED,
    )
    d1: dict[str, Any] = {
        "site": "site-a",
        "module": "a-m1",
        "lane": 1,
        "batch": "A1",
        "step": ProcessStep.EXPANSION,
    }
    b.deviation(
        "D1",
        raised,
        T0 + timedelta(days=4, hours=5),
        **d1,
        parameter="temperature",
        alarm_code="PRC-T1",
        duration=2400,
    )
    b.deviation(
        "D1", updated, T0 + timedelta(days=4, hours=12), **d1, parameter="temperature", alarm_code="PRC-T1"
    )
    b.deviation("D1", closed, T0 + 5 * DAY, **d1, parameter="temperature", alarm_code="PRC-T1")
    d2: dict[str, Any] = {
        "site": "site-a",
        "module": "a-m2",
        "lane": 1,
        "batch": "A3",
        "step": ProcessStep.SELECTION,
    }
    b.deviation("D2", raised, T0 + timedelta(days=7, hours=2), **d2, parameter="ph", alarm_code="SNS-NOISE")
    b.deviation("D3", raised, T0 + timedelta(days=7, hours=5), **d2, parameter="ph", alarm_code="SNS-NOISE")
    b.deviation("D4", raised, end, site="site-b", module="b-m1", alarm_code="EQP-POWER")
    d5: dict[str, Any] = {
        "site": "site-b",
        "module": "b-m1",
        "lane": 2,
        "batch": "B2",
        "step": ProcessStep.HARVEST,
    }
    b.deviation("D5", raised, T0 + timedelta(days=6, hours=3), **d5, alarm_code="ENV-RH")
    b.deviation("D5", closed, T0 + timedelta(days=6, hours=9), **d5, alarm_code="ENV-RH")
    d6: dict[str, Any] = {
        "site": "site-a",
        "module": "a-m1",
        "lane": 2,
        "batch": "A2",
        "step": ProcessStep.EXPANSION,
    }
    b.deviation(
        "D6", raised, T0 + timedelta(days=5, hours=1), **d6, parameter="dissolved_oxygen", duration=600
    )
    b.deviation("D6", updated, T0 + timedelta(days=5, hours=3), **d6, parameter="dissolved_oxygen")
    for hour in range(-3, 4):  # hourly temperature on a-m1 lane 1 around D1
        start = T0 + timedelta(days=4, hours=5 + hour)
        outside = 12 if hour == 0 else 0
        b.events.append(
            SensorSummary(
                envelope=b.envelope(
                    start + timedelta(hours=1), site="site-a", module="a-m1", lane=1, batch="A1"
                ),
                window_start=start,
                window_end=start + timedelta(hours=1),
                parameter="temperature",
                unit="Cel",
                count=60,
                min=36.8,
                max=39.1 if outside else 37.4,
                mean=37.6 if outside else 37.0,
                stddev=0.2,
                last=37.0,
                alert_low=36.5,
                alert_high=37.5,
                samples_outside_alert=outside,
            )
        )
    return b.events


def store(client: Client, codec: AvroCodec, events: list[Event], ingested_at: datetime | None = None) -> None:
    """Encode and write events through the event store's insert path, then refresh the views (as the
    processor does after each write)."""
    grouped: dict[type[Event], list[StoredEvent]] = {}
    for offset, event in enumerate(events):
        raw = codec.encode(event)
        stored = StoredEvent(event, int.from_bytes(raw[1:5], "big"), event.TOPIC, 0, offset, raw)
        grouped.setdefault(type(event), []).append(stored)
    insert_events(client, grouped, ingested_at or datetime.now(UTC))
    refresh_views(client)


def api_tokens(ops: str, quality: str, site_a: str) -> list[ApiToken]:
    """Tokens ops, qa and site-a; the site token configured by its digest only, as production should."""
    return [
        ApiToken(name="ops", role="operations", token=SecretStr(ops)),
        ApiToken(name="qa", role="quality", token=SecretStr(quality)),
        ApiToken(name="site-a", role="site", site_id="site-a", token_sha256=_hash(site_a)),
    ]


@contextlib.contextmanager
def scratch_database(settings: Settings, prefix: str) -> Iterator[Client]:
    """A migrated database of its own (``prefix`` + random suffix), dropped and closed afterwards."""
    client = connect(settings, f"{prefix}{uuid.uuid4().hex[:10]}")
    try:
        apply_migrations(client)
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.command(f"DROP DATABASE IF EXISTS `{client.database}`")
        client.close()
