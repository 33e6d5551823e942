"""Configuration drift: each module's components against the validated baseline of its type.

At time t a module's state compares its latest configuration (occurred_at <= t) with the
latest baseline of its type (effective_from <= t). The state can only change at a
configuration's occurred_at or a baseline's effective_from, so the timeline is evaluated at
exactly those instants; a drift interval opens at the first instant the module is DRIFTED and
closes at the first later instant it is not. Only instants up to ``as_of`` count: a baseline
approved now but effective later changes nothing until then (no interval opens, or closes, in
the future).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from atmpnet.contract.events import ComponentStatus
from atmpnet.rules.facts import BaselineFact, ComponentFact, ConfigFact, unique


class DriftState(StrEnum):
    """A module against the baseline of its type."""

    IN_BASELINE = "IN_BASELINE"
    DRIFTED = "DRIFTED"
    UNKNOWN = "UNKNOWN"  # no baseline for the type yet: not counted as drift


@dataclass(frozen=True, slots=True)
class ComponentComparison:
    """One component name, as running and as validated."""

    name: str
    kind: str
    running_version: str | None
    baseline_version: str | None
    status: ComponentStatus


def compare(running: Iterable[ComponentFact], baseline: Iterable[ComponentFact]) -> list[ComponentComparison]:
    """Match components by name: same version and hash in baseline, else drifted, missing or unknown."""
    mine = {c.name: c for c in running}
    valid = {c.name: c for c in baseline}
    out = []
    for name in sorted(mine.keys() | valid.keys()):
        m, v = mine.get(name), valid.get(name)
        if m is None:
            assert v is not None
            status = ComponentStatus.MISSING
        elif v is None:
            status = ComponentStatus.UNKNOWN
        elif (m.version, m.content_hash) == (v.version, v.content_hash):
            status = ComponentStatus.IN_BASELINE
        else:
            status = ComponentStatus.DRIFTED
        either = m if m is not None else v
        assert either is not None
        kind = either.kind
        out.append(
            ComponentComparison(name, str(kind), m.version if m else None, v.version if v else None, status)
        )
    return out


@dataclass(frozen=True, slots=True)
class ModuleState:
    """A module's drift state at one instant."""

    at: datetime
    config: ConfigFact
    baseline: BaselineFact | None
    state: DriftState
    components: tuple[ComponentComparison, ...]


class Baselines:
    """The baselines of each module type, to look up the one in force at a time."""

    def __init__(self, baselines: Iterable[BaselineFact]) -> None:
        by_type: dict[str, list[BaselineFact]] = defaultdict(list)
        for b in unique(baselines):
            by_type[b.module_type].append(b)
        self.by_type = {t: sorted(bs, key=BaselineFact.order_key) for t, bs in by_type.items()}
        self._times = {t: [b.effective_from for b in bs] for t, bs in self.by_type.items()}

    def at(self, module_type: str, t: datetime) -> BaselineFact | None:
        """The latest baseline of the type with effective_from <= t."""
        times = self._times.get(module_type)
        if not times:
            return None
        i = bisect.bisect_right(times, t)
        return self.by_type[module_type][i - 1] if i else None


def state_of(config: ConfigFact, baseline: BaselineFact | None, at: datetime) -> ModuleState:
    """The module's state given its configuration and the baseline in force."""
    if baseline is None:
        return ModuleState(at, config, None, DriftState.UNKNOWN, ())
    comps = tuple(compare(config.components, baseline.components))
    drifted = any(c.status is not ComponentStatus.IN_BASELINE for c in comps)
    return ModuleState(at, config, baseline, DriftState.DRIFTED if drifted else DriftState.IN_BASELINE, comps)


def timelines(
    configs: Iterable[ConfigFact], baselines: Iterable[BaselineFact], as_of: datetime
) -> dict[str, list[ModuleState]]:
    """Per module, its state at every instant up to ``as_of`` it may change, in time order.

    Configurations after ``as_of`` and baselines effective after it are not seen yet, so a
    module configured only after ``as_of`` has no timeline.
    """
    index = Baselines(baselines)
    by_module: dict[str, list[ConfigFact]] = defaultdict(list)
    for c in unique(configs):
        if c.occurred_at <= as_of:
            by_module[c.module_id].append(c)
    out: dict[str, list[ModuleState]] = {}
    for module_id, cs in by_module.items():
        cs.sort(key=ConfigFact.order_key)
        times = [c.occurred_at for c in cs]
        instants = set(times)
        for module_type in {c.module_type for c in cs}:
            effective = (b.effective_from for b in index.by_type.get(module_type, []))
            instants.update(t for t in effective if times[0] < t <= as_of)
        states = []
        for t in sorted(instants):
            config = cs[bisect.bisect_right(times, t) - 1]
            states.append(state_of(config, index.at(config.module_type, t), t))
        out[module_id] = states
    return out


@dataclass(frozen=True, slots=True)
class DriftInterval:
    """A span of time a module was DRIFTED: [opened_at, closed_at), closed_at None while open."""

    site_id: str
    module_id: str
    module_type: str
    opened_at: datetime
    closed_at: datetime | None
    components: tuple[ComponentComparison, ...]  # the differences when it opened


def intervals(timeline: list[ModuleState]) -> list[DriftInterval]:
    """The drift intervals of one module's timeline."""
    out: list[DriftInterval] = []
    opened: ModuleState | None = None
    for s in timeline:
        if s.state is DriftState.DRIFTED and opened is None:
            opened = s
        elif s.state is not DriftState.DRIFTED and opened is not None:
            out.append(_interval(opened, s.at))
            opened = None
    if opened is not None:
        out.append(_interval(opened, None))
    return out


def _interval(opened: ModuleState, closed_at: datetime | None) -> DriftInterval:
    diffs = tuple(c for c in opened.components if c.status is not ComponentStatus.IN_BASELINE)
    cfg = opened.config
    return DriftInterval(cfg.site_id, cfg.module_id, cfg.module_type, opened.at, closed_at, diffs)


def drift_intervals(
    configs: Iterable[ConfigFact], baselines: Iterable[BaselineFact], as_of: datetime
) -> list[DriftInterval]:
    """Every module's drift intervals as known at ``as_of``, sorted by (module, opened_at).

    None opens or closes after ``as_of``: an interval that a later-effective baseline will
    close is still open (closed_at None), so the derived stream never publishes the future.
    """
    out = []
    for module_id, timeline in sorted(timelines(configs, baselines, as_of).items()):
        del module_id
        out += intervals(timeline)
    return out


def states_at(
    configs: Iterable[ConfigFact], baselines: Iterable[BaselineFact], as_of: datetime
) -> dict[str, ModuleState]:
    """Each module's state at ``as_of`` (modules configured after it are left out)."""
    out = {}
    for module_id, timeline in timelines(configs, baselines, as_of).items():
        last = timeline[-1]
        out[module_id] = ModuleState(as_of, last.config, last.baseline, last.state, last.components)
    return out


@dataclass(frozen=True, slots=True)
class VersionSkew:
    """How many sites and modules of one type run one version of one component."""

    module_type: str
    component: str
    version: str
    sites: int
    modules: int
    versions_of_component: int


def version_skew(states: dict[str, ModuleState]) -> list[VersionSkew]:
    """Per module type and component, each running version with its sites and modules."""
    seen: dict[tuple[str, str, str], set[tuple[str, str]]] = defaultdict(set)
    for s in states.values():
        for c in s.config.components:
            seen[(s.config.module_type, c.name, c.version)].add((s.config.site_id, s.config.module_id))
    versions: dict[tuple[str, str], int] = defaultdict(int)
    for module_type, name, _ in seen:
        versions[(module_type, name)] += 1
    return [
        VersionSkew(t, n, v, len({site for site, _ in where}), len(where), versions[(t, n)])
        for (t, n, v), where in sorted(seen.items())
    ]
