"""The live stream of triaged deviations as Server-Sent Events, resumable from Last-Event-ID.

Source: the API polls the triage query by a monotonically increasing cursor, ``(ingest time in
µs, deviation id)`` of each deviation's newest event, rather than consuming the derived topic
``atmp.deviation-triage.v1``. Why: in embedded mode the API already shares the process and the
ClickHouse client with the processors, so polling needs no consumer group per subscriber, no
offsets to map to event ids, and a resume is one query from the cursor; a new or changed
deviation is visible here as soon as its write commits (within one poll interval, 0.5 s).

Each SSE event carries ``id: <µs>-<deviation id>`` and the triaged deviation as JSON. A client
that reconnects with ``Last-Event-ID`` (browsers' EventSource do this by themselves; the
dashboard's fetch reader does it too) receives every deviation raised or changed after that
event, including UPDATED and CLOSED transitions (a changed deviation is sent again; clients
upsert by ``deviation_id``). Without Last-Event-ID the stream starts at the newest
``backlog`` deviations (default 0: only what arrives from now on).

Limit: the cursor assumes ingest times grow in commit order, which holds for one writer per
deviation partition; with several concurrent writers a row could commit with an older ingest
time than one already sent, and a resume would skip it (docs/api.md).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse

from atmpnet.api.auth import Principal, authenticated
from atmpnet.api.deviations import warehouse
from atmpnet.warehouse.queries import Warehouse

router = APIRouter(prefix="/api/v1", tags=["deviations"])

HEARTBEAT_S = 15.0
_EVENT_ID = re.compile(r"^(\d{1,19})-(.{1,128})$")


def parse_event_id(value: str) -> tuple[int, str]:
    """The cursor in an SSE event id ``<µs>-<deviation id>``; 400 when it is not one of ours."""
    match = _EVENT_ID.match(value.strip())
    if match is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Last-Event-ID is not an event id of this stream")
    return int(match.group(1)), match.group(2)


def format_event(item: dict[str, Any]) -> tuple[tuple[int, str], str]:
    """The item's cursor and its SSE frame."""
    cursor = (int(item.pop("_cursor")), str(item["deviation_id"]))
    frame = f"id: {cursor[0]}-{cursor[1]}\nevent: deviation\ndata: {json.dumps(item, default=str)}\n\n"
    return cursor, frame


@router.get(
    "/deviations/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE of triaged deviations"}},
)
async def deviation_stream(
    request: Request,
    principal: Annotated[Principal, Depends(authenticated)],
    wh: Annotated[Warehouse, Depends(warehouse)],
    site: Annotated[
        str | None, Query(description="Limit to one site (site tokens: their own, implied)")
    ] = None,
    backlog: Annotated[int, Query(ge=0, le=1000, description="Newest deviations to send first")] = 0,
    last_event_id: Annotated[str | None, Header(description="Resume after this event id")] = None,
) -> StreamingResponse:
    """Triaged deviations as Server-Sent Events (``event: deviation``), live, resumable.

    Every role; a site token gets its own site's deviations only.
    """
    scope = principal.sites_filter(site)
    poll_s: float = request.app.state.stream_poll_s
    if last_event_id:
        cursor: tuple[int, str] | None = parse_event_id(last_event_id)
        first: list[dict[str, Any]] = []
    else:
        first = await wh.run(wh.deviation_changes, None, scope, limit=max(backlog, 1), newest=True)
        cursor = (int(first[-1]["_cursor"]), str(first[-1]["deviation_id"])) if first else (0, "")
        first = first[-backlog:] if backlog else []

    async def frames() -> AsyncIterator[str]:
        nonlocal cursor
        yield "retry: 2000\n\n"
        for item in first:
            yield format_event(item)[1]
        last_beat = time.monotonic()
        while not await request.is_disconnected():
            items = await wh.run(wh.deviation_changes, cursor, scope)
            for item in items:
                cursor, frame = format_event(item)
                yield frame
            if time.monotonic() - last_beat > HEARTBEAT_S:
                last_beat = time.monotonic()
                yield ": keep-alive\n\n"
            if len(items) < 500:
                await asyncio.sleep(poll_s)

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
