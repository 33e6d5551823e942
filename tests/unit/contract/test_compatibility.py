"""Avro schema resolution rules, case by case."""

from __future__ import annotations

from typing import Any

import pytest
from atmpnet.contract.compatibility import incompatibilities


def record(*fields: dict[str, Any], name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "atmp", "fields": list(fields)}


def enum(*symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "E", "symbols": list(symbols), **extra}


OK: list[tuple[str, Any, Any]] = [
    ("identical", record({"name": "a", "type": "int"}), record({"name": "a", "type": "int"})),
    (
        "field added with default",
        record({"name": "a", "type": "int"}, {"name": "b", "type": ["null", "string"], "default": None}),
        record({"name": "a", "type": "int"}),
    ),
    (
        "field removed",
        record({"name": "a", "type": "int"}),
        record({"name": "a", "type": "int"}, {"name": "b", "type": "string"}),
    ),
    ("int promoted to long", record({"name": "a", "type": "long"}), record({"name": "a", "type": "int"})),
    (
        "float promoted to double",
        record({"name": "a", "type": "double"}),
        record({"name": "a", "type": "float"}),
    ),
    ("made nullable", record({"name": "a", "type": ["null", "int"]}), record({"name": "a", "type": "int"})),
    (
        "enum symbol added",
        record({"name": "a", "type": enum("X", "Y", "Z")}),
        record({"name": "a", "type": enum("X", "Y")}),
    ),
    (
        "enum symbol removed, reader has default",
        record({"name": "a", "type": enum("X", default="X")}),
        record({"name": "a", "type": enum("X", "Y")}),
    ),
    (
        "renamed field with alias",
        record({"name": "b", "aliases": ["a"], "type": "int"}),
        record({"name": "a", "type": "int"}),
    ),
    (
        "array items promoted",
        record({"name": "a", "type": {"type": "array", "items": "long"}}),
        record({"name": "a", "type": {"type": "array", "items": "int"}}),
    ),
]

BAD: list[tuple[str, Any, Any, str]] = [
    (
        "field added without default",
        record({"name": "a", "type": "int"}, {"name": "b", "type": "string"}),
        record({"name": "a", "type": "int"}),
        "b: field added without a default",
    ),
    (
        "long narrowed to int",
        record({"name": "a", "type": "int"}),
        record({"name": "a", "type": "long"}),
        "a: writer type long cannot be read as int",
    ),
    (
        "made non-nullable",
        record({"name": "a", "type": "int"}),
        record({"name": "a", "type": ["null", "int"]}),
        "a: writer type null cannot be read as int",
    ),
    (
        "enum symbol removed",
        record({"name": "a", "type": enum("X")}),
        record({"name": "a", "type": enum("X", "Y")}),
        "enum symbols ['Y'] removed",
    ),
    (
        "logical type changed",
        record({"name": "a", "type": {"type": "long", "logicalType": "timestamp-millis"}}),
        record({"name": "a", "type": {"type": "long", "logicalType": "timestamp-micros"}}),
        "logical type changed",
    ),
    (
        "record renamed",
        record({"name": "a", "type": "int"}, name="S"),
        record({"name": "a", "type": "int"}),
        "record name changed from R to S",
    ),
    (
        "nested field type changed",
        record({"name": "n", "type": record({"name": "x", "type": "string"}, name="N")}),
        record({"name": "n", "type": record({"name": "x", "type": "int"}, name="N")}),
        "n.x: writer type int cannot be read as string",
    ),
]


@pytest.mark.parametrize(("case", "reader", "writer"), OK, ids=[c[0] for c in OK])
def test_compatible_changes_pass(case: str, reader: Any, writer: Any) -> None:
    assert incompatibilities(reader, writer) == []


@pytest.mark.parametrize(("case", "reader", "writer", "reason"), BAD, ids=[c[0] for c in BAD])
def test_incompatible_changes_are_caught_with_the_path(
    case: str, reader: Any, writer: Any, reason: str
) -> None:
    problems = incompatibilities(reader, writer)
    assert any(reason in p for p in problems), problems


def test_named_type_references_are_resolved() -> None:
    writer = record({"name": "a", "type": enum("X", "Y")}, {"name": "b", "type": "atmp.E"})
    reader = record(
        {"name": "a", "type": enum("X", "Y")}, {"name": "b", "type": ["null", "atmp.E"], "default": None}
    )
    assert incompatibilities(reader, writer) == []
    narrowed = record({"name": "a", "type": enum("X")}, {"name": "b", "type": "atmp.E"})
    assert incompatibilities(narrowed, writer)


def test_recursive_records_terminate() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"], "default": None}],
    }
    assert incompatibilities(node, node) == []


def test_reader_union_uses_the_first_matching_branch_like_a_reader_does() -> None:
    old = {"type": "record", "name": "Old", "fields": [{"name": "x", "type": "int"}]}
    strict_old = {
        "type": "record",
        "name": "Old",
        "fields": [{"name": "x", "type": "int"}, {"name": "y", "type": "int"}],
    }
    new = {"type": "record", "name": "New", "aliases": ["Old"], "fields": [{"name": "x", "type": "int"}]}
    # the reader picks strict_old (same name) and fails on y, even though `new` could read it
    problems = incompatibilities(["null", strict_old, new], old)
    assert any("y: field added without a default" in p for p in problems)


def test_bytes_cannot_be_read_as_string_but_string_as_bytes_can() -> None:
    assert incompatibilities(record({"name": "a", "type": "string"}), record({"name": "a", "type": "bytes"}))
    assert (
        incompatibilities(record({"name": "a", "type": "bytes"}), record({"name": "a", "type": "string"}))
        == []
    )


def test_aliases_compare_full_names() -> None:
    writer = {"type": "record", "name": "W", "namespace": "new", "fields": []}
    other_ns = {"type": "record", "name": "R", "namespace": "x", "aliases": ["old.W"], "fields": []}
    right_ns = {"type": "record", "name": "R", "namespace": "x", "aliases": ["new.W"], "fields": []}
    assert incompatibilities(other_ns, writer)
    assert incompatibilities(right_ns, writer) == []


def test_undefined_names_are_reported() -> None:
    problems = incompatibilities(record({"name": "a", "type": "Foo"}), record({"name": "a", "type": "Bar"}))
    assert any("is not defined" in p for p in problems)
