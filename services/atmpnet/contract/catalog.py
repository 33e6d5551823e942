"""The committed schema catalog: every released schema version and its network-wide id.

``schemas/catalog.json`` lists shared named types (``types``) and, per subject
(``<topic>-value``, Confluent's TopicNameStrategy), every released version with its id,
file, the shared types it references and a fingerprint that freezes the release.
A schema file references a shared type by its full name; the catalog inlines it, so every
version expands to one self-contained schema: what the codec, a registry and the
compatibility check see.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from atmpnet.contract.compatibility import AvroSchema, incompatibilities
from atmpnet.errors import CatalogError, IncompatibleSchemaError, UnknownSchemaId

CATALOG_FILE = "catalog.json"


@dataclass(frozen=True)
class SchemaVersion:
    """One released version of a subject, expanded to a self-contained Avro schema."""

    subject: str
    topic: str
    record: str
    version: int
    schema_id: int
    file: str
    schema: dict[str, Any]
    recorded_fingerprint: str

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the schema as the files hold it now."""
        return fingerprint(self.schema)


def fingerprint(schema: AvroSchema) -> str:
    """SHA-256 over the schema's JSON without docs: any change of meaning changes it.

    Docs are left out so a released schema's documentation can still be improved.
    """
    return (
        "sha256:"
        + hashlib.sha256(
            json.dumps(_without_docs(schema), sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
    )


def _without_docs(schema: AvroSchema) -> AvroSchema:
    if isinstance(schema, dict):
        return {k: _without_docs(v) for k, v in schema.items() if k != "doc"}
    if isinstance(schema, list):
        return [_without_docs(s) for s in schema]
    return schema


def inline_references(schema: AvroSchema, types: dict[str, AvroSchema]) -> AvroSchema:
    """Replace the first use of each referenced named type by its definition.

    Later uses stay as names, as Avro requires each named type to be defined once.
    """
    defined: set[str] = set()

    def full(name: str, ns: str | None) -> str:
        return name if "." in name or not ns else f"{ns}.{name}"

    def walk(node: AvroSchema, ns: str | None) -> AvroSchema:
        if isinstance(node, str):
            name = full(node, ns)
            if name in types and name not in defined:
                defined.add(name)
                return walk(copy.deepcopy(types[name]), ns)
            return node
        if isinstance(node, list):
            return [walk(n, ns) for n in node]
        if isinstance(node, dict):
            out = dict(node)
            if "name" in out and out.get("type") in ("record", "enum", "fixed"):
                name = full(out["name"], out.get("namespace", ns))
                defined.add(name)
                ns = name.rpartition(".")[0] or None
            if "type" in out and not (isinstance(out["type"], str) and full(out["type"], ns) not in types):
                out["type"] = walk(out["type"], ns)
            if "fields" in out:
                out["fields"] = [walk(f, ns) for f in out["fields"]]
            if "items" in out:
                out["items"] = walk(out["items"], ns)
            if "values" in out:
                out["values"] = walk(out["values"], ns)
            return out
        return node

    return walk(schema, None)


class SchemaCatalog:
    """Read-only view of ``schemas/catalog.json`` with every version expanded."""

    def __init__(self, directory: Path, versions: list[SchemaVersion]) -> None:
        self.directory = directory
        self._by_subject: dict[str, list[SchemaVersion]] = {}
        self._by_id: dict[int, SchemaVersion] = {}
        self._subject_by_record: dict[str, str] = {}
        for v in versions:
            if v.schema_id in self._by_id:
                raise CatalogError(f"schema id {v.schema_id} is used twice ({v.subject})")
            self._by_id[v.schema_id] = v
            self._by_subject.setdefault(v.subject, []).append(v)
            owner = self._subject_by_record.setdefault(v.record, v.subject)
            if owner != v.subject:
                raise CatalogError(f"record {v.record} belongs to two subjects: {owner}, {v.subject}")
        for subject, vs in self._by_subject.items():
            vs.sort(key=lambda v: v.version)
            if [v.version for v in vs] != list(range(1, len(vs) + 1)):
                raise CatalogError(f"{subject}: versions must run 1, 2, 3 ... without gaps")

    @classmethod
    def load(cls, directory: Path) -> SchemaCatalog:
        """Load and expand the catalog in ``directory``; raise CatalogError on any inconsistency."""
        path = directory / CATALOG_FILE
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CatalogError(f"cannot read schema catalog {path}: {exc}") from exc

        def read(rel: str) -> Any:
            try:
                return json.loads((directory / rel).read_text())
            except (OSError, ValueError) as exc:
                raise CatalogError(f"cannot read schema file {directory / rel}: {exc}") from exc

        types = {
            name: {int(ver): read(rel) for ver, rel in by_version.items()}
            for name, by_version in raw.get("types", {}).items()
        }
        versions = []
        for subject, entry in raw["subjects"].items():
            for v in entry["versions"]:
                refs: dict[str, AvroSchema] = {}
                for ref_name, ref_version in v.get("references", {}).items():
                    try:
                        refs[ref_name] = types[ref_name][ref_version]
                    except KeyError as exc:
                        raise CatalogError(
                            f"{subject} v{v['version']} references unknown type {ref_name} v{ref_version}"
                        ) from exc
                schema = inline_references(read(v["file"]), refs)
                if not isinstance(schema, dict):
                    raise CatalogError(f"{v['file']}: a subject's schema must be a record")
                try:  # fastavro checks names, references and that defaults fit their types
                    fastavro.parse_schema(schema)
                except (ValueError, KeyError, TypeError) as exc:
                    raise CatalogError(
                        f"{subject} v{v['version']} ({v['file']}) is not valid Avro: {exc}"
                    ) from exc
                record = f"{schema.get('namespace')}.{schema['name']}"
                if record != entry["record"]:
                    raise CatalogError(f"{v['file']} defines {record}, catalog says {entry['record']}")
                versions.append(
                    SchemaVersion(
                        subject=subject,
                        topic=entry["topic"],
                        record=record,
                        version=v["version"],
                        schema_id=v["id"],
                        file=v["file"],
                        schema=schema,
                        recorded_fingerprint=v["fingerprint"],
                    )
                )
        return cls(directory, versions)

    def subjects(self) -> list[str]:
        """Every subject, in catalog order."""
        return list(self._by_subject)

    def versions(self, subject: str) -> list[SchemaVersion]:
        """Every released version of ``subject``, oldest first."""
        try:
            return list(self._by_subject[subject])
        except KeyError as exc:
            raise CatalogError(f"unknown subject {subject}") from exc

    def latest(self, subject: str) -> SchemaVersion:
        """The newest version of ``subject``: what producers write and readers read into."""
        return self.versions(subject)[-1]

    def by_id(self, schema_id: int) -> SchemaVersion:
        """The version with this network-wide schema id."""
        try:
            return self._by_id[schema_id]
        except KeyError as exc:
            raise UnknownSchemaId(schema_id, "schema catalog") from exc

    def subject_for_record(self, record: str) -> str:
        """The subject whose records are named ``record`` (e.g. ``atmp.BatchStep``)."""
        try:
            return self._subject_by_record[record]
        except KeyError as exc:
            raise CatalogError(f"no subject carries record {record}") from exc

    def problems(self) -> list[str]:
        """Everything wrong with the catalog: altered releases and incompatible versions.

        Each version must read data written by every earlier version of its subject
        (backward compatible, transitively), and no released version may change meaning.
        """
        found = []
        for subject, vs in self._by_subject.items():
            for v in vs:
                if v.fingerprint != v.recorded_fingerprint:
                    found.append(
                        f"{subject} v{v.version} ({v.file}) was altered after release: "
                        f"fingerprint {v.fingerprint} != recorded {v.recorded_fingerprint}; "
                        "release a new version instead"
                    )
            for i, reader in enumerate(vs):
                for writer in vs[:i]:
                    found.extend(
                        f"{subject} v{reader.version} cannot read v{writer.version}: {p}"
                        for p in incompatibilities(reader.schema, writer.schema)
                    )
        return found

    def check(self) -> None:
        """Raise IncompatibleSchemaError listing every problem, if there is one."""
        found = self.problems()
        if found:
            raise IncompatibleSchemaError(found)
