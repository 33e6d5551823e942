"""Render docs/event-catalog.md from the schema catalog, so the docs cannot drift from schemas/."""

from __future__ import annotations

from typing import Any

from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.events import EVENT_TYPE_BY_RECORD

_KEYS = {
    "atmp.BatchStep": "batch id",
    "atmp.SensorSummary": "module id / lane",
    "atmp.Deviation": "batch id, else module id",
    "atmp.ModuleConfiguration": "module id",
    "atmp.ValidatedBaseline": "module type",
    "atmp.DeviationTriage": "deviation id",
    "atmp.ConfigDrift": "module id",
}


def _type_name(t: Any) -> str:
    if isinstance(t, str):
        return t.removeprefix("atmp.")
    if isinstance(t, list):
        return " or ".join(_type_name(b) for b in t)
    kind = t["type"]
    if "logicalType" in t:
        return f"{t['logicalType']}"
    if kind in ("record", "enum", "fixed"):
        return f"{kind} {t['name']}"
    if kind == "array":
        return f"array of {_type_name(t['items'])}"
    if kind == "map":
        return f"map of {_type_name(t['values'])}"
    return str(kind)


def _nested(t: Any) -> list[dict[str, Any]]:
    """Named types defined inside ``t``, depth first."""
    found: list[dict[str, Any]] = []
    if isinstance(t, list):
        for b in t:
            found += _nested(b)
    elif isinstance(t, dict):
        if t.get("type") in ("record", "enum"):
            found.append(t)
            for f in t.get("fields", []):
                found += _nested(f["type"])
        elif t.get("type") == "array":
            found += _nested(t["items"])
        elif isinstance(t.get("type"), dict | list):
            found += _nested(t["type"])
    return found


def _render_type(t: dict[str, Any]) -> list[str]:
    lines = [f"#### {t['type']} `{t['name']}`", "", t.get("doc", ""), ""]
    if t["type"] == "enum":
        lines += ["Symbols: " + ", ".join(f"`{s}`" for s in t["symbols"]), ""]
        if "default" in t:
            lines += [f"Readers map unknown symbols to `{t['default']}`.", ""]
        return lines
    lines += ["| field | type | required | meaning |", "|---|---|---|---|"]
    for f in t["fields"]:
        required = "default " + repr(f["default"]).replace("None", "null") if "default" in f else "yes"
        doc = f.get("doc", "").replace("|", "\\|")
        lines.append(f"| `{f['name']}` | {_type_name(f['type'])} | {required} | {doc} |")
    return [*lines, ""]


def render_event_catalog(catalog: SchemaCatalog) -> str:
    """The event catalog as Markdown: per topic, its key, schema ids and every field."""
    out = [
        "# Event catalog",
        "",
        "Generated from `schemas/` by `atmpnet schemas docs`; a test fails when it is out of date.",
        "Every event is Avro in the Confluent wire format (magic byte 0, 4-byte schema id, body).",
        "",
        "| topic | record | key | schema ids (version: id) |",
        "|---|---|---|---|",
    ]
    for subject in catalog.subjects():
        latest = catalog.latest(subject)
        ids = ", ".join(f"v{v.version}: {v.schema_id}" for v in catalog.versions(subject))
        out.append(f"| `{latest.topic}` | `{latest.record}` | {_KEYS.get(latest.record, '')} | {ids} |")
    out.append("")
    documented: set[str] = set()
    for subject in catalog.subjects():
        latest = catalog.latest(subject)
        model = EVENT_TYPE_BY_RECORD.get(latest.record)
        out += [f"## `{latest.topic}`: {latest.record.removeprefix('atmp.')}", ""]
        if model is not None:
            out += [f"Model: `atmpnet.contract.events.{model.__name__}`.", ""]
        for t in _nested(latest.schema):
            if t["name"] in documented:
                out += [f"#### {t['type']} `{t['name']}`", "", "As above.", ""]
                continue
            documented.add(t["name"])
            out += _render_type(t)
    return "\n".join(out).rstrip() + "\n"
