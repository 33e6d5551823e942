"""The pydantic models and the Avro schemas say the same thing, field for field.

Fails when a field, its type, its optionality, its default or an enum's symbols differ
between a model and the latest schema of its subject.
"""

from __future__ import annotations

import types
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Union, get_args, get_origin
from uuid import UUID

import pytest
from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.events import DERIVED_EVENT_TYPES, EVENT_TYPES, Event
from pydantic import AwareDatetime, BaseModel
from pydantic_core import PydanticUndefined

PRIMITIVE = {"string": str, "int": int, "long": int, "double": float, "float": float, "boolean": bool}
LOGICAL: dict[str, tuple[Any, ...]] = {"timestamp-micros": (datetime, AwareDatetime), "uuid": (UUID,)}


def _names(node: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(node, list):
        for n in node:
            _names(n, out)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "enum"):
            out[node["name"]] = node
            out[f"{node.get('namespace', 'atmp')}.{node['name']}"] = node
            for f in node.get("fields", []):
                _names(f["type"], out)
        elif node.get("type") == "array":
            _names(node["items"], out)
        elif isinstance(node.get("type"), dict | list):
            _names(node["type"], out)
    return out


def _strip(annotation: Any) -> tuple[Any, bool]:
    """(base type, nullable) of a model annotation."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        assert len(args) == 1, annotation
        base, _ = _strip(args[0])
        return base, True
    return annotation, False


def compare(model: type[BaseModel], schema: dict[str, Any], names: dict[str, Any], path: str) -> list[str]:
    diffs = []
    avro_fields = {f["name"]: f for f in schema["fields"]}
    if set(avro_fields) != set(model.model_fields):
        diffs.append(
            f"{path}: fields differ: only in schema {set(avro_fields) - set(model.model_fields)}, "
            f"only in model {set(model.model_fields) - set(avro_fields)}"
        )
    for name in avro_fields.keys() & model.model_fields.keys():
        field, info = avro_fields[name], model.model_fields[name]
        where = f"{path}.{name}"
        avro_type = field["type"]
        nullable = isinstance(avro_type, list) and "null" in avro_type
        if isinstance(avro_type, list):
            branches = [b for b in avro_type if b != "null"]
            assert len(branches) == 1, where
            avro_type = branches[0]
        base, model_nullable = _strip(info.annotation)
        if nullable != model_nullable:
            diffs.append(f"{where}: nullable in schema={nullable}, in model={model_nullable}")
        has_default = "default" in field
        model_default = info.default if info.default is not PydanticUndefined else PydanticUndefined
        if has_default != (model_default is not PydanticUndefined):
            diffs.append(
                f"{where}: default in schema={has_default}, in model={model_default is not PydanticUndefined}"
            )
        elif has_default and field["default"] != model_default:
            diffs.append(f"{where}: default {field['default']!r} in schema, {model_default!r} in model")
        diffs += compare_type(base, avro_type, names, where)
    return diffs


def compare_type(base: Any, avro_type: Any, names: dict[str, Any], where: str) -> list[str]:
    if isinstance(avro_type, str) and avro_type in names:
        avro_type = names[avro_type]
    if isinstance(avro_type, str):
        expected = PRIMITIVE[avro_type]
        return [] if base is expected else [f"{where}: schema {avro_type}, model {base}"]
    if "logicalType" in avro_type:
        allowed = LOGICAL[avro_type["logicalType"]]
        return [] if base in allowed else [f"{where}: schema {avro_type['logicalType']}, model {base}"]
    kind = avro_type["type"]
    if kind == "enum":
        if not (isinstance(base, type) and issubclass(base, Enum)):
            return [f"{where}: schema enum, model {base}"]
        symbols = [m.value for m in base]
        if symbols != avro_type["symbols"] or base.__name__ != avro_type["name"]:
            return [f"{where}: enum {avro_type['name']} {avro_type['symbols']} vs {base.__name__} {symbols}"]
        return []
    if kind == "record":
        if not (isinstance(base, type) and issubclass(base, BaseModel)):
            return [f"{where}: schema record, model {base}"]
        if base.__name__ != avro_type["name"]:
            return [f"{where}: record {avro_type['name']} vs model {base.__name__}"]
        return compare(base, avro_type, names, where)
    if kind == "array":
        if get_origin(base) is not list:
            return [f"{where}: schema array, model {base}"]
        item, _ = _strip(get_args(base)[0])
        return compare_type(item, avro_type["items"], names, f"{where}[]")
    return [f"{where}: unhandled schema type {kind}"]


@pytest.mark.parametrize("event_type", EVENT_TYPES + DERIVED_EVENT_TYPES, ids=lambda t: t.__name__)
def test_model_matches_latest_schema(catalog: SchemaCatalog, event_type: type[Event]) -> None:
    latest = catalog.latest(event_type.subject())
    assert latest.record == event_type.RECORD
    assert latest.topic == event_type.TOPIC
    assert latest.version == event_type.SCHEMA_VERSION
    assert compare(event_type, latest.schema, _names(latest.schema, {}), event_type.__name__) == []


def test_the_comparison_catches_a_drift(catalog: SchemaCatalog) -> None:
    from atmpnet.contract.events import BatchStep

    schema = catalog.latest(BatchStep.subject()).schema
    drifted = {
        **schema,
        "fields": [
            *[f for f in schema["fields"] if f["name"] != "attempt"],
            {"name": "attempt", "type": "long"},  # default dropped
            {"name": "operator_badge", "type": ["null", "string"], "default": None},
        ],
    }
    diffs = compare(BatchStep, drifted, _names(drifted, {}), "BatchStep")
    assert any("operator_badge" in d for d in diffs)
    assert any("BatchStep.attempt: default" in d for d in diffs)


def test_every_subject_has_a_model(catalog: SchemaCatalog) -> None:
    assert {catalog.latest(s).record for s in catalog.subjects()} == {
        t.RECORD for t in EVENT_TYPES + DERIVED_EVENT_TYPES
    }
