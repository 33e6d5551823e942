"""API keys of the HTTP ingest gateway: one or more per site, stored hashed, never logged.

A key reads ``atmp_<key id>_<secret>``. The key id is public (it names the key in logs and
in ``gateway list-keys``); the secret is 32 random bytes. The file keeps, per key, a random
salt and HMAC-SHA256(salt, secret), never the secret.

Why a fast keyed hash and not PBKDF2/scrypt/argon2: those slow hashes exist to protect
low-entropy passwords from guessing. A 256-bit random secret cannot be guessed however fast
the hash, so a slow KDF would add nothing but ~50-100 ms of CPU to every ingest request (and
a lever for denial of service). This is the usual scheme for random API tokens. Lookup goes
by key id, and the digest comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from atmpnet.errors import ConfigurationError
from atmpnet.settings import Settings

KEY_PREFIX = "atmp"
_SITE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # the envelope's site_id pattern
_KEY_ID = re.compile(r"^[0-9a-f]{12}$")
_ALGORITHM = "hmac-sha256"
_FILE_VERSION = 1


class KeyRole(StrEnum):
    """What a key may publish."""

    SITE = "site"  # events of its own site only
    NETWORK = "network"  # site-less events (validated baselines), from network quality


@dataclass(frozen=True)
class Principal:
    """Who a request authenticated as: the key id, its role and (for site keys) its site."""

    key_id: str
    role: KeyRole
    site_id: str | None
    label: str | None = None

    def __str__(self) -> str:
        who = f"site {self.site_id}" if self.role is KeyRole.SITE else "network quality"
        return f"key {self.key_id} ({who})"


@dataclass(frozen=True)
class KeyRecord:
    """One stored key: identity, role and the salted digest of its secret."""

    key_id: str
    role: str
    site_id: str | None
    label: str | None
    created_at: str
    salt: str
    digest: str
    algorithm: str = _ALGORITHM
    revoked_at: str | None = None

    def principal(self) -> Principal:
        """The principal this key authenticates as."""
        return Principal(self.key_id, KeyRole(self.role), self.site_id, self.label)


def default_keys_path(settings: Settings) -> Path:
    """The key file the settings name (``data_dir/gateway/keys.json`` by default)."""
    return settings.gateway_keys_path or settings.data_dir / "gateway" / "keys.json"


def _digest(salt: bytes, secret: str) -> str:
    return hmac.new(salt, secret.encode(), hashlib.sha256).hexdigest()


def split_key(token: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed key, else None."""
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not _KEY_ID.match(parts[1]) or len(parts[2]) < 32:
        return None
    return parts[1], parts[2]


class SiteKeyStore:
    """The gateway's keys in one JSON file; re-read when the file changes, so new keys work at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, KeyRecord] = {}
        self._stamp: tuple[int, int, int] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SiteKeyStore:
        """The store at the settings' key file."""
        return cls(default_keys_path(settings))

    # -- reading ------------------------------------------------------------------

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> dict[str, KeyRecord]:
        try:
            data: Any = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read gateway key file {self.path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("version") != _FILE_VERSION:
            raise ConfigurationError(f"gateway key file {self.path} is not a version-1 key file")
        try:
            records = [KeyRecord(**r) for r in data.get("keys", [])]
        except TypeError as exc:
            raise ConfigurationError(f"gateway key file {self.path} has a malformed record: {exc}") from exc
        return {r.key_id: r for r in records}

    def _refresh(self) -> None:
        stamp = self._file_stamp()
        if stamp != self._stamp:
            self._records = self._read()
            self._stamp = stamp

    def records(self) -> list[KeyRecord]:
        """Every stored key, revoked ones included (they stay for the audit trail)."""
        self._refresh()
        return sorted(self._records.values(), key=lambda r: r.created_at)

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal of a valid, unrevoked key; None for anything else."""
        parsed = split_key(token) if token else None
        if parsed is None:
            return None
        key_id, secret = parsed
        self._refresh()
        record = self._records.get(key_id)
        if record is None or record.revoked_at is not None or record.algorithm != _ALGORITHM:
            return None
        expected = _digest(bytes.fromhex(record.salt), secret)
        if not hmac.compare_digest(expected, record.digest):
            return None
        return record.principal()

    # -- writing ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, KeyRecord]]:
        """Read-modify-write under an exclusive lock; the file is replaced atomically, mode 0600."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = self._read()
            yield records
            body = {"version": _FILE_VERSION, "keys": [asdict(r) for r in records.values()]}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # a leftover temporary file keeps its old mode through O_CREAT
            with os.fdopen(fd, "w") as f:
                json.dump(body, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
            # the rename itself must survive a power cut, or a revoked key comes back
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def add(self, *, site_id: str | None, role: KeyRole = KeyRole.SITE, label: str | None = None) -> str:
        """Create a key and return it: the only time its secret is seen."""
        if role is KeyRole.SITE:
            if site_id is None or not _SITE_ID.match(site_id):
                raise ConfigurationError(
                    f"a site key needs a site id like 'site-boston' ({_SITE_ID.pattern}), not {site_id!r}"
                )
        elif site_id is not None:
            raise ConfigurationError("a network key belongs to no site")
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        salt = secrets.token_bytes(16)
        with self._locked() as records:
            key_id = secrets.token_hex(6)
            while key_id in records:
                key_id = secrets.token_hex(6)
            records[key_id] = KeyRecord(
                key_id=key_id,
                role=role.value,
                site_id=site_id,
                label=label,
                created_at=datetime.now(UTC).isoformat(),
                salt=salt.hex(),
                digest=_digest(salt, secret),
            )
        return f"{KEY_PREFIX}_{key_id}_{secret}"

    def revoke(self, key_id: str) -> bool:
        """Revoke a key by id; False when there is no such active key."""
        with self._locked() as records:
            record = records.get(key_id)
            if record is None or record.revoked_at is not None:
                return False
            records[key_id] = KeyRecord(**(asdict(record) | {"revoked_at": datetime.now(UTC).isoformat()}))
            return True
