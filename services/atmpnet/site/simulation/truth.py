"""The ground truth a simulation writes, and the contract's deviation classification rule.

The truth is computed from what the simulator planned, not from the events it emitted; tests
check that it equals what the contract's definitions give on the emitted events.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from atmpnet.contract.events import ProcessStep
from atmpnet.site.simulation.deviations import SUSTAINED_SECONDS, PlannedDeviation

DEVIATION_CLASSES = (
    "PROCESS_EXCURSION",
    "EQUIPMENT",
    "ENVIRONMENTAL",
    "DATA_INTEGRITY",
    "SENSOR_FAULT",
    "DUPLICATE",
)
SEVERITIES = ("CRITICAL", "MAJOR", "MINOR")
_PREFIX_CLASS = {
    "PRC-": "PROCESS_EXCURSION",
    "EQP-": "EQUIPMENT",
    "ENV-": "ENVIRONMENTAL",
    "DAT-": "DATA_INTEGRITY",
    "SNS-": "SENSOR_FAULT",
}
_CRITICAL_STEPS = frozenset(
    {ProcessStep.TRANSDUCTION, ProcessStep.EXPANSION, ProcessStep.FORMULATION, ProcessStep.CRYOPRESERVATION}
)


def base_class(alarm_code: str | None, parameter: str | None) -> str:
    """Class from the alarm code prefix; without a known code, by whether a parameter is given."""
    if alarm_code:
        for prefix, name in _PREFIX_CLASS.items():
            if alarm_code.startswith(prefix):
                return name
    return "PROCESS_EXCURSION" if parameter else "EQUIPMENT"


def severity(
    klass: str, step: ProcessStep | None, duration_seconds: float | None, batch_id: str | None
) -> str:
    """The contract's severity of a deviation of class ``klass``."""
    if klass in {"DUPLICATE", "SENSOR_FAULT"}:
        return "MINOR"
    if klass == "PROCESS_EXCURSION":
        if duration_seconds is not None and duration_seconds >= SUSTAINED_SECONDS:
            return "CRITICAL" if step in _CRITICAL_STEPS else "MAJOR"
        return "MINOR"
    if klass == "EQUIPMENT":
        return "MAJOR" if batch_id else "MINOR"
    return "MAJOR"  # ENVIRONMENTAL, DATA_INTEGRITY


def classify(deviations: list[PlannedDeviation], end: int) -> dict[str, tuple[str, str]]:
    """deviation_id -> (class, severity) for those raised before ``end``, duplicates included.

    A deviation is a DUPLICATE when another with the same (module, lane, parameter, alarm code)
    was raised before it (ties by deviation id) and is not closed (closure published before the
    end, at or before this one's raise) when it is raised.
    """
    raised = sorted((d for d in deviations if d.raised_at < end), key=lambda d: (d.raised_at, d.deviation_id))
    open_until: dict[tuple[str, int | None, str | None, str], list[int]] = {}
    out: dict[str, tuple[str, str]] = {}
    for d in raised:
        key = (d.module_id, d.lane, d.parameter, d.alarm_code)
        closes = open_until.setdefault(key, [])
        duplicate = any(c > d.raised_at for c in closes)
        closes.append(d.closed_at if d.closed_at < end else end + 1)
        klass = "DUPLICATE" if duplicate else base_class(d.alarm_code, d.parameter)
        out[d.deviation_id] = (klass, severity(klass, d.step, d.duration_seconds, d.batch_id))
    return out


class DriftInterval(BaseModel):
    """One interval in which a module ran against its validated baseline."""

    model_config = ConfigDict(frozen=True)

    opened_at: datetime
    closed_at: datetime | None = None


class SiteTruth(BaseModel):
    """What happened at one site, by the contract's definitions."""

    site_id: str
    modules: list[str]
    lanes: int
    batches_started: int
    batches_completed: int
    batches_failed: int
    batches_in_progress: int
    deviations_by_class: dict[str, int]
    deviations_by_severity: dict[str, int]
    drift_intervals: dict[str, list[DriftInterval]]
    lane_busy_hours: float
    lane_busy_hours_by_lane: dict[str, float]  # "module_id/lane" -> hours


class InjectedFault(BaseModel):
    """One integrity fault the simulator injected, and what the integrity rules must find for it.

    ``finding`` is the ``rules.integrity.FindingKind`` it must produce, exactly once.
    ``sequences`` and ``event_ids`` (sorted) are, for DROPPED_EVENTS, the events that were never
    emitted (the finding names the gap ``sequences[0]..sequences[-1]``); for every other kind,
    the emitted events that show the fault, which are the finding's evidence.
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    finding: str
    site_id: str
    module_id: str
    stream: str  # as the integrity rules name it: module/<id>, batch/<id> or lane/<module>/<lane>
    lane: int | None = None
    batch_id: str | None = None
    sequences: list[int]
    event_ids: list[str]
    description: str


class GroundTruth(BaseModel):
    """Per-site truth of a simulation plus the network's event counts by type."""

    seed: int
    start: datetime
    end: datetime
    sensor_window_minutes: int
    sites: dict[str, SiteTruth]
    event_counts: dict[str, int]  # by event type name (BatchStep, SensorSummary, ...), as emitted
    total_events: int
    # per site: the integrity faults injected (empty lists when NetworkConfig.integrity_faults is None)
    integrity: dict[str, list[InjectedFault]] = {}

    def write(self, path: Path) -> None:
        """Write the truth as indented JSON."""
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> GroundTruth:
        """Read a truth file written by ``write``."""
        return cls.model_validate_json(path.read_text())
