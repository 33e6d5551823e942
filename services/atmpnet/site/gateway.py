"""HTTP ingest gateway: site systems not written in Python publish events as JSON over HTTP.

``POST /v1/events`` takes one event and ``POST /v1/events:batch`` a list, both in the JSON
format of ``contract/jsonl.py``. Every request carries a site's API key (``site_keys.py``);
a site publishes only as itself. Accepted events go through the same durable outbox as the
Python SDK: one ``SitePublisher`` per site, which stamps the per-module sequence numbers and
delivers to Kafka in the background, so 202 means "durably stored, will be delivered".
docs/ingest.md is the client's guide (curl examples, error format).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from copy import deepcopy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from atmpnet import telemetry
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import EVENT_TYPE_BY_RECORD, EVENT_TYPES, Event, ValidatedBaseline
from atmpnet.contract.examples import example_events
from atmpnet.contract.jsonl import EVENT_TYPE_BY_NAME, event_from_json, event_to_json
from atmpnet.errors import (
    AtmpError,
    ContractError,
    EventValidationError,
    FieldError,
    OutboxError,
    OutboxFull,
    PublishRefused,
)
from atmpnet.settings import Settings
from atmpnet.site.publisher import SitePublisher
from atmpnet.site.site_keys import KeyRole, Principal, SiteKeyStore

log = logging.getLogger(__name__)
_tracer = telemetry.tracer(__name__)
_events_counter = telemetry.meter(__name__).create_counter(
    "atmp.gateway.events", unit="{event}", description="Events received by the ingest gateway, by outcome."
)

INGEST_VIA = "http-gateway"
PROBLEM_JSON = "application/problem+json"
NETWORK = None  # the publisher key of site-less events (validated baselines)

# site id (None: network quality) -> the publisher that writes that site's outbox
PublisherFactory = Callable[[str | None], SitePublisher]
T = TypeVar("T")


# -- envelope fields the gateway stamps ---------------------------------------------


def complete_envelope(obj: Any, *, now: datetime | None = None) -> Any:
    """Fill the envelope fields a client may omit, before validation.

    ``sequence`` gets a placeholder (1): the site's publisher stamps the real per-module
    sequence, replacing whatever the client sent. ``published_at`` becomes now when absent,
    ``schema_version`` the event type's version when absent. Anything that is not the
    ``{"type", "event": {"envelope": {...}}}`` shape is returned as it is, for validation
    to name what is wrong.
    """
    if not isinstance(obj, dict):
        return obj
    event = obj.get("event")
    if not isinstance(event, dict) or not isinstance(event.get("envelope"), dict):
        return obj
    envelope = event["envelope"]
    filled = dict(envelope)
    filled.setdefault("sequence", 1)
    filled.setdefault("published_at", (now or datetime.now(UTC)).isoformat())
    event_type = EVENT_TYPE_BY_NAME.get(obj["type"]) if isinstance(obj.get("type"), str) else None
    if event_type is not None:
        filled.setdefault("schema_version", event_type.SCHEMA_VERSION)
    return {**obj, "event": {**event, "envelope": filled}}


def _locate(obj: Any, errors: list[FieldError]) -> list[FieldError]:
    """Paths from the whole JSON object: the model's own paths sit under ``event.``."""
    inner = (
        isinstance(obj, dict)
        and set(obj) == {"type", "event"}
        and isinstance(obj["type"], str)
        and obj["type"] in EVENT_TYPE_BY_NAME
    )
    if not inner:
        return errors
    return [FieldError(f"event.{e.path}" if e.path else "event", e.reason) for e in errors]


def parse_json_event(obj: Any, *, fill_stamped: bool = True, now: datetime | None = None) -> Event:
    """Validate one JSON event; EventValidationError paths start at the object (``event.envelope.lane``).

    With ``fill_stamped`` the fields a publisher stamps may be omitted (``complete_envelope``).
    """
    try:
        return event_from_json(complete_envelope(obj, now=now) if fill_stamped else obj)
    except EventValidationError as exc:
        raise EventValidationError(exc.event_type, _locate(obj, exc.errors)) from exc


def refusal(principal: Principal, event: Event) -> str | None:
    """Why ``principal`` may not publish ``event`` (None when it may): a site publishes only as itself."""
    site = event.envelope.site_id
    if principal.role is KeyRole.NETWORK:
        if site is None and isinstance(event, ValidatedBaseline):
            return None
        return (
            f"{principal} publishes only validated baselines without a site, "
            f"not {type(event).__name__} events" + (f" of site {site!r}" if site else "")
        )
    if isinstance(event, ValidatedBaseline):
        return f"{principal} cannot publish validated baselines: only a network-quality key may"
    if site != principal.site_id:
        return (
            f"{principal} publishes only as site {principal.site_id!r}; "
            f"the event's envelope.site_id is {site!r}"
        )
    return None


# -- responses ----------------------------------------------------------------------


class AcceptedEvent(BaseModel):
    """One event as stored in the site's outbox."""

    index: int = Field(description="Position in the request (0 for a single event).")
    event_id: str
    type: str = Field(description="Avro record name, e.g. atmp.BatchStep.")
    sequence: int = Field(description="The per-module sequence number the outbox stamped.")


class Accepted(BaseModel):
    """202: every event is durably in the site's outbox and will be delivered to Kafka."""

    accepted: list[AcceptedEvent]


class ProblemItem(BaseModel):
    """One failing field: ``index`` of the event in a batch, ``path`` in the JSON body, and why."""

    index: int | None = None
    path: str
    reason: str


class Problem(BaseModel):
    """Error body (RFC 9457 problem details, media type application/problem+json)."""

    status: int
    title: str
    code: str = Field(description="Stable machine-readable error code.")
    detail: str
    errors: list[ProblemItem] = Field(default_factory=list)


class GatewayProblem(Exception):
    """Raised inside a handler; rendered as a Problem response."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        errors: list[ProblemItem] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors or []
        self.headers = dict(headers or {})
        super().__init__(detail)


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _problem_response(p: GatewayProblem) -> JSONResponse:
    body = Problem(
        status=p.status, title=_TITLES.get(p.status, "Error"), code=p.code, detail=p.detail, errors=p.errors
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=False),
        status_code=p.status,
        headers=p.headers,
        media_type=PROBLEM_JSON,
    )


def _items(errors: list[FieldError], index: int | None, prefix: str = "") -> list[ProblemItem]:
    return [
        ProblemItem(index=index, path=f"{prefix}{e.path}" if e.path else prefix.rstrip("."), reason=e.reason)
        for e in errors
    ]


# -- one thread per site outbox ------------------------------------------------------


class _SiteLane:
    """A site's publisher, created and used only on its own thread.

    Writes of one site are then serialised (SQLite serialises them anyway) and the event loop
    never blocks on an outbox commit (an fsync). The publisher's own delivery thread shares the
    connection under the outbox's lock.
    """

    def __init__(self, site_id: str | None, factory: PublisherFactory) -> None:
        self.site_id = site_id
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"outbox-{site_id or 'network'}"
        )
        self._factory = factory
        self._publisher: SitePublisher | None = None

    def _get(self) -> SitePublisher:
        if self._publisher is None:
            self._publisher = self._factory(self.site_id)
        return self._publisher

    async def run(self, fn: Callable[[SitePublisher], T]) -> T:
        """Run ``fn(publisher)`` on the lane's thread, in the caller's trace context."""
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, ctx.run, lambda: fn(self._get()))

    def close(self, timeout_s: float) -> None:
        """Flush (up to ``timeout_s``) and close the publisher, then stop the thread."""

        def _close() -> None:
            if self._publisher is not None:
                self._publisher.close(timeout_s)

        try:
            self._executor.submit(_close).result()
        finally:
            self._executor.shutdown(wait=True)


def outbox_publishers(
    settings: Settings,
    *,
    bootstrap_servers: str,
    codec: AvroCodec,
    outbox_dir: Path | None = None,
    max_pending: int = 1_000_000,
    topic_of: Callable[[type[Event]], str] | None = None,
) -> PublisherFactory:
    """The default factory: one outbox file per site under ``data_dir/gateway/outbox``.

    Publishers stamp sequences and raise OutboxFull (the gateway answers 503) rather than
    block a request thread.
    """
    directory = outbox_dir or settings.data_dir / "gateway" / "outbox"

    def make(site_id: str | None) -> SitePublisher:
        directory.mkdir(parents=True, exist_ok=True)
        return SitePublisher(
            settings,
            bootstrap_servers=bootstrap_servers,
            outbox_path=directory / f"{site_id or 'network-quality'}.sqlite",
            codec=codec,
            site_id=site_id,
            assign_sequences=True,
            max_pending=max_pending,
            when_full="raise",
            topic_of=topic_of,
        )

    return make


# -- OpenAPI --------------------------------------------------------------------------


def _example_json(event: Event) -> dict[str, Any]:
    obj = event_to_json(event)
    for stamped in ("sequence", "published_at", "schema_version"):
        del obj["event"]["envelope"][stamped]
    return obj


def _examples() -> dict[str, dict[str, Any]]:
    out = {}
    for event in example_events():
        name = type(event).__name__
        who = "network-quality key" if event.envelope.site_id is None else f"key of {event.envelope.site_id}"
        out[name] = {"summary": f"{name} ({who})", "value": _example_json(event)}
    return out


def _event_request_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "event"],
        "additionalProperties": False,
        "properties": {
            "type": {"type": "string", "enum": sorted(EVENT_TYPE_BY_RECORD)},
            "event": {"oneOf": [{"$ref": f"#/components/schemas/{t.__name__}"} for t in EVENT_TYPES]},
        },
    }


def _event_components() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(t, "validation") for t in EVENT_TYPES], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = deepcopy(defs["$defs"])
    envelope = schemas["Envelope"]
    stamped = {
        "sequence": "Optional: the outbox stamps the per-module sequence (a value sent is replaced).",
        "published_at": "Optional: when absent, the time the gateway accepted the event.",
        "schema_version": "Optional: when absent, the event type's current schema version.",
    }
    envelope["required"] = [f for f in envelope["required"] if f not in stamped]
    for name, text in stamped.items():
        envelope["properties"][name]["description"] = text
    schemas["EventIn"] = _event_request_schema()
    schemas["EventBatchIn"] = {
        "type": "object",
        "required": ["events"],
        "additionalProperties": False,
        "properties": {
            "events": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/EventIn"}}
        },
    }
    return schemas


def _error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        401: "Missing, malformed, unknown or revoked API key.",
        403: "The key may not publish this event (another site's event, or a baseline from a site key).",
        413: "Body larger than the limit (or a batch with too many events).",
        422: "Not JSON, or events that fail validation: every failing field with its path and reason.",
        503: "The site's outbox is full (backpressure): retry after Retry-After seconds.",
    }
    out: dict[int | str, dict[str, Any]] = {
        c: {"model": Problem, "description": text[c], "content": {PROBLEM_JSON: {}}} for c in codes
    }
    out[422]["content"] = {
        PROBLEM_JSON: {
            "example": {
                "status": 422,
                "title": "Unprocessable Content",
                "code": "invalid_event",
                "detail": "1 event failed validation; none was accepted",
                "errors": [{"index": 0, "path": "event.envelope.lane", "reason": "required"}],
            }
        }
    }
    return out


# -- the app --------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes ``limit`` (chunked bodies too)."""
    declared = request.headers.get("content-length")
    too_large = GatewayProblem(
        413,
        "body_too_large",
        f"request body exceeds the limit of {limit} bytes",
        headers={"Connection": "close"},
    )
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_large
        except ValueError as exc:
            raise GatewayProblem(400, "bad_content_length", "Content-Length is not a number") from exc
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        reason = (
            f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else f"not JSON: {exc}"
        )
        raise GatewayProblem(
            422, "invalid_json", "the body is not JSON", [ProblemItem(path="", reason=reason)]
        ) from exc


class IngestGateway:
    """What the routes do: authenticate, validate, authorise, store in the site's outbox."""

    def __init__(
        self,
        settings: Settings,
        keys: SiteKeyStore,
        publisher_for_site: PublisherFactory,
        close_timeout_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self._factory = publisher_for_site
        self._close_timeout_s = close_timeout_s
        self._lanes: dict[str | None, _SiteLane] = {}
        self._lock = threading.Lock()
        self._retry_after = {"Retry-After": str(settings.gateway_retry_after_s)}

    def _lane_of(self, site_id: str | None) -> _SiteLane:
        with self._lock:
            lane = self._lanes.get(site_id)
            if lane is None:
                lane = self._lanes[site_id] = _SiteLane(site_id, self._factory)
            return lane

    async def aclose(self) -> None:
        """Flush and close every site's publisher (on app shutdown)."""
        with self._lock:
            closing = list(self._lanes.values())
            self._lanes.clear()
        for lane in closing:
            await asyncio.to_thread(lane.close, self._close_timeout_s)

    def authenticate(self, token: str | None) -> Principal:
        """The key's principal, or 401."""
        challenge = {"WWW-Authenticate": "Bearer"}
        if not token:
            raise GatewayProblem(
                401,
                "missing_key",
                "an API key is required: Authorization: Bearer <key> or X-Api-Key: <key>",
                headers=challenge,
            )
        principal = self.keys.authenticate(token)
        if principal is None:
            _events_counter.add(1, {"outcome": "unauthorized"})
            raise GatewayProblem(401, "invalid_key", "the API key is unknown or revoked", headers=challenge)
        return principal

    def validate(self, principal: Principal, objects: list[Any], prefix: Callable[[int], str]) -> list[Event]:
        """Every object as an event the principal may publish; else 422 (invalid) or 403 (not its own)."""
        now = datetime.now(UTC)
        site = {"site": principal.site_id or "network"}
        events: list[Event] = []
        invalid: list[ProblemItem] = []
        for i, obj in enumerate(objects):
            try:
                events.append(parse_json_event(obj, now=now))
            except EventValidationError as exc:
                invalid += _items(exc.errors, i, prefix(i))
        seen: dict[str, int] = {}
        for i, event in enumerate(events if not invalid else []):
            first = seen.setdefault(str(event.envelope.event_id), i)
            if first != i:
                reason = f"same event_id as the event at index {first}"
                invalid.append(
                    ProblemItem(index=i, path=f"{prefix(i)}event.envelope.event_id", reason=reason)
                )
        if invalid:
            _events_counter.add(len(objects), {"outcome": "invalid", **site})
            failed = len({p.index for p in invalid})
            detail = f"{failed} of {len(objects)} events failed validation; none was accepted"
            raise GatewayProblem(422, "invalid_event", detail, invalid)
        refused = [
            ProblemItem(index=i, path=f"{prefix(i)}event.envelope.site_id", reason=why)
            for i, event in enumerate(events)
            if (why := refusal(principal, event)) is not None
        ]
        if refused:
            log.warning("refused %d events from %s: %s", len(refused), principal, refused[0].reason)
            _events_counter.add(len(objects), {"outcome": "forbidden", **site})
            raise GatewayProblem(403, "site_mismatch", refused[0].reason, refused)
        return events

    async def store(self, principal: Principal, events: list[Event]) -> list[Event]:
        """Write the events to the principal's outbox in one transaction; 503 when it is full."""
        site = {"site": principal.site_id or "network"}
        attributes = telemetry.span_attributes(
            **{
                "atmp.ingest.via": INGEST_VIA,
                "atmp.gateway.key_id": principal.key_id,
                "atmp.site_id": principal.site_id,
                "atmp.events": len(events),
                "atmp.producer.id": events[0].envelope.producer.id,
            }
        )
        with _tracer.start_as_current_span("gateway.ingest", attributes=attributes):
            lane = self._lane_of(principal.site_id if principal.role is KeyRole.SITE else NETWORK)
            try:
                stored = await lane.run(functools.partial(_publish, events=events))
            except OutboxFull as exc:
                _events_counter.add(len(events), {"outcome": "outbox_full", **site})
                log.warning("outbox of %s is full: %s", principal, exc)
                # the client gets no server path: the details are in the log above
                detail = "the site's outbox is full (the broker is not acknowledging in time); retry later"
                raise GatewayProblem(503, "outbox_full", detail, headers=self._retry_after) from exc
            except PublishRefused as exc:
                raise GatewayProblem(403, "publish_refused", str(exc)) from exc
            except OutboxError as exc:
                log.error("outbox of %s failed: %s", principal, exc)
                detail = "the outbox cannot be written now"
                raise GatewayProblem(503, "outbox_unavailable", detail, headers=self._retry_after) from exc
            except ContractError as exc:
                raise GatewayProblem(422, "invalid_event", str(exc)) from exc
            except AtmpError as exc:
                log.error("publishing for %s failed: %s", principal, exc)
                raise GatewayProblem(500, "publish_failed", "the events could not be stored") from exc
        _events_counter.add(len(stored), {"outcome": "accepted", **site})
        log.info(
            "accepted %d events via %s from %s (producer %s)",
            len(stored),
            INGEST_VIA,
            principal,
            stored[0].envelope.producer.id,
        )
        return stored

    async def ingest(
        self, principal: Principal, objects: list[Any], prefix: Callable[[int], str]
    ) -> Accepted:
        """Validate, authorise and store; the 202 body."""
        stored = await self.store(principal, self.validate(principal, objects, prefix))
        return Accepted(
            accepted=[
                AcceptedEvent(
                    index=i, event_id=str(e.envelope.event_id), type=e.RECORD, sequence=e.envelope.sequence
                )
                for i, e in enumerate(stored)
            ]
        )


def _install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, as a problem+json body."""

    @app.exception_handler(GatewayProblem)
    async def _on_problem(_request: Request, exc: GatewayProblem) -> JSONResponse:
        return _problem_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _TITLES.get(exc.status_code, "error").lower().replace(" ", "_")
        return _problem_response(GatewayProblem(exc.status_code, code, str(exc.detail), headers=exc.headers))

    @app.exception_handler(RequestValidationError)
    async def _on_request_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        items = [ProblemItem(path=".".join(str(p) for p in e["loc"]), reason=e["msg"]) for e in exc.errors()]
        return _problem_response(GatewayProblem(422, "invalid_request", "the request is invalid", items))


def _install_openapi(app: FastAPI) -> None:
    """OpenAPI with the event schemas (from the models) beside the routes' own."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_event_components())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _request_body(schema: str, examples: dict[str, Any]) -> dict[str, Any]:
    content = {"schema": {"$ref": f"#/components/schemas/{schema}"}, "examples": examples}
    return {"requestBody": {"required": True, "content": {"application/json": content}}}


_DESCRIPTION = (
    'Events use the JSON format `{"type": "atmp.BatchStep", "event": {...}}` (schemas below; '
    "`envelope.sequence`, `published_at` and `schema_version` may be omitted). Authenticate with "
    "`Authorization: Bearer <key>` or `X-Api-Key: <key>`. A site key publishes only events whose "
    "`envelope.site_id` is its own site; validated baselines (no site) need a network-quality key. "
    "Errors are `application/problem+json` bodies with a `code` and, for validation, every failing "
    "field's `path` and `reason`. 202 means the events are durably in the site's outbox; delivery "
    "to Kafka follows in the background."
)


def create_gateway(
    settings: Settings,
    *,
    keys: SiteKeyStore,
    publisher_for_site: PublisherFactory,
    close_timeout_s: float = 10.0,
) -> FastAPI:
    """The ingest gateway app: authenticates site keys and writes events to per-site outboxes.

    ``publisher_for_site(site_id)`` makes the publisher of one site's outbox (``None``: the
    network-quality publisher of validated baselines); it is called once per site, lazily, on
    that site's own thread. Publishers are flushed and closed when the app shuts down.
    """
    gateway = IngestGateway(settings, keys, publisher_for_site, close_timeout_s)
    max_body = settings.gateway_max_body_bytes
    max_events = settings.gateway_max_batch_events

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    app = FastAPI(
        title="atmpnet ingest gateway",
        version="1",
        summary="Site systems publish manufacturing events over HTTP; each site with its own API key.",
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    _install_error_handlers(app)
    _install_openapi(app)
    bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer atmp_<id>_<secret>`")
    api_key = APIKeyHeader(name="X-Api-Key", auto_error=False, description="`X-Api-Key: atmp_<id>_<secret>`")

    def principal_of(
        credentials: HTTPAuthorizationCredentials | None = Security(bearer),
        x_api_key: str | None = Security(api_key),
    ) -> Principal:
        return gateway.authenticate(credentials.credentials if credentials is not None else x_api_key)

    examples = _examples()
    batch_example = {"events": [e["value"] for e in list(examples.values())[:3]]}

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=Accepted,
        summary="Publish one event",
        responses=_error_responses(401, 403, 413, 422, 503),
        openapi_extra=_request_body("EventIn", examples),
    )
    async def publish_event(request: Request, principal: Principal = Security(principal_of)) -> Accepted:
        """Validate one event, check it belongs to the key's site, and store it in the site's outbox."""
        obj = _json(await _read_body(request, max_body))
        return await gateway.ingest(principal, [obj], prefix=lambda _i: "")

    @app.post(
        "/v1/events:batch",
        status_code=202,
        response_model=Accepted,
        summary="Publish a batch of events (all or none)",
        responses=_error_responses(401, 403, 413, 422, 503),
        openapi_extra=_request_body(
            "EventBatchIn", {"site-boston": {"summary": "Three events of one site", "value": batch_example}}
        ),
    )
    async def publish_batch(request: Request, principal: Principal = Security(principal_of)) -> Accepted:
        """Validate every event; if all are valid and the key's own, store them in one outbox transaction.

        The batch is atomic: one invalid or refused event and none is stored; the errors name
        each failing event by its index.
        """
        body = _json(await _read_body(request, max_body))
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list) or not events or set(body) != {"events"}:
            raise GatewayProblem(
                422,
                "invalid_batch",
                'a batch is {"events": [event, ...]} with at least one event',
                [ProblemItem(path="events", reason="required: a non-empty list of events")],
            )
        if len(events) > max_events:
            detail = f"a batch holds at most {max_events} events, got {len(events)}"
            raise GatewayProblem(413, "too_many_events", detail)
        return await gateway.ingest(principal, events, prefix=lambda i: f"events.{i}.")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _publish(publisher: SitePublisher, *, events: list[Event]) -> list[Event]:
    """One event through ``publish``, more through one ``publish_many`` transaction."""
    if len(events) == 1:
        return [publisher.publish(events[0])]
    return publisher.publish_many(events)
