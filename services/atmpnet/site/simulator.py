"""The network simulator's public face; the parts live in ``atmpnet.site.simulation``."""

from atmpnet.site.simulation import (
    DEVIATION_CLASSES,
    MODULE_TYPES,
    SEVERITIES,
    DeviationRates,
    DriftInterval,
    GroundTruth,
    JsonLinesSink,
    ModuleType,
    NetworkConfig,
    RunSummary,
    Simulation,
    SiteProfile,
    SiteTruth,
    default_sites,
    run_simulation,
)

__all__ = [
    "DEVIATION_CLASSES",
    "MODULE_TYPES",
    "SEVERITIES",
    "DeviationRates",
    "DriftInterval",
    "GroundTruth",
    "JsonLinesSink",
    "ModuleType",
    "NetworkConfig",
    "RunSummary",
    "Simulation",
    "SiteProfile",
    "SiteTruth",
    "default_sites",
    "run_simulation",
]
