"""Render the warehouse migrations for a ClickHouse cluster: replicated shards behind Distributed tables.

A pure text transform of the same files the single-node runner applies (``migrations/*.sql``),
so one set of migrations serves chDB, one server and a cluster. For every MergeTree-family table
``t`` it writes:

- ``t_local ON CLUSTER '{cluster}'``, the same columns and clauses, engine
  ``Replicated<Family>MergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', <args>)``
  (ClickHouse fills the macros on each node: one replica set per shard);
- ``t ON CLUSTER '{cluster}' AS t_local``, engine ``Distributed('{cluster}', <db>, 't_local', key)``
  under the table's own name, so every query, view and insert keeps working unchanged.

The sharding key hashes the table's ORDER BY: for Replacing/Aggregating merges that key is the
identity of a row, so every copy of a replayed event lands on the same shard and collapses
there. Plain views get ``ON CLUSTER`` and read through the Distributed tables; materialized
views (``TO`` form only) are moved onto the local tables so each shard feeds itself. ALTERs
go to the local table, and column changes to the Distributed one too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from atmpnet.warehouse.migrations import Migration, MigrationError, load_migrations, migrations_dir

ZK_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
CLUSTER = "{cluster}"
LOCAL_SUFFIX = "_local"

_IDENT = r"`[^`]+`|[A-Za-z_][A-Za-z0-9_]*"
_NAME = rf"(?:(?:{_IDENT})\.)?(?:{_IDENT})"
_CREATE_TABLE = re.compile(rf"^CREATE\s+TABLE\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<name>{_NAME})\s*", re.I)
_CREATE_VIEW = re.compile(
    rf"^CREATE\s+(?P<kind>(?:OR\s+REPLACE\s+)?VIEW|MATERIALIZED\s+VIEW)\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?"
    rf"(?P<name>{_NAME})\s*",
    re.I,
)
_ENGINE = re.compile(r"^ENGINE\s*=\s*(?P<engine>[A-Za-z]+)\s*", re.I)
_ALTER = re.compile(rf"^ALTER\s+TABLE\s+(?P<name>{_NAME})\s+(?P<rest>.*)$", re.I | re.S)
_DROP = re.compile(rf"^DROP\s+(?P<kind>TABLE|VIEW)\s+(?P<ie>IF\s+EXISTS\s+)?(?P<name>{_NAME})\s*$", re.I)
_COLUMN_CHANGE = re.compile(r"^\s*(ADD|DROP|MODIFY|RENAME|CLEAR|COMMENT)\s+COLUMN\b", re.I)
_ON_CLUSTER = re.compile(r"\bON\s+CLUSTER\b", re.I)


class ClusterRenderError(MigrationError):
    """A migration statement has a form the cluster renderer cannot carry over safely."""


@dataclass(frozen=True)
class ReplicatedTable:
    """A MergeTree-family table of the migrations and the two tables it becomes on a cluster."""

    name: str
    engine: str
    sharding_key: str

    @property
    def local(self) -> str:
        """Name of the replicated per-shard table."""
        return local_name(self.name)


def local_name(name: str) -> str:
    """``t`` -> ``t_local`` (keeping a database qualifier and backquotes)."""
    if name.endswith("`"):
        return name[:-1] + LOCAL_SUFFIX + "`"
    return name + LOCAL_SUFFIX


def _bare(name: str) -> str:
    return name.rsplit(".", 1)[-1].strip("`")


def _balanced(text: str, start: int) -> int:
    """Index just past the parenthesis that closes the one at ``text[start]`` (quotes respected)."""
    depth, i, quote = 0, start, ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'`\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ClusterRenderError(f"unbalanced parentheses in: {text[:120]}...")


def _split_args(args: str) -> list[str]:
    """Top-level comma-separated arguments of an engine call."""
    out, depth, current, quote = [], 0, "", ""
    for ch in args:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'`\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
            continue
        current += ch
    if current.strip():
        out.append(current.strip())
    return out


def _order_by(clauses: str) -> str | None:
    """The ORDER BY expression of a table's clauses (after the engine)."""
    match = re.search(r"\bORDER\s+BY\s+", clauses, re.I)
    if match is None:
        return None
    rest = clauses[match.end() :]
    if rest.startswith("("):
        return rest[: _balanced(rest, 0)]
    end = re.search(r"\s+(?:PARTITION|PRIMARY|SAMPLE|TTL|SETTINGS|COMMENT)\b|$", rest, re.I)
    assert end is not None  # the pattern matches at the end of the text at least
    return rest[: end.start()].strip()


def sharding_key(order_by: str | None) -> str:
    """``cityHash64`` of the ORDER BY columns; ``rand()`` when a table has no sorting key."""
    if order_by is None:
        return "rand()"
    inner = order_by[1:-1] if order_by.startswith("(") and order_by.endswith(")") else order_by
    if inner.strip().lower() in ("", "tuple()"):
        return "rand()"
    return f"cityHash64({inner.strip()})"


class ClusterRenderer:
    """Renders statements for a cluster; remembers the tables it replicated (views refer to them)."""

    def __init__(self, database: str, cluster: str = CLUSTER, zk_path: str = ZK_PATH) -> None:
        self.database = database
        self.cluster = cluster
        self.zk_path = zk_path
        self.tables: dict[str, ReplicatedTable] = {}

    @property
    def on_cluster(self) -> str:
        """The ``ON CLUSTER`` clause every DDL statement gets."""
        return f"ON CLUSTER '{self.cluster}'"

    def render(self, statement: str) -> list[str]:
        """The cluster form of one migration statement (one or more statements)."""
        text = statement.strip().rstrip(";").strip()
        if _ON_CLUSTER.search(text.split("(", 1)[0]):
            raise ClusterRenderError(f"already has ON CLUSTER, render from plain migrations: {text[:80]}")
        if m := _CREATE_TABLE.match(text):
            return self._table(text, m)
        if m := _CREATE_VIEW.match(text):
            return self._view(text, m)
        if m := _ALTER.match(text):
            return self._alter(m)
        if m := _DROP.match(text):
            return self._drop(m)
        if re.match(r"^(CREATE|DROP|RENAME|TRUNCATE)\b", text, re.I):
            raise ClusterRenderError(f"no cluster form for: {text[:120]}")
        return [text]  # INSERT, SELECT ... run through the Distributed tables as they are

    def _table(self, text: str, m: re.Match[str]) -> list[str]:
        name, ine = m.group("name"), m.group("ine") or ""
        rest = text[m.end() :]
        columns = ""
        if rest.startswith("("):
            end = _balanced(rest, 0)
            columns, rest = rest[:end], rest[end:].lstrip()
        engine_match = _ENGINE.match(rest)
        if engine_match is None:
            raise ClusterRenderError(f"table {name} has no ENGINE clause")
        engine = engine_match.group("engine")
        rest = rest[engine_match.end() :]
        args: list[str] = []
        if rest.startswith("("):
            end = _balanced(rest, 0)
            args, rest = _split_args(rest[1 : end - 1]), rest[end:].lstrip()
        clauses = rest

        def head(table_name: str) -> str:
            return f"CREATE TABLE {ine}{table_name} {self.on_cluster}"

        if not engine.endswith("MergeTree") or engine.startswith("Replicated"):
            if engine.startswith("Replicated"):
                raise ClusterRenderError(f"table {name} is already {engine}: render from plain migrations")
            # Memory, Null, Log ...: the same table on every node
            return [f"{head(name)}\n{columns}\nENGINE = {engine}{self._call(args)}\n{clauses}".strip()]
        table = ReplicatedTable(name, engine, sharding_key(_order_by(clauses)))
        self.tables[_bare(name)] = table
        replicated_args = [f"'{self.zk_path}'", "'{replica}'", *args]
        local = (
            f"{head(table.local)}\n{columns}\n"
            f"ENGINE = Replicated{engine}({', '.join(replicated_args)})\n{clauses}"
        ).strip()
        distributed = (
            f"{head(name)}\nAS {table.local}\n"
            f"ENGINE = Distributed('{self.cluster}', '{self.database}', '{_bare(table.local)}', "
            f"{table.sharding_key})"
        )
        return [local, distributed]

    @staticmethod
    def _call(args: list[str]) -> str:
        return f"({', '.join(args)})" if args else ""

    def _view(self, text: str, m: re.Match[str]) -> list[str]:
        kind, name, ine = m.group("kind"), m.group("name"), m.group("ine") or ""
        rest = text[m.end() :]
        if kind.upper().startswith("MATERIALIZED"):
            to = re.match(rf"^TO\s+(?P<target>{_NAME})\s*", rest, re.I)
            if to is None:
                raise ClusterRenderError(
                    f"materialized view {name} keeps its own storage: write it with TO <table> "
                    "so the cluster form can replicate the target"
                )
            target = to.group("target")
            body = self._localize(rest[to.end() :])
            target = local_name(target) if _bare(target) in self.tables else target
            return [f"CREATE MATERIALIZED VIEW {ine}{name} {self.on_cluster} TO {target}\n{body}".strip()]
        return [f"CREATE {kind.upper()} {ine}{name} {self.on_cluster}\n{rest}".strip()]

    def _localize(self, select: str) -> str:
        """Point FROM/JOIN at the local tables: a shard's inserts feed that shard's view."""

        def swap(m: re.Match[str]) -> str:
            name = m.group("name")
            return m.group("kw") + (local_name(name) if _bare(name) in self.tables else name)

        return re.sub(rf"(?P<kw>\b(?:FROM|JOIN)\s+)(?P<name>{_NAME})", swap, select, flags=re.I)

    def _alter(self, m: re.Match[str]) -> list[str]:
        name, rest = m.group("name"), m.group("rest").strip()
        table = self.tables.get(_bare(name))
        if table is None:
            return [f"ALTER TABLE {name} {self.on_cluster} {rest}"]
        statements = [f"ALTER TABLE {table.local} {self.on_cluster} {rest}"]
        if _COLUMN_CHANGE.match(rest):
            statements.append(f"ALTER TABLE {name} {self.on_cluster} {rest}")
        return statements

    def _drop(self, m: re.Match[str]) -> list[str]:
        kind, ie, name = m.group("kind").upper(), m.group("ie") or "", m.group("name")
        statements = [f"DROP {kind} {ie}{name} {self.on_cluster} SYNC"]
        table = self.tables.pop(_bare(name), None)
        if table is not None:
            statements.append(f"DROP TABLE {ie}{table.local} {self.on_cluster} SYNC")
        return statements


def render_cluster(
    database: str,
    migrations: list[Migration] | None = None,
    *,
    cluster: str = CLUSTER,
    zk_path: str = ZK_PATH,
) -> str:
    """The cluster DDL for ``database``, every migration file in order, as one SQL script.

    Run it with a client whose database is ``database`` (``clickhouse-client --database ...
    --multiquery``); it creates the database on every node first.
    """
    renderer = ClusterRenderer(database, cluster, zk_path)
    files = load_migrations(migrations_dir) if migrations is None else migrations
    out = [
        "-- ClickHouse cluster DDL rendered from services/atmpnet/warehouse/migrations by",
        "-- `atmpnet warehouse render-cluster`; do not edit, render again.",
        f"CREATE DATABASE IF NOT EXISTS `{database}` ON CLUSTER '{cluster}';",
    ]
    for migration in files:
        out.append(f"\n-- {migration.path.name}")
        out.extend(
            f"{rendered};"
            for statement in migration.statements(database)
            for rendered in renderer.render(statement)
        )
    return "\n".join(out) + "\n"
