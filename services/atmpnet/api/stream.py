"""The live stream of triaged deviations as Server-Sent Events, resumable from Last-Event-ID.

Source: the triage view ``deviation_triage`` (docs/views.md), the same rows and columns as the
list endpoint, so the queue a dashboard fills from the list and keeps up to date from the
stream follows one rule set: the projector's (``atmpnet.warehouse.views``). The API polls the
view's committed generation (one cheap query on ``view_generations`` per poll interval, 0.5 s)
and, when a new generation was committed, reads the rows whose cursor moved past the client's.

Cursor: ``(changed_at in µs, deviation id)``. ``changed_at`` is a column of the view: the ingest
time of the newest stored event that can change the deviation's class, severity, status or
duplicate_of (its own events and those of the deviations raised before it with the same
duplicate key; ``views.triage_changed_at``). It never decreases, so a deviation is sent again
whenever such an event arrives, and a client resuming from its last event id misses nothing.
Cluster sizes, software version and age are not re-sent on their own: they move with other
deviations and with time (the list has them fresh).

Latency: a write becomes visible after the projector's next refresh commits, then within one
poll. In the main job (``atmpnet up``) the background projector refreshes after each write,
at most once per refresh duration plus its 1 s pause: a few seconds end to end. Where a write
refreshes the views itself (tests, ``store`` in tests/integration/api_network.py) it is the poll
interval alone.

Why not consume the derived topic ``atmp.deviation-triage.v1``: in embedded mode the API shares
the process and the ClickHouse client with the processors, so polling needs no consumer group
per subscriber and no mapping from offsets to event ids, and a resume is one query. The topic
stays the interface for systems outside (a QMS, alerting).

Each SSE event carries ``id: <µs>-<deviation id>`` and the triaged deviation as JSON. A client
that reconnects with ``Last-Event-ID`` (browsers' EventSource do this by themselves; the
dashboard's fetch reader does it too) receives every deviation raised or changed after that
event; clients upsert by ``deviation_id``. Without Last-Event-ID the stream starts at the newest
``backlog`` deviations (default 0: only what arrives from now on). A Last-Event-ID that is not
an id of this stream (or whose µs part does not fit a signed 64-bit integer) is a 400.

Limit: the cursor assumes ingest times grow in commit order, which holds for one ingest writer;
with several concurrent writers a row could commit with an older ingest time than one already
sent, and a resume would skip it (docs/api.md).
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
PAGE_ROWS = 500  # rows per read; a full page is followed by the next at once
_EVENT_ID = re.compile(r"^(\d{1,19})-(.{1,128})$")
MAX_CURSOR_US = 2**63 - 1  # the cursor is bound as a ClickHouse Int64


def parse_event_id(value: str) -> tuple[int, str]:
    """The cursor in an SSE event id ``<µs>-<deviation id>``; 400 when it is not one of ours."""
    match = _EVENT_ID.match(value.strip())
    if match is None or int(match.group(1)) > MAX_CURSOR_US:
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
        read_generation: int | None = None
        more = True  # read once at start: rows may have changed since the client's cursor
        while not await request.is_disconnected():
            # the view changes only when the projector commits a generation: look at that first
            generation = await wh.run(wh.committed_generation)
            if more or generation != read_generation:
                read_generation = generation
                items = await wh.run(wh.deviation_changes, cursor, scope, limit=PAGE_ROWS)
                for item in items:
                    cursor, frame = format_event(item)
                    yield frame
                more = len(items) >= PAGE_ROWS
            if time.monotonic() - last_beat > HEARTBEAT_S:
                last_beat = time.monotonic()
                yield ": keep-alive\n\n"
            if not more:
                await asyncio.sleep(poll_s)

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
