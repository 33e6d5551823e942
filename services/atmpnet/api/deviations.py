"""Deviation endpoints: the filtered, sorted, cursor-paged list; CSV export; one deviation in context."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from atmpnet.api.auth import Principal, Role, authenticated
from atmpnet.warehouse.queries import (
    FULL_TEXT_COLUMNS,
    LIST_COLUMNS,
    RAISED_FACT_COLUMNS,
    BadQuery,
    DeviationFilter,
    NotFound,
    Warehouse,
)

router = APIRouter(prefix="/api/v1", tags=["deviations"])

Severity = Literal["CRITICAL", "MAJOR", "MINOR"]
DeviationClass = Literal[
    "PROCESS_EXCURSION", "EQUIPMENT", "ENVIRONMENTAL", "DATA_INTEGRITY", "SENSOR_FAULT", "DUPLICATE"
]
Status = Literal["OPEN", "INVESTIGATING", "CLOSED"]
Sort = Literal["raised_at", "-raised_at", "severity", "-severity", "site", "-site", "status", "-status"]


class TriagedDeviation(BaseModel):
    """One deviation as the triage view shows it (docs/views.md).

    The free-text and personnel fields (description, raised_by, resolution) and the measured facts
    come only with quality and site tokens.
    """

    deviation_id: str
    site_id: str
    module_id: str
    lane: int | None = None
    batch_id: str | None = None
    step: str | None = None
    parameter: str | None = None
    alarm_code: str | None = None
    class_: DeviationClass = Field(alias="class")
    severity: Severity
    status: Status
    priority: int = Field(description="1 (critical) to 3 (minor)")
    raised_at: datetime
    updated_at: datetime | None = None
    closed_at: datetime | None = None
    due_at: datetime = Field(description="raised_at + 1 day (critical), 7 days (major), 30 days (minor)")
    age_hours: float = Field(description="From raised_at to closure, or to the view's as-of time")
    overdue: bool
    duration_seconds: float | None = None
    software_version: str | None = Field(
        default=None, description="Control software in force when raised: name=version entries joined by ;"
    )
    duplicate_of: str | None = Field(default=None, description="The open deviation this one repeats")
    module_cluster_size: int = Field(default=0, description="Repeats of the parameter on the module (7 days)")
    version_cluster_size: int = Field(default=0, description="Repeats of the parameter on this software")
    version_cluster_sites: int = Field(default=0, description="Sites in the software-version cluster")
    observed_value: float | None = None
    unit: str | None = None
    limit_low: float | None = None
    limit_high: float | None = None
    detection_source: str | None = None
    description: str | None = None
    raised_by: str | None = None
    resolution: str | None = None

    model_config = {"populate_by_name": True}


class DeviationPage(BaseModel):
    """A page of deviations; pass ``next_cursor`` as ``cursor`` for the next one (null: last page)."""

    items: list[TriagedDeviation]
    next_cursor: str | None
    site_scope: str | None = Field(description="The site the answer is limited to (site tokens), else null")


class DeviationDetail(TriagedDeviation):
    """One deviation with its history and batch context."""

    history: list[dict[str, Any]] = Field(description="Every RAISED / UPDATED / CLOSED event, in time order")
    batch_steps: list[dict[str, Any]] = Field(description="The batch's step events (empty without a batch)")
    sensor_summaries: list[dict[str, Any]] = Field(
        description="Sensor summaries of the deviation's lane within ±2 h of raised_at"
    )
    configuration: dict[str, Any] | None = Field(description="The module configuration in force when raised")


def warehouse(request: Request) -> Warehouse:
    """The app's warehouse reader."""
    wh: Warehouse = request.app.state.warehouse
    return wh


def deviation_filter(
    site: Annotated[str | None, Query(description="Site id")] = None,
    module: Annotated[str | None, Query(description="Module id")] = None,
    lane: Annotated[int | None, Query(ge=1, le=1024)] = None,
    batch: Annotated[str | None, Query(description="Batch id")] = None,
    step: Annotated[str | None, Query(description="Process step, e.g. EXPANSION")] = None,
    parameter: Annotated[str | None, Query(description="Sensor parameter, e.g. temperature_c")] = None,
    severity: Severity | None = None,
    klass: Annotated[DeviationClass | None, Query(alias="class")] = None,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    software_version: Annotated[str | None, Query(description="CONTROL_SOFTWARE version in force")] = None,
    raised_from: Annotated[
        datetime | None, Query(alias="from", description="raised_at >= (ISO 8601)")
    ] = None,
    raised_to: Annotated[datetime | None, Query(alias="to", description="raised_at < (ISO 8601)")] = None,
) -> DeviationFilter:
    """The list filters from the query string."""
    return DeviationFilter(
        site=site,
        module=module,
        lane=lane,
        batch=batch,
        step=step,
        parameter=parameter,
        severity=severity,
        klass=klass,
        status=status_,
        software_version=software_version,
        raised_from=raised_from,
        raised_to=raised_to,
    )


def scoped(flt: DeviationFilter, principal: Principal) -> DeviationFilter:
    """The filter limited to what the principal may see (403 for a site token's foreign site)."""
    site = principal.sites_filter(flt.site)
    return DeviationFilter(**{**flt.__dict__, "site": site})


def _redact(item: dict[str, Any], principal: Principal) -> dict[str, Any]:
    if principal.role is Role.OPERATIONS:
        for name in FULL_TEXT_COLUMNS + RAISED_FACT_COLUMNS:
            item.pop(name, None)
    return item


@router.get("/deviations", response_model=DeviationPage, response_model_by_alias=True)
async def list_deviations(
    principal: Annotated[Principal, Depends(authenticated)],
    wh: Annotated[Warehouse, Depends(warehouse)],
    flt: Annotated[DeviationFilter, Depends(deviation_filter)],
    sort: Sort = "-raised_at",
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Triaged deviations, filtered and sorted, one page at a time.

    The order is stable: the sort key, then the deviation id. A site token is limited to its own
    site (asking for another site is 403). Operations tokens get the list without the free-text
    and personnel fields (description, raised_by, resolution).
    """
    flt = scoped(flt, principal)
    full = principal.role is not Role.OPERATIONS
    try:
        page = await wh.run(wh.deviations, flt, sort=sort, cursor=cursor, limit=limit, full_text=full)
    except BadQuery as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    return {
        "items": [_redact(i, principal) for i in page.items],
        "next_cursor": page.next_cursor,
        "site_scope": flt.site if principal.role is Role.SITE else None,
    }


CSV_COLUMNS = [*LIST_COLUMNS, *RAISED_FACT_COLUMNS, *FULL_TEXT_COLUMNS]


@router.get(
    "/deviations.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "Every matching deviation as CSV"}},
)
async def export_deviations(
    principal: Annotated[Principal, Depends(authenticated)],
    wh: Annotated[Warehouse, Depends(warehouse)],
    flt: Annotated[DeviationFilter, Depends(deviation_filter)],
    sort: Sort = "-raised_at",
) -> StreamingResponse:
    """CSV export of every matching deviation with full detail, streamed page by page.

    Quality tokens (every site) and site tokens (their own site); operations tokens get 403.
    """
    principal.require(Role.QUALITY, Role.SITE, action="CSV export")
    flt = scoped(flt, principal)
    rows = wh.deviation_rows(flt, sort=sort)

    def lines() -> Iterator[str]:  # a sync generator: starlette runs it in the threadpool
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for count, row in enumerate(rows, start=1):
            writer.writerow(row)
            if count % 500 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="deviations.csv"'},
    )


@router.get("/deviations/{deviation_id}", response_model=DeviationDetail, response_model_by_alias=True)
async def get_deviation(
    deviation_id: str,
    principal: Annotated[Principal, Depends(authenticated)],
    wh: Annotated[Warehouse, Depends(warehouse)],
) -> dict[str, Any]:
    """One deviation with full detail and its batch context.

    Its events, the batch's steps, the sensor summaries of its lane around it and the module
    configuration in force.

    Quality tokens (every site) and site tokens (their own site; another site's deviation is 403).
    Operations tokens get 403: full deviation detail is quality's.
    """
    principal.require(Role.QUALITY, Role.SITE, action="full deviation detail")
    try:
        item = await wh.run(wh.deviation, deviation_id)
    except NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    if not principal.may_see_site(item["site_id"]):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"a site token sees only site {principal.site_id}")
    return item
