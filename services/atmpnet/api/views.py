"""View endpoints: capacity, configuration drift, comparative performance.

Every role may read them; a site token's answer is limited to its own site (another site is 403).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from atmpnet.api.auth import Principal, authenticated
from atmpnet.api.deviations import warehouse
from atmpnet.warehouse.queries import Warehouse

router = APIRouter(prefix="/api/v1", tags=["views"])

SiteQuery = Annotated[str | None, Query(description="Limit to one site (site tokens: their own, implied)")]


@router.get("/capacity")
async def capacity(
    principal: Annotated[Principal, Depends(authenticated)],
    wh: Annotated[Warehouse, Depends(warehouse)],
    site: SiteQuery = None,
    days: Annotated[int, Query(ge=1, le=90, description="Days of daily utilization")] = 14,
) -> dict[str, Any]:
    """Capacity per site, module and lane.

    ``sites``: lanes busy / idle / down now, 7-day utilization, batches in progress; ``lanes``: each
    lane's state (and its batch and step when busy); ``daily``: utilization (busy over available
    lane-hours; module downtime is unavailable, not idle), starts, completions, failures;
    ``in_progress``: batches by step; ``forecast``: free lanes for each of the next 7 days from the
    expected remaining step durations; ``totals``: network totals and headroom (idle lanes).
    "Now" (``as_of``) is the newest event time in the store.
    """
    return await wh.run(wh.capacity, principal.sites_filter(site), days)


@router.get("/drift")
async def drift(
    principal: Annotated[Principal, Depends(authenticated)],
    wh: Annotated[Warehouse, Depends(warehouse)],
    site: SiteQuery = None,
) -> dict[str, Any]:
    """Configuration drift against each module type's validated baseline.

    ``modules``: state (IN_BASELINE / DRIFTED / UNKNOWN) and each component's state (in_baseline,
    drifted, missing, unknown); ``matrix``: site x module type x component cells with the count of
    drifted modules and the batches that ran while drifted; ``intervals``: each drift opened/closed
    with its batches (GMP impact); ``version_skew``: components whose versions differ across sites.
    """
    return await wh.run(wh.drift, principal.sites_filter(site))


@router.get("/performance")
async def performance(
    principal: Annotated[Principal, Depends(authenticated)],
    wh: Annotated[Warehouse, Depends(warehouse)],
    site: SiteQuery = None,
) -> dict[str, Any]:
    """Comparative performance of each site against the network median.

    Per site: success rate with its 95% Wilson interval, deviations per batch, sensor control (share of
    samples within alert limits), throughput per lane-day and
    end-to-end cycle time (p50 and a histogram); per site and step, cycle time p50 and p90 against
    the network median. ``network`` holds the medians over sites; a site token sees its own rows
    and these medians, not the other sites' rows.
    """
    return await wh.run(wh.performance, principal.sites_filter(site))


@router.get("/sites")
async def sites(
    principal: Annotated[Principal, Depends(authenticated)],
    wh: Annotated[Warehouse, Depends(warehouse)],
) -> dict[str, Any]:
    """The sites this token may see, and who it is (the dashboard's header)."""
    every = await wh.run(wh.sites)
    return {
        "sites": [s for s in every if principal.may_see_site(s)],
        "role": principal.role.value,
        "name": principal.name,
        "site_id": principal.site_id,
    }
