"""The simulated network: sites, module types, modules and lanes, and the knobs of the simulation."""

from __future__ import annotations

import hashlib
import random
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime

from atmpnet.contract.events import ComponentKind
from atmpnet.errors import ConfigurationError

DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)


@dataclass(frozen=True)
class ComponentSpec:
    """One versioned software component of a module type."""

    kind: ComponentKind
    name: str
    version: str

    def content_hash(self, module_type: str) -> str:
        """Deterministic sha256 of the component's content (type, name and version)."""
        return hashlib.sha256(f"{module_type}/{self.name}/{self.version}".encode()).hexdigest()


@dataclass(frozen=True)
class ModuleType:
    """A kind of automated closed processing module: its lanes and validated components."""

    name: str
    lanes: int
    components: tuple[ComponentSpec, ...]
    # versions the network rolls the control software forward to, in order
    controller_upgrades: tuple[str, ...] = ()


MODULE_TYPES: dict[str, ModuleType] = {
    t.name: t
    for t in (
        ModuleType(
            "cytoloop-4",
            4,
            (
                ComponentSpec(ComponentKind.CONTROL_SOFTWARE, "cytoloop-controller", "5.2.0"),
                ComponentSpec(ComponentKind.FIRMWARE, "pump-firmware", "3.1.4"),
                ComponentSpec(ComponentKind.RECIPE, "cart-recipe", "R14"),
                ComponentSpec(ComponentKind.ANALYTICS_MODEL, "viability-model", "2025.11"),
            ),
            ("5.3.0", "5.3.1"),
        ),
        ModuleType(
            "vivaflex-2",
            2,
            (
                ComponentSpec(ComponentKind.CONTROL_SOFTWARE, "vivaflex-os", "2.8.1"),
                ComponentSpec(ComponentKind.FIRMWARE, "bioreactor-firmware", "1.9.0"),
                ComponentSpec(ComponentKind.RECIPE, "cart-recipe", "R14"),
            ),
            ("2.9.0", "2.9.2"),
        ),
        ModuleType(
            "helix-pro-3",
            3,
            (
                ComponentSpec(ComponentKind.CONTROL_SOFTWARE, "helix-control", "11.4"),
                ComponentSpec(ComponentKind.FIRMWARE, "sensor-hub-firmware", "7.0.2"),
                ComponentSpec(ComponentKind.RECIPE, "cart-recipe", "R14"),
                ComponentSpec(ComponentKind.ANALYTICS_MODEL, "viability-model", "2025.11"),
            ),
            ("11.5", "12.0"),
        ),
    )
}


@dataclass(frozen=True)
class DeviationRates:
    """How often each kind of deviation happens (Poisson rates; 0 turns a kind off)."""

    sustained_excursions_per_batch: float = 0.12
    transient_alarms_per_lane_day: float = 0.25  # per busy lane-day
    sensor_faults_per_lane_day: float = 0.05  # per busy lane-day
    equipment_faults_per_batch: float = 0.06  # a fault on the batch's lane (pump, valve, door)
    module_downtimes_per_module_day: float = 0.015  # whole-module outage: lane None, no batch
    environmental_per_site_day: float = 0.06  # cleanroom particles, pressure, humidity
    data_gaps_per_lane_day: float = 0.02  # per busy lane-day: sensor data really missing
    # share of excursions and equipment alarms raised a second time while the first is still open
    duplicate_share: float = 0.15


@dataclass(frozen=True)
class IntegrityFaults:
    """How many integrity faults of each kind to inject per site (0 turns a kind off; see faults.py).

    Dropped runs and skewed clocks are at most one per module (two on one stream could merge
    into one finding); segregation faults each take a different batch that left its lane
    before the end.
    """

    dropped_runs: int = 1
    dropped_run_length: tuple[int, int] = (1, 5)  # consecutive sensor summaries lost per run
    skewed_clocks: int = 1
    skew_hours: tuple[float, float] = (2.0, 12.0)  # how long a controller's clock is off
    batches_on_two_lanes: int = 1
    lane_overlaps: int = 1
    steps_out_of_order: int = 1

    def __post_init__(self) -> None:
        counts = (
            self.dropped_runs,
            self.skewed_clocks,
            self.batches_on_two_lanes,
            self.lane_overlaps,
            self.steps_out_of_order,
        )
        if min(counts) < 0:
            raise ConfigurationError("integrity fault counts must not be negative")
        low, high = self.dropped_run_length
        if not 1 <= low <= high:
            raise ConfigurationError(f"dropped_run_length must be 1 <= low <= high, got {low, high}")
        low_h, high_h = self.skew_hours
        if not 0 < low_h <= high_h:
            raise ConfigurationError(f"skew_hours must be 0 < low <= high, got {low_h, high_h}")


@dataclass(frozen=True)
class SiteProfile:
    """One manufacturing site: its modules (type name, count), failure rate and deviation rates."""

    site_id: str
    failure_rate: float = 0.055
    modules: tuple[tuple[str, int], ...] = (("cytoloop-4", 2), ("vivaflex-2", 1))
    deviation_rates: DeviationRates = field(default_factory=DeviationRates)
    # mean idle hours between a lane's cleaning and its next batch (demand gaps keep utilization < 100%)
    demand_gap_hours: float = 30.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ConfigurationError(f"{self.site_id}: failure_rate {self.failure_rate} is not in [0, 1]")
        for type_name, count in self.modules:
            if type_name not in MODULE_TYPES:
                known = ", ".join(MODULE_TYPES)
                raise ConfigurationError(f"{self.site_id}: unknown module type {type_name!r}; one of {known}")
            if count < 0:
                raise ConfigurationError(f"{self.site_id}: negative module count for {type_name}")


@dataclass(frozen=True)
class NetworkConfig:
    """What to simulate: the sites (a count or explicit profiles), how long, from when, with which seed."""

    sites: int | tuple[SiteProfile, ...] = 4
    days: float = 30.0
    seed: int = 1
    start: datetime = DEFAULT_START
    sensor_window_minutes: int = 1
    # publication delay after the fact occurred, drawn uniformly (seconds)
    publish_delay_seconds: tuple[float, float] = (0.2, 3.0)
    # stamp envelope.previous_hash: each stream's hash chain over the events' canonical bytes
    chain: bool = True
    # integrity faults to inject per site (faults.py); None: a clean run, whose views match the truth
    integrity_faults: IntegrityFaults | None = None

    def __post_init__(self) -> None:
        if self.days <= 0:
            raise ConfigurationError(f"days must be positive, got {self.days}")
        if self.sensor_window_minutes < 1:
            raise ConfigurationError(f"sensor_window_minutes must be >= 1, got {self.sensor_window_minutes}")
        if self.start.tzinfo is None:
            raise ConfigurationError("start must be timezone-aware (UTC)")
        low, high = self.publish_delay_seconds
        if not 0 <= low <= high < 60 * self.sensor_window_minutes:
            raise ConfigurationError("publish_delay_seconds must be 0 <= low <= high < one sensor window")
        if isinstance(self.sites, int) and not 1 <= self.sites <= 26 * 26:
            raise ConfigurationError(f"sites must be between 1 and 676, got {self.sites}")

    def site_profiles(self) -> tuple[SiteProfile, ...]:
        """The sites: as given, or ``sites`` generated ones drawn from the seed."""
        if not isinstance(self.sites, int):
            return self.sites
        return default_sites(self.sites, self.seed)


def site_slug(index: int) -> str:
    """site-a … site-z, then site-aa …."""
    letters = string.ascii_lowercase
    name = letters[index] if index < 26 else letters[index // 26 - 1] + letters[index % 26]
    return f"site-{name}"


_SITE_LAYOUTS: tuple[tuple[tuple[str, int], ...], ...] = (
    (("cytoloop-4", 2), ("vivaflex-2", 1)),
    (("cytoloop-4", 1), ("helix-pro-3", 1), ("vivaflex-2", 1)),
    (("helix-pro-3", 2), ("vivaflex-2", 1)),
    (("cytoloop-4", 1), ("helix-pro-3", 1), ("vivaflex-2", 2)),
)


def default_sites(count: int, seed: int) -> tuple[SiteProfile, ...]:
    """``count`` sites with varied module layouts and failure rates drawn from 4-7%."""
    rng = random.Random(f"{seed}/sites")
    return tuple(
        SiteProfile(
            site_id=site_slug(i),
            failure_rate=round(rng.uniform(0.04, 0.07), 4),
            modules=_SITE_LAYOUTS[i % len(_SITE_LAYOUTS)],
            demand_gap_hours=round(rng.uniform(20.0, 40.0), 1),
        )
        for i in range(count)
    )


@dataclass(frozen=True)
class Module:
    """One module of a site."""

    site_id: str
    module_id: str
    module_type: ModuleType
    serial_number: str

    @property
    def lanes(self) -> int:
        """Its number of parallel lanes."""
        return self.module_type.lanes


def site_modules(profile: SiteProfile) -> list[Module]:
    """The site's modules, numbered m01, m02 … in the order of the profile."""
    modules = []
    n = 0
    for type_name, count in profile.modules:
        for _ in range(count):
            n += 1
            digest = hashlib.sha256(f"{profile.site_id}/{n}".encode()).hexdigest()[:6].upper()
            modules.append(
                Module(profile.site_id, f"{profile.site_id}-m{n:02d}", MODULE_TYPES[type_name], f"SN{digest}")
            )
    return modules
