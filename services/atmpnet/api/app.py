"""The query API and dashboard as one FastAPI app, and a uvicorn server that runs it in a thread.

``create_api(settings, client=...)`` builds the app on a ClickHouse client that the caller
owns (in embedded mode the process that owns the chDB data directory must also serve the API,
so the processor and the API share one client). ``ApiServer`` runs uvicorn in a background
thread with ``start()`` / ``stop()`` so the main job can run processors and API in one process.

chDB calls block: every query runs in the threadpool (``Warehouse.run``), never on the loop.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from clickhouse_connect.driver.client import Client
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atmpnet.api import dashboard, deviations, integrity, stream, views
from atmpnet.api.auth import TokenBook
from atmpnet.errors import AtmpError, WarehouseError
from atmpnet.settings import ApiToken, Settings
from atmpnet.warehouse.queries import Warehouse

log = logging.getLogger("atmpnet.api")

STATIC_DIR = Path(__file__).with_name("static")

DESCRIPTION = """\
Cross-site views of an advanced-therapy manufacturing network, for network operations and
quality. Every endpoint needs `Authorization: Bearer <token>`; the token's role decides what it
sees (operations: every site, views and deviation lists; quality: every site, full deviation
detail and CSV export; site: its own site only). 401 without a valid token, 403 outside the role.
"""


def create_api(
    settings: Settings,
    client: Client | None = None,
    *,
    client_factory: Callable[[], Client] | None = None,
    tokens: list[ApiToken] | None = None,
    stream_poll_s: float = 0.5,
) -> FastAPI:
    """The API and dashboard app, reading ClickHouse through ``client`` (or one made by the factory).

    ``tokens`` overrides ``settings.api_tokens`` (the serve command passes development tokens).
    """
    if client is None:
        if client_factory is None:
            raise AtmpError("create_api needs a ClickHouse client or a client_factory")
        client = client_factory()
    app = FastAPI(
        title="atmpnet query API",
        version="1",
        description=DESCRIPTION,
        openapi_tags=[
            {"name": "deviations", "description": "Triaged deviations: list, detail, CSV, live stream."},
            {"name": "views", "description": "Capacity, configuration drift, comparative performance."},
            {
                "name": "integrity",
                "description": "Completeness, integrity findings, attribution of view rows, batch digests.",
            },
        ],
    )
    app.state.settings = settings
    app.state.warehouse = Warehouse(client)
    app.state.tokens = TokenBook(tokens if tokens is not None else settings.api_tokens)
    app.state.stream_poll_s = stream_poll_s
    app.include_router(stream.router)  # before /deviations/{id}: "stream" is no deviation id
    app.include_router(deviations.router)
    app.include_router(views.router)
    app.include_router(integrity.router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(WarehouseError)
    async def _warehouse_down(request: Request, exc: WarehouseError) -> JSONResponse:
        log.error("query failed on %s: %s", request.url.path, exc)
        return JSONResponse({"detail": "the warehouse could not answer; see the server log"}, 503)

    app.add_middleware(AccessLog)

    @app.get("/healthz", include_in_schema=False)
    async def _health() -> dict[str, str]:
        return {"status": "ok"}

    return app


class AccessLog:
    """A debug line per request: method, path (never the query string), status, caller, time.

    A plain ASGI middleware, not ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware
    finishes a streamed body cleanly even when the endpoint fails part-way, which would make a
    truncated CSV export look complete; here the failure reaches the server, which aborts the
    connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through and log it when the app is done with it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def sending(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.debug(
                "%s %s %s %s %.1fms",
                scope["method"],
                scope["path"],
                status_code,
                scope.get("state", {}).get("principal_name", "-"),
                (time.perf_counter() - started) * 1000,
            )


def _free_port(host: str) -> int:
    # not atmpnet.embedded.free_port: nothing but the CLI imports embedded
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ApiServer:
    """uvicorn serving ``app`` in a background thread; ``stop()`` shuts it down cleanly."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or _free_port(host)
        config = uvicorn.Config(
            app, host=host, port=self.port, log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="atmpnet-api", daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> ApiServer:
        """Start serving and return once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise AtmpError(f"the API server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to exit (open SSE streams end) and wait for the thread."""
        self._server.should_exit = True
        self._server.force_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def api_tokens(settings: Settings, client: Client) -> tuple[list[ApiToken], Path | None]:
    """The configured tokens, or development tokens when none are configured.

    Development tokens (one per role and site in the store) are written to ``data_dir/api-tokens.json``
    (mode 0600) whose path is returned; never printed.
    """
    if settings.api_tokens:
        return list(settings.api_tokens), None
    from atmpnet.api.auth import development_tokens

    sites = Warehouse(client).sites()
    tokens, path = development_tokens(settings, sites or ["site-1", "site-2", "site-3", "site-4"])
    return tokens, path


def start_api(
    settings: Settings, client: Client, *, host: str | None = None, port: int | None = None
) -> tuple[ApiServer, Path | None]:
    """Create the app on ``client`` and serve it in a background thread (the main job's entry).

    Returns the running server (``.url``, ``.stop()``) and the development token file, if one
    was written. The processors may keep writing through the same client meanwhile.
    """
    tokens, path = api_tokens(settings, client)
    app = create_api(settings, client, tokens=tokens)
    server = ApiServer(app, host or settings.api_host, settings.api_port if port is None else port)
    return server.start(), path
