"""The network simulator: sites, modules and lanes running CAR-T batches, and the ground truth."""

from atmpnet.site.simulation.engine import Simulation
from atmpnet.site.simulation.faults import FaultKind
from atmpnet.site.simulation.network import (
    MODULE_TYPES,
    DeviationRates,
    IntegrityFaults,
    ModuleType,
    NetworkConfig,
    SiteProfile,
    default_sites,
)
from atmpnet.site.simulation.runner import JsonLinesSink, RunSummary, run_simulation
from atmpnet.site.simulation.truth import (
    DEVIATION_CLASSES,
    SEVERITIES,
    DriftInterval,
    GroundTruth,
    InjectedFault,
    SiteTruth,
)

__all__ = [
    "DEVIATION_CLASSES",
    "MODULE_TYPES",
    "SEVERITIES",
    "DeviationRates",
    "DriftInterval",
    "FaultKind",
    "GroundTruth",
    "InjectedFault",
    "IntegrityFaults",
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
