"""Bearer tokens with roles, and the one rule that decides which sites a caller may see.

Roles (docs/api.md has the table per endpoint):

- ``operations``: every site; views and deviations, without the free-text and personnel fields
  of a deviation; no single-deviation detail, no CSV export.
- ``quality``: every site; full deviation detail and CSV export.
- ``site``: its own site only, everywhere; asking for another site (``site=``) is 403, asking
  for no site is answered for its own site; another site's object by id (a deviation, a batch,
  a view row) is 404, the same answer as for one that does not exist (no existence oracle).

Tokens are configured in settings (``api_tokens``). Only their SHA-256 digests are kept in
memory; a presented token is hashed and compared with ``hmac.compare_digest`` against every
digest (no early exit, no timing hint of which one matched). Neither tokens nor digests are
ever logged: the holder's ``name`` is what logs and audit lines carry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from fastapi import HTTPException, Request, status
from pydantic import SecretStr

from atmpnet.settings import ApiToken, Settings


class Role(StrEnum):
    """What a token holder is allowed to see."""

    OPERATIONS = "operations"
    QUALITY = "quality"
    SITE = "site"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a name for audit lines, a role, and its site for site tokens."""

    name: str
    role: Role
    site_id: str | None = None

    def sites_filter(self, requested: str | None) -> str | None:
        """The site a query must be limited to, or None for every site.

        A site token asking for another site gets 403; asking for none gets its own.
        """
        if self.role is Role.SITE:
            if requested is not None and requested != self.site_id:
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"a site token sees only site {self.site_id}")
            return self.site_id
        return requested

    def may_see_site(self, site_id: str) -> bool:
        """True when this caller may see data of ``site_id``."""
        return self.role is not Role.SITE or site_id == self.site_id

    def require(self, *roles: Role, action: str) -> None:
        """Raise 403 unless the caller holds one of ``roles``."""
        if self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"{action} needs role {allowed}")


def digest(token: str) -> bytes:
    """SHA-256 of a token (what is kept and compared)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenBook:
    """Configured tokens, held as digests only."""

    def __init__(self, tokens: list[ApiToken]) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        for t in tokens:
            secret = bytes.fromhex(t.token_sha256) if t.token_sha256 else digest(_secret(t.token))
            self._entries.append((secret, Principal(t.name, Role(t.role), t.site_id)))

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str) -> Principal | None:
        """The principal holding ``token``, or None; compares every digest in constant time."""
        presented = digest(token)
        found: Principal | None = None
        for secret, principal in self._entries:
            if hmac.compare_digest(secret, presented):
                found = principal
        return found


def _secret(value: SecretStr | None) -> str:
    assert value is not None
    return value.get_secret_value()


def bearer_token(request: Request) -> str | None:
    """The token from ``Authorization: Bearer …`` (the dashboard sends it from sessionStorage)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def authenticated(request: Request) -> Principal:
    """FastAPI dependency: the caller, or 401 when the token is missing or unknown."""
    book: TokenBook = request.app.state.tokens
    token = bearer_token(request)
    principal = book.authenticate(token) if token else None
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.principal_name = principal.name
    return principal


def development_tokens(settings: Settings, sites: list[str]) -> tuple[list[ApiToken], Path]:
    """Tokens for a local run when none are configured, written to ``data_dir/api-tokens.json``.

    The file is created with mode 0600 and reused on the next start; the secrets are never
    printed or logged (the caller prints the file's path).
    """
    path = settings.data_dir / "api-tokens.json"
    if path.exists():
        raw = json.loads(path.read_text(encoding="utf-8"))
    else:
        raw = [
            {"name": "network-operations", "role": "operations"},
            {"name": "network-quality", "role": "quality"},
        ] + [{"name": f"site-{s}", "role": "site", "site_id": s} for s in sites]
        for entry in raw:
            entry["token"] = secrets.token_urlsafe(24)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(raw, out, indent=2)
    return [ApiToken.model_validate(entry) for entry in raw], path
