"""Open ClickHouse: a server when ``clickhouse_url`` is set, else embedded chDB in ``data_dir``.

Both are clickhouse-connect ``Client`` objects, so one code path serves both. chDB allows
one process per data directory; in embedded mode the process that writes also serves reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from atmpnet.errors import WarehouseError
from atmpnet.settings import Settings


def embedded_path(settings: Settings) -> Path:
    """The chDB data directory inside ``data_dir``."""
    return settings.data_dir / "clickhouse"


def connect(settings: Settings, database: str | None = None) -> Client:
    """A client on ``database`` (default: the configured one), created if it does not exist."""
    database = database or settings.clickhouse_database
    try:
        if settings.clickhouse_url is None:
            path = embedded_path(settings)
            path.mkdir(parents=True, exist_ok=True)
            admin = clickhouse_connect.get_client(dsn=f"chdb://{path.resolve()}")
            admin.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            return clickhouse_connect.get_client(dsn=f"chdb://{path.resolve()}", database=database)
        url = urlparse(settings.clickhouse_url)
        password = settings.clickhouse_password.get_secret_value() if settings.clickhouse_password else ""
        common: dict[str, Any] = {
            "host": url.hostname,
            "port": url.port or (8443 if url.scheme == "https" else 8123),
            "username": settings.clickhouse_user,
            "password": password,
            "secure": url.scheme == "https",
        }
        admin = clickhouse_connect.get_client(**common)
        admin.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        return clickhouse_connect.get_client(**common, database=database)
    except Exception as exc:  # clickhouse-connect raises several unrelated types
        where = settings.clickhouse_url or f"chdb://{embedded_path(settings)}"
        raise WarehouseError(f"cannot open ClickHouse at {where}: {exc}") from exc
