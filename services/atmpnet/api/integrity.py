"""Data-integrity endpoints (issue 7): completeness, findings, attribution and the batch review digest.

Every role reads completeness, findings and attribution (a site token: its own site only). The
digest carries deviation free text and operator identities, so it follows the deviation
detail's rule: quality and site roles. A site token asking for another site's batch or view row
gets 404, the answer for one that does not exist.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import HTMLResponse

from atmpnet.api.auth import Principal, Role, authenticated
from atmpnet.api.deviations import warehouse
from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import BatchStep, Deviation
from atmpnet.errors import PayloadError
from atmpnet.rules.digest import BatchDigest, build_digest
from atmpnet.rules.digest_html import render_digest_html
from atmpnet.rules.integrity import Finding, FindingKind, FindingSeverity
from atmpnet.warehouse.queries import ATTRIBUTION, BadQuery, NotFound, Warehouse

router = APIRouter(prefix="/api/v1", tags=["integrity"])

SiteQuery = Annotated[str | None, Query(description="Limit to one site (site tokens: their own, implied)")]
BatchPath = Annotated[str, Path(min_length=1, max_length=128, description="The batch id")]
# the printable page is self-contained: its own inline styles, nothing else loads or runs
DIGEST_HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"


@router.get("/completeness")
async def completeness(
    principal: Annotated[Principal, Depends(authenticated)],
    wh: Annotated[Warehouse, Depends(warehouse)],
    site: SiteQuery = None,
) -> dict[str, Any]:
    """Per site: events expected from each stream's sequence numbers, received, and received on time.

    ``received_share`` = received / expected; ``on_time_share`` = received within the lateness bound
    / expected; ``findings`` counts the site's integrity findings by kind (docs/integrity.md).
    """
    return await wh.run(wh.completeness, principal.sites_filter(site))


@router.get("/integrity/findings")
async def findings(
    principal: Annotated[Principal, Depends(authenticated)],
    wh: Annotated[Warehouse, Depends(warehouse)],
    site: SiteQuery = None,
    batch: Annotated[str | None, Query(description="Only findings naming this batch")] = None,
) -> dict[str, Any]:
    """Data-integrity findings (chain breaks, gaps, skew, late arrivals, lane segregation) with evidence."""
    rows = await wh.run(wh.integrity_findings, principal.sites_filter(site), batch)
    return {"findings": rows}


@router.get("/attribution")
async def attribution(
    principal: Annotated[Principal, Depends(authenticated)],
    wh: Annotated[Warehouse, Depends(warehouse)],
    view: Annotated[
        str, Query(description="View name: " + ", ".join(f"{k} (key: {v})" for k, v in ATTRIBUTION.items()))
    ],
    key: Annotated[str, Query(min_length=1, max_length=300, description="The row's key in that view")],
) -> dict[str, Any]:
    """The event ids behind one view row (every view row is traceable to the events it was computed from).

    A row of another site is a 404 for a site token, the same answer as a row that does not
    exist (no probing of other sites' keys).
    """
    missing = HTTPException(status.HTTP_404_NOT_FOUND, f"no {view} row {key}")
    try:
        answer = await wh.run(wh.attribution, view, key)
    except NotFound as exc:
        raise missing from exc
    except BadQuery as exc:
        raise HTTPException(422, str(exc)) from exc
    if not answer["site_id"] and principal.role is Role.SITE:
        raise missing  # a network-wide row (no site) is not one site's
    if answer["site_id"] and not principal.may_see_site(answer["site_id"]):
        raise missing
    return answer


def _codec(request: Request) -> AvroCodec:
    codec: AvroCodec | None = getattr(request.app.state, "codec", None)
    if codec is None:
        codec = AvroCodec(SchemaCatalog.load(request.app.state.settings.schema_dir))
        request.app.state.codec = codec
    return codec


def _finding(row: dict[str, Any]) -> Finding:
    def t(v: str | None) -> datetime | None:
        return datetime.fromisoformat(v) if v else None

    return Finding(
        FindingKind(row["kind"]),
        FindingSeverity(row["severity"]),
        row["site_id"] or None,
        row["module_id"],
        row["stream"],
        tuple(str(e) for e in row["evidence"]),
        row["message"],
        t(row["first_at"]),
        t(row["last_at"]),
        lane=row["lane"],
        batch_id=row["batch_id"],
        sequences=tuple(int(n) for n in row["sequences"]),
    )


def _batch_digest(wh: Warehouse, codec: AvroCodec, principal: Principal, batch_id: str) -> BatchDigest:
    site, step_raws, deviation_raws = wh.batch_events(batch_id)
    # another site's batch answers as one that does not exist (no probing of other sites' ids)
    if site is None or not principal.may_see_site(site):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no batch {batch_id}")
    steps, deviations = [], []
    for raw in step_raws + deviation_raws:
        try:
            event = codec.decode(raw)
        except PayloadError:
            continue  # stored without its bytes (tests' hand-built rows): nothing to review from
        if isinstance(event, BatchStep):
            steps.append(event)
        elif isinstance(event, Deviation):
            deviations.append(event)
    ctx = wh.digest_context(batch_id, site)
    return build_digest(
        batch_id,
        steps,
        deviations,
        ctx["triage"],
        ctx["drift"],
        [_finding(r) for r in ctx["findings"]],
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Finding):
        out = _jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
        out.update(finding_id=value.finding_id, alarm_code=value.alarm_code)
        return out
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    return value


def digest_json(digest: BatchDigest) -> dict[str, Any]:
    """The digest as JSON: every field, step durations in seconds, and the verdict line."""
    out: dict[str, Any] = _jsonable(digest)
    out["steps"] = [dict(_jsonable(s), duration_seconds=_jsonable(s.duration)) for s in digest.steps]
    out["verdict"] = digest.verdict
    return out


@router.get("/batches/{batch_id}/digest")
async def batch_digest(
    principal: Annotated[Principal, Depends(authenticated)],
    wh: Annotated[Warehouse, Depends(warehouse)],
    request: Request,
    batch_id: BatchPath,
) -> dict[str, Any]:
    """Review by exception of one batch, with the verdict line.

    Its steps and times, deviations with triage, drift in force during its steps, integrity
    findings, and every exception in time order.
    """
    principal.require(Role.QUALITY, Role.SITE, action="a batch digest (operator names, free text)")
    digest = await wh.run(_batch_digest, wh, _codec(request), principal, batch_id)
    return digest_json(digest)


@router.get("/batches/{batch_id}/digest.html", response_class=HTMLResponse)
async def batch_digest_html(
    principal: Annotated[Principal, Depends(authenticated)],
    wh: Annotated[Warehouse, Depends(warehouse)],
    request: Request,
    batch_id: BatchPath,
) -> HTMLResponse:
    """The digest as one self-contained printable HTML page (print to PDF from the browser)."""
    principal.require(Role.QUALITY, Role.SITE, action="a batch digest (operator names, free text)")
    digest = await wh.run(_batch_digest, wh, _codec(request), principal, batch_id)
    response = HTMLResponse(render_digest_html(digest))
    response.headers["Content-Security-Policy"] = DIGEST_HTML_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
