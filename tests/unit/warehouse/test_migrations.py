"""Migrations: applied in order, recorded, idempotent, refused when altered; tables behave on replay."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from atmpnet.warehouse.migrations import (
    MIGRATIONS_TABLE,
    MigrationError,
    apply_migrations,
    load_migrations,
    migrations_dir,
)
from clickhouse_connect.driver.client import Client

EVENT_TABLES = ("batch_steps", "sensor_summaries", "deviations", "module_configs", "baselines")


def test_files_are_numbered_and_split_into_statements() -> None:
    migrations = load_migrations()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions)
    assert versions[:2] == [1, 2]
    first = migrations[0]
    assert first.name == "event_store"
    statements = first.statements()
    assert len(statements) == len(EVENT_TABLES)
    assert all(s.startswith("CREATE TABLE IF NOT EXISTS") for s in statements)
    assert not any("--" in s for s in statements)


def test_duplicate_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;\n")
    (tmp_path / "0001_b.sql").write_text("SELECT 2;\n")
    with pytest.raises(MigrationError, match="version 1"):
        load_migrations(tmp_path)


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_first.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="NNNN_lower_snake"):
        load_migrations(tmp_path)


@pytest.mark.integration
def test_apply_records_and_is_idempotent(clickhouse: Client) -> None:
    applied = apply_migrations(clickhouse)
    assert [m.version for m in applied] == [m.version for m in load_migrations()]
    tables = {r[0] for r in clickhouse.query("SHOW TABLES").result_rows}
    assert {*EVENT_TABLES, "dead_letters", MIGRATIONS_TABLE} <= tables
    assert apply_migrations(clickhouse) == []
    rows = clickhouse.query(f"SELECT version, name, checksum FROM {MIGRATIONS_TABLE} ORDER BY version")
    assert [(r[0], r[1], r[2]) for r in rows.result_rows] == [
        (m.version, m.name, m.checksum) for m in load_migrations()
    ]


@pytest.mark.integration
def test_datetimes_are_utc_datetime64(clickhouse: Client) -> None:
    apply_migrations(clickhouse)
    types = clickhouse.query(
        "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() "
        "AND type LIKE '%DateTime%'"
    ).result_rows
    assert types
    assert all("DateTime64(6, 'UTC')" in t for _, _, t in types), types


@pytest.mark.integration
def test_altered_applied_migration_is_refused(clickhouse: Client, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    shutil.copy(migrations_dir / "0001_event_store.sql", directory)
    assert len(apply_migrations(clickhouse, directory)) == 1
    target = directory / "0001_event_store.sql"
    target.write_text(target.read_text() + "\n-- an edit after release\n")
    with pytest.raises(MigrationError, match="altered after it was applied"):
        apply_migrations(clickhouse, directory)


@pytest.mark.integration
def test_new_migration_applies_after_earlier_ones(clickhouse: Client, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    shutil.copy(migrations_dir / "0001_event_store.sql", directory)
    apply_migrations(clickhouse, directory)
    (directory / "0002_extra.sql").write_text(
        "-- two statements in one file\n"
        "CREATE TABLE IF NOT EXISTS extra_a (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
        "CREATE TABLE IF NOT EXISTS {database}.extra_b (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
    )
    assert [m.name for m in apply_migrations(clickhouse, directory)] == ["extra"]
    tables = {r[0] for r in clickhouse.query("SHOW TABLES").result_rows}
    assert {"extra_a", "extra_b"} <= tables


@pytest.mark.integration
def test_failed_migration_is_not_recorded(clickhouse: Client, tmp_path: Path) -> None:
    (tmp_path / "0001_broken.sql").write_text("CREATE TABLE nonsense (;\n")
    with pytest.raises(MigrationError, match=r"0001_broken\.sql failed"):
        apply_migrations(clickhouse, tmp_path)
    assert clickhouse.query(f"SELECT count() FROM {MIGRATIONS_TABLE}").result_rows[0][0] == 0
