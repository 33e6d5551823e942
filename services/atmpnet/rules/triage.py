"""Deviation triage: class, severity, priority, due date, status, duplicates and repeat clusters.

Class and severity follow the shared domain contract and are decided from the RAISED event
alone; status follows the lifecycle (RAISED -> UPDATED ... -> CLOSED). Everything here is a
pure function of the set of deviation and configuration facts: duplicates are dropped by
event id and every ordering is by (time, id), never by arrival.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from atmpnet.contract.events import (
    DeviationClass,
    DeviationStatus,
    DeviationTransition,
    ProcessStep,
    Severity,
)
from atmpnet.rules.facts import ConfigFact, DeviationFact, unique

ALARM_PREFIXES: dict[str, DeviationClass] = {
    "PRC-": DeviationClass.PROCESS_EXCURSION,
    "EQP-": DeviationClass.EQUIPMENT,
    "ENV-": DeviationClass.ENVIRONMENTAL,
    "DAT-": DeviationClass.DATA_INTEGRITY,
    "SNS-": DeviationClass.SENSOR_FAULT,
}
SUSTAINED_SECONDS = 1800.0
CRITICAL_STEPS = frozenset(
    {ProcessStep.TRANSDUCTION, ProcessStep.EXPANSION, ProcessStep.FORMULATION, ProcessStep.CRYOPRESERVATION}
)
PRIORITY = {Severity.CRITICAL: 1, Severity.MAJOR: 2, Severity.MINOR: 3}
# the network's triage policy: time from RAISED to closure
DUE_AFTER = {
    Severity.CRITICAL: timedelta(days=1),
    Severity.MAJOR: timedelta(days=7),
    Severity.MINOR: timedelta(days=30),
}
# data-integrity findings of lane segregation (a batch on two lanes, a lane overlap, steps out of
# order) can mean a mix-up of patient material: CRITICAL, not the class's MAJOR (docs/integrity.md)
SEGREGATION_PREFIX = "DAT-SEG-"
# repeats of one parameter on one module closer than this join one cluster
REPEAT_WINDOW = timedelta(days=7)


def base_class(alarm_code: str | None, parameter: str | None) -> DeviationClass:
    """Class from the alarm code's prefix; without a known code, by whether a parameter is given."""
    if alarm_code:
        for prefix, cls in ALARM_PREFIXES.items():
            if alarm_code.startswith(prefix):
                return cls
    return DeviationClass.PROCESS_EXCURSION if parameter else DeviationClass.EQUIPMENT


def severity(
    cls: DeviationClass,
    *,
    duration_seconds: float | None,
    step: ProcessStep | None,
    batch_id: str | None,
    alarm_code: str | None = None,
) -> Severity:
    """Severity of a deviation of class ``cls`` (the contract's table; segregation codes CRITICAL)."""
    if cls is DeviationClass.DUPLICATE:
        return Severity.MINOR
    if cls is DeviationClass.PROCESS_EXCURSION:
        if duration_seconds is not None and duration_seconds >= SUSTAINED_SECONDS:
            return Severity.CRITICAL if step in CRITICAL_STEPS else Severity.MAJOR
        return Severity.MINOR
    if cls is DeviationClass.EQUIPMENT:
        return Severity.MAJOR if batch_id else Severity.MINOR
    if cls is DeviationClass.DATA_INTEGRITY and (alarm_code or "").startswith(SEGREGATION_PREFIX):
        return Severity.CRITICAL
    if cls in (DeviationClass.ENVIRONMENTAL, DeviationClass.DATA_INTEGRITY):
        return Severity.MAJOR
    return Severity.MINOR


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """One deviation's RAISED fact and when it was first updated and closed."""

    raised: DeviationFact
    updated_at: datetime | None
    closed_at: datetime | None

    def status_at(self, t: datetime) -> DeviationStatus:
        """Status at time ``t`` (transitions at ``t`` count)."""
        if self.closed_at is not None and self.closed_at <= t:
            return DeviationStatus.CLOSED
        if self.updated_at is not None and self.updated_at <= t:
            return DeviationStatus.INVESTIGATING
        return DeviationStatus.OPEN

    def open_at(self, t: datetime) -> bool:
        """Raised by ``t`` and not yet closed at ``t``."""
        return self.raised.occurred_at <= t and (self.closed_at is None or self.closed_at > t)


def lifecycles(facts: Iterable[DeviationFact]) -> dict[str, Lifecycle]:
    """Per deviation id with a RAISED fact: its earliest RAISED, first UPDATED and first CLOSED.

    A deviation whose RAISED has not arrived yet is left out until it does.
    """
    raised: dict[str, DeviationFact] = {}
    updated: dict[str, datetime] = {}
    closed: dict[str, datetime] = {}
    for f in unique(facts):
        key = f.deviation_id
        if f.transition is DeviationTransition.RAISED:
            prev = raised.get(key)
            if prev is None or (f.occurred_at, f.event_id) < (prev.occurred_at, prev.event_id):
                raised[key] = f
        else:
            first = updated if f.transition is DeviationTransition.UPDATED else closed
            if key not in first or f.occurred_at < first[key]:
                first[key] = f.occurred_at
    return {k: Lifecycle(r, updated.get(k), closed.get(k)) for k, r in raised.items()}


def _duplicate_key(f: DeviationFact) -> tuple[str, int | None, str | None, str | None]:
    return (f.module_id, f.lane, f.parameter, f.alarm_code)


def duplicates(lives: dict[str, Lifecycle]) -> dict[str, str]:
    """Map each duplicate deviation id to the earliest earlier deviation still open when it was raised."""
    groups: dict[tuple[str, int | None, str | None, str | None], list[Lifecycle]] = defaultdict(list)
    for life in lives.values():
        groups[_duplicate_key(life.raised)].append(life)
    out: dict[str, str] = {}
    for members in groups.values():
        members.sort(key=lambda x: (x.raised.occurred_at, x.raised.deviation_id))
        for i, life in enumerate(members):
            t = life.raised.occurred_at
            for earlier in members[:i]:
                if earlier.closed_at is None or earlier.closed_at > t:
                    out[life.raised.deviation_id] = earlier.raised.deviation_id
                    break
    return out


class ConfigHistory:
    """The configurations of each module, to look up the one in force at a time."""

    def __init__(self, configs: Iterable[ConfigFact]) -> None:
        by_module: dict[str, list[ConfigFact]] = defaultdict(list)
        for c in unique(configs):
            by_module[c.module_id].append(c)
        self._configs = {m: sorted(cs, key=ConfigFact.order_key) for m, cs in by_module.items()}
        self._times = {m: [c.occurred_at for c in cs] for m, cs in self._configs.items()}

    def at(self, module_id: str, t: datetime) -> ConfigFact | None:
        """The latest configuration of the module with occurred_at <= t."""
        times = self._times.get(module_id)
        if not times:
            return None
        i = bisect.bisect_right(times, t)
        return self._configs[module_id][i - 1] if i else None


@dataclass(frozen=True, slots=True)
class TriagedDeviation:
    """One deviation as the triage view shows it at ``as_of``."""

    deviation_id: str
    raised_event_id: str
    site_id: str
    module_id: str
    lane: int | None
    batch_id: str | None
    step: ProcessStep | None
    parameter: str | None
    alarm_code: str | None
    duration_seconds: float | None
    raised_at: datetime
    base_class: DeviationClass
    deviation_class: DeviationClass
    severity: Severity
    priority: int
    due_at: datetime
    status: DeviationStatus
    updated_at: datetime | None
    closed_at: datetime | None
    duplicate_of: str | None
    software_versions: str | None
    module_cluster: str | None
    module_cluster_size: int
    version_cluster: str | None
    version_cluster_size: int
    version_cluster_sites: int
    age_hours: float
    overdue: bool


def _module_clusters(lives: list[Lifecycle]) -> dict[str, tuple[str, int]]:
    """Map deviation id to (cluster id, size): one module and parameter, each within REPEAT_WINDOW."""
    groups: dict[tuple[str, str], list[Lifecycle]] = defaultdict(list)
    for life in lives:
        if life.raised.parameter:
            groups[(life.raised.module_id, life.raised.parameter)].append(life)
    out: dict[str, tuple[str, int]] = {}
    for (module_id, parameter), members in groups.items():
        members.sort(key=lambda x: (x.raised.occurred_at, x.raised.deviation_id))
        clusters: list[list[Lifecycle]] = []
        for life in members:
            if clusters and life.raised.occurred_at - clusters[-1][-1].raised.occurred_at <= REPEAT_WINDOW:
                clusters[-1].append(life)
            else:
                clusters.append([life])
        for cluster in clusters:
            cid = f"{module_id}/{parameter}/{cluster[0].raised.deviation_id}"
            for life in cluster:
                out[life.raised.deviation_id] = (cid, len(cluster))
    return out


def triage(
    deviations: Iterable[DeviationFact], configs: Iterable[ConfigFact], as_of: datetime
) -> list[TriagedDeviation]:
    """Every raised deviation, triaged, with its status at ``as_of``; sorted by (raised_at, id)."""
    lives = lifecycles(deviations)
    dup_of = duplicates(lives)
    history = ConfigHistory(configs)
    ordered = sorted(lives.values(), key=lambda x: (x.raised.occurred_at, x.raised.deviation_id))
    module_clusters = _module_clusters(ordered)
    software: dict[str, str | None] = {}
    for life in ordered:
        cfg = history.at(life.raised.module_id, life.raised.occurred_at)
        software[life.raised.deviation_id] = cfg.control_software() if cfg else None
    version_groups: dict[str, list[Lifecycle]] = defaultdict(list)
    for life in ordered:
        sw = software[life.raised.deviation_id]
        if life.raised.parameter and sw:
            version_groups[f"{life.raised.parameter}@{sw}"].append(life)
    out = []
    for life in ordered:
        r = life.raised
        did = r.deviation_id
        cls0 = base_class(r.alarm_code, r.parameter)
        cls = DeviationClass.DUPLICATE if did in dup_of else cls0
        sev = severity(
            cls,
            duration_seconds=r.duration_seconds,
            step=r.step,
            batch_id=r.batch_id,
            alarm_code=r.alarm_code,
        )
        due = r.occurred_at + DUE_AFTER[sev]
        status = life.status_at(as_of)
        end = life.closed_at if status is DeviationStatus.CLOSED and life.closed_at else as_of
        mc = module_clusters.get(did)
        vkey = f"{r.parameter}@{software[did]}" if r.parameter and software[did] else None
        vmembers = version_groups.get(vkey, []) if vkey else []
        out.append(
            TriagedDeviation(
                deviation_id=did,
                raised_event_id=r.event_id,
                site_id=r.site_id,
                module_id=r.module_id,
                lane=r.lane,
                batch_id=r.batch_id,
                step=r.step,
                parameter=r.parameter,
                alarm_code=r.alarm_code,
                duration_seconds=r.duration_seconds,
                raised_at=r.occurred_at,
                base_class=cls0,
                deviation_class=cls,
                severity=sev,
                priority=PRIORITY[sev],
                due_at=due,
                status=status,
                updated_at=life.updated_at if status is not DeviationStatus.OPEN else None,
                closed_at=life.closed_at if status is DeviationStatus.CLOSED else None,
                duplicate_of=dup_of.get(did),
                software_versions=software[did],
                module_cluster=mc[0] if mc else None,
                module_cluster_size=mc[1] if mc else 1,
                version_cluster=vkey,
                version_cluster_size=len(vmembers) or 1,
                version_cluster_sites=len({m.raised.site_id for m in vmembers}) or 1,
                age_hours=max(0.0, (end - r.occurred_at).total_seconds() / 3600),
                overdue=end > due,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class TriageChange:
    """A triage state a deviation entered: what the derived triage stream publishes."""

    deviation_id: str
    status: DeviationStatus
    severity: Severity
    deviation_class: DeviationClass
    changed_at: datetime
    triaged: TriagedDeviation


def triage_changes(
    deviations: Iterable[DeviationFact], configs: Iterable[ConfigFact], as_of: datetime
) -> list[TriageChange]:
    """Each deviation's first triage, then each change of status, in (time, id) order.

    Class and severity are fixed at RAISED, so later changes are status changes; the list is a
    pure function of the facts, whatever batches they arrived in.
    """
    out = []
    lives = lifecycles(deviations)
    for t in triage(deviations, configs, as_of):
        life = lives[t.deviation_id]
        moments = [(t.raised_at, DeviationStatus.OPEN)]
        if life.updated_at is not None and (life.closed_at is None or life.updated_at < life.closed_at):
            moments.append((max(life.updated_at, t.raised_at), DeviationStatus.INVESTIGATING))
        if life.closed_at is not None:
            moments.append((max(life.closed_at, t.raised_at), DeviationStatus.CLOSED))
        for at, status in moments:
            if at <= as_of:
                out.append(TriageChange(t.deviation_id, status, t.severity, t.deviation_class, at, t))
    out.sort(key=lambda c: (c.changed_at, c.deviation_id, list(DeviationStatus).index(c.status)))
    return out
