"""Deviation endpoints: the filtered, sorted, cursor-paged list; CSV export; one deviation in context."""

from __future__ import annotations

import csv
import io
import itertools
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
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
    ViewMoved,
    Warehouse,
)

log = logging.getLogger("atmpnet.api")

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


class NotClosedCounts(BaseModel):
    """Matching deviations not closed (status OPEN or INVESTIGATING), by severity."""

    CRITICAL: int
    MAJOR: int
    MINOR: int


class DeviationCounts(BaseModel):
    """Headline counts of every deviation matching the filters (all pages, not one)."""

    total: int = Field(description="Every matching deviation")
    not_closed: NotClosedCounts = Field(description="Matching and not closed (OPEN or INVESTIGATING)")
    overdue: int = Field(description="Matching, not closed and past due_at at the view's as-of time")


class DeviationPage(BaseModel):
    """A page of deviations; pass ``next_cursor`` as ``cursor`` for the next one (null: last page)."""

    items: list[TriagedDeviation]
    next_cursor: str | None
    counts: DeviationCounts = Field(description="Counts of every match, from the page's view generation")
    site_scope: str | None = Field(description="The site the answer is limited to (site tokens), else null")


class DeviationSummary(BaseModel):
    """The counts of the deviations matching the filters, without the rows."""

    counts: DeviationCounts
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
    """The list filters from the query string; ``from`` after ``to`` is a 422 like any bad filter."""
    if raised_from is not None and raised_to is not None and _aware(raised_from) > _aware(raised_to):
        raise HTTPException(
            422,
            [{"loc": ["query", "from"], "msg": "from is later than to", "type": "value_error"}],
        )
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


def _aware(t: datetime) -> datetime:
    """A naive time as UTC (the warehouse reads a naive filter time as UTC too)."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


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
        page, counts = await wh.run(
            wh.deviations_with_counts, flt, sort=sort, cursor=cursor, limit=limit, full_text=full
        )
    except BadQuery as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    return {
        "items": [_redact(i, principal) for i in page.items],
        "next_cursor": page.next_cursor,
        "counts": counts,
        "site_scope": flt.site if principal.role is Role.SITE else None,
    }


@router.get("/deviations/summary", response_model=DeviationSummary)
async def deviation_summary(
    principal: Annotated[Principal, Depends(authenticated)],
    wh: Annotated[Warehouse, Depends(warehouse)],
    flt: Annotated[DeviationFilter, Depends(deviation_filter)],
) -> dict[str, Any]:
    """The counts of the list for the same filters, without its rows (every role, site-scoped).

    ``total`` matching; ``not_closed`` by severity (OPEN or INVESTIGATING: the status filter's
    OPEN alone excludes INVESTIGATING); ``overdue``: not closed and past ``due_at``.
    """
    flt = scoped(flt, principal)
    counts = await wh.run(wh.deviation_counts, flt)
    return {"counts": counts, "site_scope": flt.site if principal.role is Role.SITE else None}


CSV_COLUMNS = [*LIST_COLUMNS, *RAISED_FACT_COLUMNS, *FULL_TEXT_COLUMNS]
EXPORT_PAGE_ROWS = 2000
# a spreadsheet reads a cell starting with one of these as a formula (OWASP "CSV injection")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# the last line of an export that failed part-way (the connection is then aborted as well)
EXPORT_ERROR_MARKER = "#ERROR: export incomplete"


def csv_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, prefixed with ``'``; anything else as is.

    Only strings are escaped: numbers (a negative value included) stay numbers.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


# hours to the minute and a bit: the view's full float precision is noise in a spreadsheet
CSV_ROUNDED = {"age_hours": 2}


def csv_cell(name: str, value: Any) -> Any:
    """One CSV cell: booleans as ``true``/``false`` (as in the JSON), hours rounded, text made safe."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if name in CSV_ROUNDED and isinstance(value, float):
        return round(value, CSV_ROUNDED[name])
    return csv_safe(value)


def csv_lines(pages: Iterator[list[dict[str, Any]]]) -> Iterator[str]:
    """The CSV text of every page: a header, then the rows, a chunk per page.

    When a page fails (a query error, or the pinned view generation was dropped), the body ends
    with a line ``#ERROR: export incomplete: …`` and the exception is raised again, so the
    server aborts the response before its end (no final chunk): a client cannot take the
    truncated file for a whole one, whether it checks the transfer or reads the last line.
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    try:
        for page in pages:
            for row in page:
                writer.writerow({k: csv_cell(k, v) for k, v in row.items()})
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    except Exception as exc:
        log.error("CSV export failed part-way: %s", exc)
        reason = "the view moved on; run the export again" if isinstance(exc, ViewMoved) else "query failed"
        yield buffer.getvalue() + f"{EXPORT_ERROR_MARKER}: {reason}; this file is truncated\r\n"
        raise
    yield buffer.getvalue()


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
    Every page comes from the view generation committed when the export started (one
    snapshot). Text cells that a spreadsheet would run as a formula (starting with ``=``,
    ``+``, ``-``, ``@``, tab or CR) are prefixed with ``'``. An export that fails before its
    first page is an error status (503); one that fails part-way ends with a line
    ``#ERROR: export incomplete: …`` and an aborted connection (no final chunk).
    """
    principal.require(Role.QUALITY, Role.SITE, action="CSV export")
    flt = scoped(flt, principal)
    pages = wh.deviation_pages(flt, sort=sort, block=EXPORT_PAGE_ROWS)
    # the first page before the status line: a warehouse that cannot answer is a 503, not a 200
    # with an empty or broken body
    first: list[dict[str, Any]] | None = await wh.run(next, pages, None)
    chained = itertools.chain([] if first is None else [first], pages)

    return StreamingResponse(
        csv_lines(chained),  # a sync generator: starlette runs it in the threadpool
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

    Quality tokens (every site) and site tokens (their own site). Operations tokens get 403:
    full deviation detail is quality's. Another site's deviation is a 404 for a site token,
    the same answer as a deviation that does not exist, so ids of other sites cannot be probed.
    """
    principal.require(Role.QUALITY, Role.SITE, action="full deviation detail")
    missing = HTTPException(status.HTTP_404_NOT_FOUND, f"no deviation {deviation_id}")
    try:
        item = await wh.run(wh.deviation, deviation_id)
    except NotFound as exc:
        raise missing from exc
    if not principal.may_see_site(item["site_id"]):
        raise missing
    return item
