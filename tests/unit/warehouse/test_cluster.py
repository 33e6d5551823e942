"""Cluster DDL rendered from the real migration files: every table replicated and distributed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from atmpnet.warehouse.cluster import ZK_PATH, ClusterRenderer, ClusterRenderError, render_cluster
from atmpnet.warehouse.migrations import _STATEMENT_END, load_migrations

DATABASE = "atmpnet"


def source_tables() -> dict[str, tuple[str, str, str]]:
    """MergeTree-family tables of the migrations: name -> (engine with args, columns, clauses)."""
    tables = {}
    for migration in load_migrations():
        for statement in migration.statements(DATABASE):
            m = re.match(
                r"CREATE TABLE IF NOT EXISTS (\w+)\s*(\(.*\))\s*"
                r"ENGINE = (\w*MergeTree(?:\([^)]*\))?)\s*(.*)$",
                statement,
                re.S,
            )
            if m:
                tables[m[1]] = (m[3], m[2], m[4])
    return tables


def rendered_statements(sql: str) -> list[str]:
    text = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    return [s.strip() for s in _STATEMENT_END.split(text) if s.strip()]


def test_every_mergetree_table_gets_a_replicated_and_a_distributed_form() -> None:
    tables = source_tables()
    assert {"batch_steps", "deviations", "dead_letters", "view_generations", "vt_deviation_triage"} <= set(
        tables
    )
    statements = rendered_statements(render_cluster(DATABASE))
    replicated = {}
    distributed = {}
    for s in statements:
        if m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+)_local ON CLUSTER '\{cluster\}'\n", s):
            replicated[m[1]] = s
        elif m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+) ON CLUSTER '\{cluster\}'\nAS (\w+)\n", s):
            assert m[2] == f"{m[1]}_local"
            distributed[m[1]] = s
    assert set(replicated) == set(tables) == set(distributed)
    for name, (engine, columns, clauses) in tables.items():
        family, _, args = engine.partition("(")
        args = args.rstrip(")")
        expected_args = ", ".join(a for a in (f"'{ZK_PATH}'", "'{replica}'", args) if a)
        local = replicated[name]
        assert f"ENGINE = Replicated{family}({expected_args})\n" in local, local
        assert columns in local, f"{name}: columns changed"
        assert local.endswith(clauses), f"{name}: ORDER BY / PARTITION BY changed"
        order_by = re.search(r"ORDER BY \(?([^)\n]*)\)?", clauses)
        assert order_by
        assert distributed[name].endswith(
            f"ENGINE = Distributed('{{cluster}}', '{DATABASE}', '{name}_local', cityHash64({order_by[1]}))"
        )


def test_replicated_path_uses_the_shard_database_and_table_macros() -> None:
    sql = render_cluster(DATABASE)
    paths = re.findall(r"Replicated\w*MergeTree\('([^']*)', '([^']*)'", sql)
    assert paths and all(p == ("/clickhouse/tables/{shard}/{database}/{table}", "{replica}") for p in paths)


def test_views_are_created_on_the_cluster_over_the_distributed_tables() -> None:
    statements = rendered_statements(render_cluster(DATABASE))
    views = [s for s in statements if s.startswith("CREATE VIEW")]
    assert len(views) == len(
        [s for m in load_migrations() for s in m.statements() if s.startswith("CREATE VIEW")]
    )
    for view in views:
        assert re.match(r"CREATE VIEW IF NOT EXISTS \w+ ON CLUSTER '\{cluster\}'\n", view), view
        assert "_local" not in view, "plain views read through the Distributed tables"
    assert statements[0] == f"CREATE DATABASE IF NOT EXISTS `{DATABASE}` ON CLUSTER '{{cluster}}'"
    assert all("ON CLUSTER '{cluster}'" in s for s in statements)


def test_a_named_cluster_and_database_are_rendered_literally() -> None:
    sql = render_cluster("plant", cluster="eu_central")
    assert "Distributed('eu_central', 'plant', 'batch_steps_local'," in sql
    assert "{cluster}" not in sql
    assert "{shard}" in sql and "{replica}" in sql  # per-node macros stay macros


def render(*statements: str) -> list[str]:
    renderer = ClusterRenderer("db")
    return [out for s in statements for out in renderer.render(s)]


@pytest.mark.parametrize(
    ("engine", "replicated"),
    [
        ("MergeTree", "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"),
        ("MergeTree()", "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"),
        (
            "ReplacingMergeTree(version, is_deleted)",
            "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', "
            "version, is_deleted)",
        ),
        (
            "AggregatingMergeTree",
            "ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')",
        ),
    ],
)
def test_engine_arguments_follow_the_path_and_replica(engine: str, replicated: str) -> None:
    local, _ = render(
        f"CREATE TABLE t (a UInt8, b DateTime64(6, 'UTC') CODEC(ZSTD(1))) ENGINE = {engine} ORDER BY a"
    )
    assert f"ENGINE = {replicated}\nORDER BY a" in local
    assert "(a UInt8, b DateTime64(6, 'UTC') CODEC(ZSTD(1)))" in local


def test_sharding_key_hashes_the_sorting_key_or_spreads_at_random() -> None:
    (_, keyed) = render(
        "CREATE TABLE t (a UInt8, b String) ENGINE = MergeTree ORDER BY (a, b) SETTINGS x = 1"
    )
    assert keyed.endswith("cityHash64(a, b))")
    (_, unsorted) = render("CREATE TABLE u (a UInt8) ENGINE = MergeTree ORDER BY tuple()")
    assert unsorted.endswith("rand())")


def test_materialized_views_feed_the_local_tables() -> None:
    out = render(
        "CREATE TABLE src (a UInt8) ENGINE = MergeTree ORDER BY a",
        "CREATE TABLE agg (a UInt8, n AggregateFunction(count)) ENGINE = AggregatingMergeTree ORDER BY a",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS mv TO agg AS SELECT a, countState() AS n FROM src GROUP BY a",
    )
    mv = out[-1]
    assert mv.startswith("CREATE MATERIALIZED VIEW IF NOT EXISTS mv ON CLUSTER '{cluster}' TO agg_local\n")
    assert "FROM src_local" in mv


def test_alters_reach_the_local_table_and_column_changes_the_distributed_one() -> None:
    out = render(
        "CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a",
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS b String",
        "ALTER TABLE t MODIFY TTL toDate(a) + 30",
    )
    assert out[2:] == [
        "ALTER TABLE t_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS b String",
        "ALTER TABLE t ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS b String",
        "ALTER TABLE t_local ON CLUSTER '{cluster}' MODIFY TTL toDate(a) + 30",
    ]


def test_drop_removes_both_tables() -> None:
    out = render("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a", "DROP TABLE IF EXISTS t")
    assert out[2:] == [
        "DROP TABLE IF EXISTS t ON CLUSTER '{cluster}' SYNC",
        "DROP TABLE IF EXISTS t_local ON CLUSTER '{cluster}' SYNC",
    ]


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE MATERIALIZED VIEW mv ENGINE = MergeTree ORDER BY a AS SELECT a FROM src",
        "CREATE TABLE t ON CLUSTER c (a UInt8) ENGINE = MergeTree ORDER BY a",
        "CREATE TABLE t (a UInt8) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY a",
        "RENAME TABLE a TO b",
        "CREATE TABLE t (a UInt8)",
    ],
)
def test_forms_without_a_safe_cluster_rendering_are_refused(statement: str) -> None:
    with pytest.raises(ClusterRenderError):
        render(statement)


@pytest.mark.integration
def test_rendered_ddl_parses_in_clickhouse(clickhouse: Any) -> None:
    """ClickHouse's own parser accepts every rendered statement (EXPLAIN AST runs no DDL)."""
    for statement in rendered_statements(render_cluster(DATABASE)):
        clickhouse.query(f"EXPLAIN AST {statement}")


def test_cli_prints_the_cluster_ddl(tmp_path: Any) -> None:
    from atmpnet import cli
    from typer.testing import CliRunner

    out = tmp_path / "cluster.sql"
    result = CliRunner().invoke(
        cli.app, ["warehouse", "render-cluster", "--database", "plant", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_text() == render_cluster("plant")
