"""Module configurations, software rollouts and the baselines network quality approves.

At the start every module type has a validated baseline (effective at the start) and every
module reports its configuration; one module starts on an unapproved firmware and is aligned
a few days later. Then each module type gets a controller rollout: pilot modules upgrade
first (drifted: the version is not validated yet), network quality approves a new baseline
(the pilots' drift closes, the modules not yet upgraded drift), and the rest follow.
Drift intervals are computed here with the contract's rule from this plan.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from atmpnet.site.simulation.batches import US_PER_DAY, US_PER_HOUR
from atmpnet.site.simulation.network import ComponentSpec, Module, ModuleType


@dataclass(frozen=True)
class PlannedConfiguration:
    """A module reports the configuration it runs from ``at`` on."""

    module: Module
    at: int
    components: tuple[ComponentSpec, ...]
    change_reason: str | None


@dataclass(frozen=True)
class PlannedBaseline:
    """Network quality approves a baseline for a module type, effective from ``effective``."""

    baseline_id: str
    module_type: ModuleType
    at: int
    effective: int
    components: tuple[ComponentSpec, ...]
    change_reference: str | None


def _with_version(
    components: tuple[ComponentSpec, ...], name: str, version: str
) -> tuple[ComponentSpec, ...]:
    return tuple(replace(c, version=version) if c.name == name else c for c in components)


def plan_rollouts(
    modules: list[Module], end: int, rng: random.Random
) -> tuple[list[PlannedConfiguration], list[PlannedBaseline]]:
    """Configurations and baselines over the run; only those that happen before ``end``."""
    configs: list[PlannedConfiguration] = []
    baselines: list[PlannedBaseline] = []
    types = sorted({m.module_type.name: m.module_type for m in modules}.values(), key=lambda t: t.name)
    for t in types:
        baselines.append(
            PlannedBaseline(f"VB-{t.name.upper()}-001", t, 0, 0, t.components, "initial validation")
        )
    for m in modules:
        configs.append(
            PlannedConfiguration(m, 0, m.module_type.components, "configuration at start of reporting")
        )

    # one module starts on a firmware that was never validated, and is aligned a few days in
    if len(modules) >= 2:
        m = modules[-1]
        firmware = next(c for c in m.module_type.components if c.kind.value == "FIRMWARE")
        configs[-1] = replace(
            configs[-1],
            components=_with_version(m.module_type.components, firmware.name, firmware.version + "-hotfix"),
        )
        configs.append(
            PlannedConfiguration(
                m,
                rng.randint(1 * US_PER_DAY, 4 * US_PER_DAY),
                m.module_type.components,
                "firmware aligned to the validated baseline",
            )
        )

    days = end / US_PER_DAY
    rounds = 1 if days < 60 else 2
    for t in types:
        current = t.components
        controller = next(c for c in t.components if c.kind.value == "CONTROL_SOFTWARE")
        fleet = [m for m in modules if m.module_type is t]
        for k in range(min(rounds, len(t.controller_upgrades))):
            version = t.controller_upgrades[k]
            reference = f"CC-{t.name.upper()}-{version}"
            upgraded = _with_version(current, controller.name, version)
            begin = int((rng.uniform(0.15, 0.45) + 0.5 * k) * end)
            order = fleet[:]
            rng.shuffle(order)
            pilots = order[: max(1, len(order) // 2)]
            for m in pilots:
                at = begin + rng.randint(0, 2 * US_PER_DAY)
                configs.append(
                    PlannedConfiguration(m, at, upgraded, f"{reference} pilot upgrade to {version}")
                )
            approved = begin + rng.randint(4 * US_PER_DAY, 9 * US_PER_DAY)
            effective = approved + rng.randint(1 * US_PER_HOUR, 6 * US_PER_HOUR)
            if effective < end:
                baselines.append(
                    PlannedBaseline(
                        f"VB-{t.name.upper()}-{k + 2:03d}", t, approved, effective, upgraded, reference
                    )
                )
                for m in order[len(pilots) :]:
                    at = effective + rng.randint(US_PER_DAY // 2, 5 * US_PER_DAY)
                    configs.append(PlannedConfiguration(m, at, upgraded, f"{reference} upgrade to {version}"))
            current = upgraded

    # late in the run an emergency firmware patch goes onto one quiet module, not yet approved
    hotfix_at = int(rng.uniform(0.85, 0.97) * end)
    quiet = [m for m in modules if all(c.at < hotfix_at for c in configs if c.module is m)]
    if quiet:
        m = rng.choice(quiet)
        running = max((c for c in configs if c.module is m), key=lambda c: c.at).components
        firmware = next(c for c in running if c.kind.value == "FIRMWARE")
        patched = _with_version(running, firmware.name, firmware.version + "-ep1")
        configs.append(
            PlannedConfiguration(m, hotfix_at, patched, "emergency firmware patch, approval pending")
        )
    configs = [c for c in configs if c.at < end]
    configs.sort(key=lambda c: (c.at, c.module.module_id))
    baselines = [b for b in baselines if b.at < end]
    baselines.sort(key=lambda b: (b.at, b.module_type.name))
    return configs, baselines


def _drifted(
    module_type: str, running: tuple[ComponentSpec, ...], baseline: tuple[ComponentSpec, ...]
) -> bool:
    """The contract's rule: drifted when any component is not exactly as in the baseline."""
    on_module = {c.name: c.content_hash(module_type) for c in running}
    approved = {c.name: c.content_hash(module_type) for c in baseline}
    # equal hashes imply equal versions here: the hash covers the version
    return on_module != approved


def drift_intervals(
    module: Module, configs: list[PlannedConfiguration], baselines: list[PlannedBaseline], end: int
) -> list[tuple[int, int | None]]:
    """[opened, closed or None] per drift of ``module`` before ``end``, by the contract's definition."""
    mine = sorted((c for c in configs if c.module is module and c.at < end), key=lambda c: c.at)
    theirs = sorted(
        (b for b in baselines if b.module_type is module.module_type and b.effective < end),
        key=lambda b: b.effective,
    )
    instants = sorted({c.at for c in mine} | {b.effective for b in theirs})
    intervals: list[tuple[int, int | None]] = []
    opened: int | None = None
    for t in instants:
        config = next((c for c in reversed(mine) if c.at <= t), None)
        baseline = next((b for b in reversed(theirs) if b.effective <= t), None)
        if config is None or baseline is None:
            drifted = False  # UNKNOWN state is not drift
        else:
            drifted = _drifted(module.module_type.name, config.components, baseline.components)
        if drifted and opened is None:
            opened = t
        elif not drifted and opened is not None:
            intervals.append((opened, t))
            opened = None
    if opened is not None:
        intervals.append((opened, None))
    return intervals
