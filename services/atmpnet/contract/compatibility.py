"""Avro schema resolution rules: whether a reader schema can read data written with a writer schema.

A pure rule module over Avro JSON schemas (the Avro specification's "Schema Resolution"),
used by the catalog check to keep every subject backward compatible, transitively.
"""

from __future__ import annotations

from typing import Any

AvroSchema = Any  # JSON: str | dict | list

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
# writer type -> reader types that can read it (the spec's promotions)
PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},  # bytes -> string is not: arbitrary bytes need not be UTF-8
}
NAMED = ("record", "enum", "fixed")


def incompatibilities(reader: AvroSchema, writer: AvroSchema) -> list[str]:
    """Reasons why ``reader`` cannot read all data written with ``writer``; empty if it can."""
    r_names: dict[str, Any] = {}
    w_names: dict[str, Any] = {}
    _collect(reader, r_names, None)
    _collect(writer, w_names, None)
    problems: list[str] = []
    _check(_Resolver(r_names), reader, _Resolver(w_names), writer, "", problems, set(), None, None)
    return problems


def _full(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect(node: AvroSchema, names: dict[str, Any], ns: str | None) -> None:
    if isinstance(node, list):
        for n in node:
            _collect(n, names, ns)
    elif isinstance(node, dict):
        t = node.get("type")
        if t in ("record", "enum", "fixed"):
            full = _full(node["name"], node.get("namespace", ns))
            names[full] = node
            ns = full.rpartition(".")[0] or None
            for f in node.get("fields", []):
                _collect(f["type"], names, ns)
        elif t == "array":
            _collect(node["items"], names, ns)
        elif t == "map":
            _collect(node["values"], names, ns)
        elif isinstance(t, dict | list):
            _collect(t, names, ns)


class _Resolver:
    def __init__(self, names: dict[str, Any]) -> None:
        self.names = names

    def resolve(self, node: AvroSchema, ns: str | None) -> tuple[Any, str | None]:
        """Normalise a schema node to a dict (or list for unions) and its namespace."""
        if isinstance(node, str):
            if node in PRIMITIVES:
                return {"type": node}, ns
            full = _full(node, ns)
            target = self.names.get(full) or self.names.get(node)
            if target is None:
                return {"type": "__unknown__", "name": node}, ns
            return target, full.rpartition(".")[0] or None
        if isinstance(node, dict) and isinstance(node.get("type"), dict | list):
            return self.resolve(node["type"], ns)
        if isinstance(node, dict) and node.get("type") in ("record", "enum", "fixed"):
            full = _full(node["name"], node.get("namespace", ns))
            return node, full.rpartition(".")[0] or None
        if (
            isinstance(node, dict)
            and isinstance(node.get("type"), str)
            and node["type"] not in (PRIMITIVES | {"array", "map"})
        ):
            return self.resolve(node["type"], ns)
        return node, ns


def _kind(node: Any) -> str:
    return "union" if isinstance(node, list) else str(node["type"])


def _describe(node: Any) -> str:
    if isinstance(node, list):
        return "union"
    if node["type"] in ("record", "enum", "fixed"):
        return f"{node['type']} {node['name']}"
    return str(node.get("logicalType", node["type"]))


def _same_name(r: Any, r_ns: str | None, w: Any, w_ns: str | None) -> bool:
    """For named types: the writer's full name is the reader's or one of its aliases."""
    if _kind(r) not in NAMED:
        return True
    parent = r.get("namespace", r_ns)
    names = {_full(r["name"], parent), *(_full(a, parent) for a in r.get("aliases", []))}
    return _full(w["name"], w.get("namespace", w_ns)) in names


def _check(  # noqa: PLR0912 - one case per Avro type is clearest
    rr: _Resolver,
    r_node: AvroSchema,
    wr: _Resolver,
    w_node: AvroSchema,
    path: str,
    out: list[str],
    seen: set[tuple[str, str]],
    r_ns: str | None,
    w_ns: str | None,
) -> None:
    r, r_ns = rr.resolve(r_node, r_ns)
    w, w_ns = wr.resolve(w_node, w_ns)
    where = path or "<root>"
    rk, wk = _kind(r), _kind(w)

    if wk == "union":
        for branch in w:
            sub: list[str] = []
            _check(rr, r, wr, branch, path, sub, seen, r_ns, w_ns)
            out.extend(sub)
        return
    if rk == "union":
        # like a reader, take the first branch of the same kind (and name), then a promotion
        branches = [rr.resolve(b, r_ns) for b in r]
        exact = [b for b in branches if _kind(b[0]) == wk and _same_name(b[0], b[1], w, w_ns)]
        promoted = [b for b in branches if _kind(b[0]) in PROMOTIONS.get(wk, set())]
        if not exact and not promoted:
            out.append(f"{where}: writer type {_describe(w)} matches no branch of the reader's union")
            return
        branch, branch_ns = (exact or promoted)[0]
        _check(rr, branch, wr, w, path, out, seen, branch_ns, w_ns)
        return
    if "__unknown__" in (rk, wk):
        out.append(f"{where}: named type {(r if rk == '__unknown__' else w)['name']} is not defined")
        return

    if rk != wk and rk not in PROMOTIONS.get(wk, set()):
        out.append(f"{where}: writer type {_describe(w)} cannot be read as {_describe(r)}")
        return
    if r.get("logicalType") != w.get("logicalType"):
        out.append(f"{where}: logical type changed from {w.get('logicalType')} to {r.get('logicalType')}")
        return

    if rk in NAMED and not _same_name(r, r_ns, w, w_ns):
        out.append(f"{where}: {rk} name changed from {w['name']} to {r['name']}")
        return

    if rk == "record":
        key = (_full(r["name"], r_ns), _full(w["name"], w_ns))
        if key in seen:  # recursive type already being checked
            return
        seen = seen | {key}
        w_fields = {f["name"]: f for f in w["fields"]}
        for rf in r["fields"]:
            names = [rf["name"], *rf.get("aliases", [])]
            wf = next((w_fields[n] for n in names if n in w_fields), None)
            fpath = f"{path}.{rf['name']}" if path else rf["name"]
            if wf is None:
                if "default" not in rf:
                    out.append(f"{fpath}: field added without a default")
                continue
            _check(rr, rf["type"], wr, wf["type"], fpath, out, seen, r_ns, w_ns)
    elif rk == "enum":
        missing = [s for s in w["symbols"] if s not in r["symbols"]]
        if missing and "default" not in r:
            out.append(f"{where}: enum symbols {missing} removed and the enum has no default")
    elif rk == "fixed":
        if r["size"] != w["size"]:
            out.append(f"{where}: fixed size changed from {w['size']} to {r['size']}")
    elif rk == "array":
        _check(rr, r["items"], wr, w["items"], f"{path}[]", out, seen, r_ns, w_ns)
    elif rk == "map":
        _check(rr, r["values"], wr, w["values"], f"{path}{{}}", out, seen, r_ns, w_ns)
