"""Versioned ClickHouse migrations: numbered SQL files applied in order, recorded in a table.

``migrations/NNNN_name.sql`` holds one or more statements separated by ``;`` at a line end.
Table names are unqualified (the client's database) unless a file uses the ``{database}``
placeholder. Each applied file is recorded in ``schema_migrations`` with a checksum of its
text: re-applying is a no-op, and a file altered after it was applied is refused, because the
database no longer matches what the file says. The same SQL runs on chDB and a ClickHouse
server; deploy tooling reads ``migrations_dir`` / ``load_migrations`` to render cluster DDL.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client

from atmpnet.errors import WarehouseError

migrations_dir = Path(__file__).with_name("migrations")

MIGRATIONS_TABLE = "schema_migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# a statement ends at a ';' that closes its line; DDL here never has ';' inside a literal
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")


class MigrationError(WarehouseError):
    """A migration file is malformed, was altered after it was applied, or failed to apply."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    path: Path
    sql: str
    checksum: str

    def statements(self, database: str | None = None) -> list[str]:
        """The file's statements, comments dropped, ``{database}`` filled in when given."""
        text = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        if database is not None:
            text = text.replace("{database}", f"`{database}`")
        return [s.strip() for s in _STATEMENT_END.split(text) if s.strip()]


@dataclass(frozen=True)
class AppliedMigration:
    """A row of ``schema_migrations``."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


def load_migrations(directory: Path = migrations_dir) -> list[Migration]:
    """Every migration file in ``directory``, in version order; refuses duplicate versions."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is also {found[version].path.name}")
        sql = path.read_text(encoding="utf-8").replace("\r\n", "\n")
        checksum = hashlib.sha256(sql.encode("utf-8")).hexdigest()
        found[version] = Migration(version, match.group(2), path, sql, checksum)
    return [found[v] for v in sorted(found)]


def _ensure_table(client: Client) -> None:
    client.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        " version UInt32, name String, checksum String, applied_at DateTime64(6, 'UTC')"
        ") ENGINE = MergeTree ORDER BY version"
    )


def applied_migrations(client: Client) -> dict[int, AppliedMigration]:
    """What ``schema_migrations`` records, by version."""
    _ensure_table(client)
    rows = client.query(
        f"SELECT version, any(name), any(checksum), min(applied_at) FROM {MIGRATIONS_TABLE} "  # noqa: S608
        "GROUP BY version"
    ).result_rows
    return {int(r[0]): AppliedMigration(int(r[0]), r[1], r[2], r[3]) for r in rows}


def apply_migrations(client: Client, directory: Path = migrations_dir) -> list[Migration]:
    """Apply the migrations not applied yet, in order; return those applied now.

    Refuses (MigrationError) when an applied file's text changed: fix forward with a new file.
    A file that fails half-way is not recorded; its statements use IF NOT EXISTS, so the next
    start applies it again from the top.
    """
    migrations = load_migrations(directory)
    try:
        done = applied_migrations(client)
    except Exception as exc:
        raise MigrationError(f"cannot read {MIGRATIONS_TABLE}: {exc}") from exc
    for migration in migrations:
        recorded = done.get(migration.version)
        if recorded is not None and recorded.checksum != migration.checksum:
            raise MigrationError(
                f"migration {migration.path.name} was altered after it was applied "
                f"(checksum {recorded.checksum[:12]} recorded, {migration.checksum[:12]} now); "
                "add a new migration instead of editing an applied one"
            )
    applied: list[Migration] = []
    for migration in migrations:
        if migration.version in done:
            continue
        for statement in migration.statements(client.database):
            try:
                client.command(statement)
            except Exception as exc:  # clickhouse-connect raises several unrelated types
                raise MigrationError(
                    f"migration {migration.path.name} failed on: {statement[:120]}...: {exc}"
                ) from exc
        client.insert(
            MIGRATIONS_TABLE,
            [[migration.version, migration.name, migration.checksum, datetime.now(UTC)]],
            column_names=["version", "name", "checksum", "applied_at"],
        )
        applied.append(migration)
    return applied
