"""Dashboard pages: HTML shells rendered from templates/, filled by local JavaScript from the API.

The pages hold no data, so they are served without a token; their scripts read the token the
login page stored in ``sessionStorage`` (gone when the tab closes, never in a URL or a cookie)
and send it as ``Authorization: Bearer`` to the API. A strict Content-Security-Policy
(``'self'`` only) keeps every asset local and refuses inline script.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
PAGES = {
    "overview": "Network overview",
    "drift": "Configuration drift",
    "performance": "Comparative performance",
    "triage": "Deviation triage",
}


# pages reached by links, not from the navigation
LINKED_PAGES = {"digest": "Batch review digest"}


def _page(request: Request, name: str) -> HTMLResponse:
    title = PAGES.get(name) or LINKED_PAGES.get(name, "Sign in")
    response = templates.TemplateResponse(
        request, f"{name}.html", {"page": name, "title": title, "pages": PAGES}
    )
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.get("/")
async def root() -> RedirectResponse:
    """The dashboard starts at the network overview."""
    return RedirectResponse("/overview")


@router.get("/login", response_class=HTMLResponse)
async def login(request: Request) -> HTMLResponse:
    """Token entry: the token is checked against the API and kept in sessionStorage."""
    return _page(request, "login")


@router.get("/overview", response_class=HTMLResponse)
async def overview(request: Request) -> HTMLResponse:
    """Network overview: capacity per site, lane states, utilization, in progress, forecast."""
    return _page(request, "overview")


@router.get("/drift", response_class=HTMLResponse)
async def drift(request: Request) -> HTMLResponse:
    """Configuration drift matrix."""
    return _page(request, "drift")


@router.get("/performance", response_class=HTMLResponse)
async def performance(request: Request) -> HTMLResponse:
    """Comparative performance against the network median."""
    return _page(request, "performance")


@router.get("/triage", response_class=HTMLResponse)
async def triage(request: Request) -> HTMLResponse:
    """Live deviation triage queue."""
    return _page(request, "triage")


@router.get("/digest", response_class=HTMLResponse)
async def digest(request: Request) -> HTMLResponse:
    """Batch review digest (``?batch=<id>``), with its printable export."""
    return _page(request, "digest")
