"""Registering the committed catalog into a Schema Registry with the catalog's ids.

confluent-kafka's mock:// client has no modes and cannot register under a given id (its store
numbers schemas 1, 2, 3 ...), so the import itself is tested against a small in-process fake of
the Confluent REST API (modes, IMPORT with id and version, reads by id and by subject version),
reached through the real ``SchemaRegistryClient`` over HTTP. What the mock can do is tested on
the mock: finding a catalog already registered, refusing a foreign schema under a catalog id,
and failing with a typed error when asked to import.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.examples import example_events
from atmpnet.contract.registration import Action, SchemaRegistrar, registry_client, same_schema
from atmpnet.contract.registry import RegistrySource
from atmpnet.errors import SchemaIdConflict, SchemaRegistrationError
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

# --- a fake Confluent Schema Registry (only the calls registration makes) ---


class RegistryFault(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        self.status, self.code, self.message = status, code, message


@dataclass
class FakeRegistry:
    """Confluent's rules for modes and ids, kept in memory."""

    global_mode: str = "READWRITE"
    subject_modes: dict[str, str] = field(default_factory=dict)
    schemas: dict[int, str] = field(default_factory=dict)  # id -> schema string
    versions: dict[str, dict[int, int]] = field(default_factory=dict)  # subject -> version -> id
    requests: list[tuple[str, str]] = field(default_factory=list)

    def mode(self, subject: str) -> str:
        return self.subject_modes.get(subject, self.global_mode)

    def handle(self, method: str, path: str, query: str, body: Any) -> Any:  # noqa: PLR0912
        self.requests.append((method, path))
        parts = [unquote(p) for p in path.strip("/").split("/")]
        force = "force=true" in query.lower()
        match method, parts:
            case "GET", ["mode"]:
                return {"mode": self.global_mode}
            case "PUT", ["mode"]:
                if body["mode"] == "IMPORT" and self.schemas and not force:
                    raise RegistryFault(422, 42205, "Cannot import since found existing subjects")
                self.global_mode = body["mode"]
                return {"mode": self.global_mode}
            case "GET", ["mode", subject]:
                if subject not in self.subject_modes:
                    raise RegistryFault(404, 40409, f"Subject '{subject}' does not have subject-level mode")
                return {"mode": self.subject_modes[subject]}
            case "PUT", ["mode", subject]:
                if body["mode"] == "IMPORT" and self.versions.get(subject) and not force:
                    raise RegistryFault(422, 42205, "Cannot import since found existing subjects")
                self.subject_modes[subject] = body["mode"]
                return {"mode": body["mode"]}
            case "DELETE", ["mode", subject]:
                return {"mode": self.subject_modes.pop(subject, self.global_mode)}
            case "POST", ["subjects", subject, "versions"]:
                return self.register(subject, body)
            case "POST", ["subjects", subject]:  # lookup: is this schema registered under subject?
                for v, i in self.versions.get(subject, {}).items():
                    if json.loads(self.schemas[i]) == json.loads(body["schema"]):
                        return {"subject": subject, "version": v, "id": i, "schema": self.schemas[i]}
                raise RegistryFault(404, 40403, "Schema not found")
            case "GET", ["subjects", subject, "versions", version]:
                held = self.versions.get(subject, {})
                if not held:
                    raise RegistryFault(404, 40401, f"Subject '{subject}' not found.")
                v = max(held) if version == "latest" else int(version)
                if v not in held:
                    raise RegistryFault(404, 40402, f"Version {version} not found.")
                return {"subject": subject, "version": v, "id": held[v], "schema": self.schemas[held[v]]}
            case "GET", ["schemas", "ids", schema_id]:
                if int(schema_id) not in self.schemas:
                    raise RegistryFault(404, 40403, f"Schema {schema_id} not found")
                return {"schema": self.schemas[int(schema_id)]}
        raise RegistryFault(404, 404, f"no route {method} {path}")

    def register(self, subject: str, body: dict[str, Any]) -> dict[str, int]:
        mode = self.mode(subject)
        held = self.versions.setdefault(subject, {})
        if mode == "READONLY":
            raise RegistryFault(422, 42205, f"Subject {subject} is in read-only mode")
        if "id" in body:
            if mode != "IMPORT":
                raise RegistryFault(422, 42205, "Subject is not in import mode")
            schema_id, version = int(body["id"]), int(body["version"])
            if schema_id in self.schemas and json.loads(self.schemas[schema_id]) != json.loads(
                body["schema"]
            ):
                raise RegistryFault(422, 42207, f"Overwrite new schema with id {schema_id} is not permitted.")
            if held.get(version, schema_id) != schema_id:
                raise RegistryFault(422, 42207, f"Version {version} already registered under another id")
        else:
            if mode == "IMPORT":
                raise RegistryFault(422, 42205, "Subject is in import mode: an id is required")
            for v, i in held.items():
                if json.loads(self.schemas[i]) == json.loads(body["schema"]):
                    return {"id": i, "version": v}
            schema_id, version = max(self.schemas, default=0) + 1, max(held, default=0) + 1
        self.schemas[schema_id] = body["schema"]
        held[version] = schema_id
        return {"id": schema_id, "version": version}


@pytest.fixture
def fake_registry() -> Iterator[tuple[FakeRegistry, str]]:
    registry = FakeRegistry()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            try:
                status, answer = 200, registry.handle(self.command, url.path, url.query, body)
            except RegistryFault as fault:
                status, answer = fault.status, {"error_code": fault.code, "message": fault.message}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _serve  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield registry, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def catalog_ids(catalog: SchemaCatalog) -> dict[tuple[str, int], int]:
    return {(v.subject, v.version): v.schema_id for s in catalog.subjects() for v in catalog.versions(s)}


# --- the import, against the fake REST registry ---


def test_registers_every_version_under_its_catalog_id(
    catalog: SchemaCatalog, fake_registry: tuple[FakeRegistry, str]
) -> None:
    registry, url = fake_registry
    # someone else's subject first, so ids the registry would pick itself are not ours
    registry.schemas[1] = '"string"'
    registry.versions["unrelated-value"] = {1: 1}

    report = SchemaRegistrar(catalog, registry_client(url)).register()

    assert {(r.subject, r.version): r.schema_id for r in report.imported} == catalog_ids(catalog)
    for (subject, version), schema_id in catalog_ids(catalog).items():
        assert registry.versions[subject][version] == schema_id
        assert json.loads(registry.schemas[schema_id]) == catalog.by_id(schema_id).schema
    # every subject was put in IMPORT mode for the import and given back its default after
    assert registry.subject_modes == {}
    assert registry.global_mode == "READWRITE"
    assert ("PUT", "/mode/atmp.deviations.v1-value") in registry.requests


def test_a_second_run_changes_nothing(
    catalog: SchemaCatalog, fake_registry: tuple[FakeRegistry, str]
) -> None:
    registry, url = fake_registry
    SchemaRegistrar(catalog, registry_client(url)).register()
    before = (dict(registry.schemas), {s: dict(v) for s, v in registry.versions.items()})
    registry.requests.clear()

    report = SchemaRegistrar(catalog, registry_client(url)).register()

    assert report.imported == []
    assert len(report.present) == len(catalog_ids(catalog))
    assert (registry.schemas, registry.versions) == before
    assert not [r for r in registry.requests if r[0] != "GET"], "a re-run only reads"


def test_a_new_catalog_version_is_imported_alone(
    catalog: SchemaCatalog, fake_registry: tuple[FakeRegistry, str], tmp_path: Path
) -> None:
    registry, url = fake_registry
    SchemaRegistrar(catalog, registry_client(url)).register()
    evolved = release_v2(tmp_path)
    registry.requests.clear()

    report = SchemaRegistrar(evolved, registry_client(url)).register()

    assert [(r.subject, r.version, r.schema_id) for r in report.imported] == [
        ("atmp.deviations.v1-value", 3, 303)
    ]
    assert registry.versions["atmp.deviations.v1-value"] == {1: 301, 2: 302, 3: 303}
    # the subject already held v1: IMPORT mode on a non-empty subject needs force
    assert ("PUT", "/mode/atmp.deviations.v1-value") in registry.requests
    assert registry.subject_modes == {}


def test_global_mode_import_restores_the_global_mode(
    catalog: SchemaCatalog, fake_registry: tuple[FakeRegistry, str]
) -> None:
    registry, url = fake_registry
    registry.schemas[1] = '"string"'
    registry.versions["unrelated-value"] = {1: 1}

    report = SchemaRegistrar(catalog, registry_client(url), global_mode=True).register()

    assert len(report.imported) == len(catalog_ids(catalog))
    assert ("PUT", "/mode") in registry.requests
    assert registry.global_mode == "READWRITE"


def test_a_different_schema_under_a_catalog_id_is_refused_before_any_change(
    catalog: SchemaCatalog, fake_registry: tuple[FakeRegistry, str]
) -> None:
    registry, url = fake_registry
    registry.schemas[301] = json.dumps({"type": "record", "name": "Other", "fields": []})
    registry.versions["someone-else-value"] = {1: 301}

    with pytest.raises(SchemaIdConflict, match=r"301.*different schema") as caught:
        SchemaRegistrar(catalog, registry_client(url)).register()

    assert caught.value.schema_id == 301
    assert caught.value.subject == "atmp.deviations.v1-value"
    assert not [r for r in registry.requests if r[0] != "GET"], "nothing was changed"
    assert set(registry.versions) == {"someone-else-value"}


def test_a_subject_version_under_another_id_is_refused(
    catalog: SchemaCatalog, fake_registry: tuple[FakeRegistry, str]
) -> None:
    registry, url = fake_registry
    # the registry issued its own id for our v1, e.g. a producer auto-registered it
    schema = catalog.latest("atmp.batch-steps.v1-value").schema
    registry.schemas[7] = json.dumps(schema)
    registry.versions["atmp.batch-steps.v1-value"] = {1: 7}

    with pytest.raises(SchemaIdConflict, match="under id 7"):
        SchemaRegistrar(catalog, registry_client(url)).register()


def test_a_registry_refusal_is_a_typed_error_and_modes_are_restored(
    catalog: SchemaCatalog, fake_registry: tuple[FakeRegistry, str]
) -> None:
    registry, url = fake_registry
    registry.subject_modes["atmp.batch-steps.v1-value"] = "READONLY"

    original = registry.register

    def readonly(subject: str, body: dict[str, Any]) -> dict[str, int]:
        registry.subject_modes[subject] = "READONLY"  # an operator locks it mid-run
        return original(subject, body)

    registry.register = readonly  # type: ignore[method-assign]
    with pytest.raises(SchemaRegistrationError, match=r"refused to import atmp\.batch-steps\.v1-value"):
        SchemaRegistrar(catalog, registry_client(url)).register()

    assert registry.subject_modes["atmp.batch-steps.v1-value"] == "READONLY"


def test_an_unreachable_registry_is_a_typed_error(catalog: SchemaCatalog) -> None:
    client = SchemaRegistryClient({"url": "http://127.0.0.1:9", "max.retries": 0})
    with pytest.raises(SchemaRegistrationError, match="cannot read id"):
        SchemaRegistrar(catalog, client).register()


def test_codec_uses_the_imported_ids(catalog: SchemaCatalog, fake_registry: tuple[FakeRegistry, str]) -> None:
    """After the import, producers that only look up (no auto-register) stamp the catalog's ids."""
    _, url = fake_registry
    SchemaRegistrar(catalog, registry_client(url)).register()
    source = RegistrySource(catalog, url, auto_register=False)
    codec = AvroCodec(catalog, source)
    for event in example_events():
        payload = codec.encode(event)
        assert int.from_bytes(payload[1:5], "big") == catalog.latest(event.subject()).schema_id
        assert codec.decode(payload) == event


# --- what confluent-kafka's mock registry can check ---


def renumbered_catalog(catalog: SchemaCatalog, tmp_path: Path) -> SchemaCatalog:
    """The catalog with ids 1, 2, 3 ... in catalog order: the ids the mock hands out itself."""
    copy = tmp_path / "schemas"
    shutil.copytree(catalog.directory, copy)
    raw = json.loads((copy / "catalog.json").read_text())
    next_id = 1
    for entry in raw["subjects"].values():
        for version in entry["versions"]:
            version["id"] = next_id
            next_id += 1
    (copy / "catalog.json").write_text(json.dumps(raw))
    return SchemaCatalog.load(copy)


def mock_client() -> Any:
    # no retries: the mock answers modes and imports with a transport error, not a status
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}", "max.retries": 0})


def test_mock_registry_holding_the_catalog_is_verified_and_left_alone(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    renumbered = renumbered_catalog(catalog, tmp_path)
    client = mock_client()
    for subject in renumbered.subjects():
        for v in renumbered.versions(subject):
            assert client.register_schema(subject, Schema(json.dumps(v.schema), "AVRO")) == v.schema_id

    report = SchemaRegistrar(renumbered, client).register()

    assert {r.action for r in report.registrations} == {Action.PRESENT}
    assert SchemaRegistrar(renumbered, client).verify() == []


def test_mock_registry_with_a_foreign_schema_under_an_id_is_refused(
    catalog: SchemaCatalog, tmp_path: Path
) -> None:
    renumbered = renumbered_catalog(catalog, tmp_path)
    client = mock_client()
    client.register_schema("other-value", Schema('{"type": "string"}', "AVRO"))  # takes id 1

    with pytest.raises(SchemaIdConflict, match=r"schema id 1 \(atmp\.batch-steps\.v1-value v1\)"):
        SchemaRegistrar(renumbered, client).register()


def test_mock_registry_cannot_import_and_says_so(catalog: SchemaCatalog) -> None:
    client = mock_client()
    with pytest.raises(SchemaRegistrationError, match=r"mode of subject .* unsupported protocol 'mock://'"):
        SchemaRegistrar(catalog, client).register()
    assert client.get_subjects() == []


def test_same_schema_ignores_docs_key_order_and_short_names(catalog: SchemaCatalog) -> None:
    schema = catalog.latest("atmp.deviations.v1-value").schema
    reordered = json.loads(json.dumps(schema, sort_keys=True))
    reordered["doc"] = "another doc"
    assert same_schema(schema, reordered)
    changed = json.loads(json.dumps(schema))
    changed["fields"] = changed["fields"][:-1]
    assert not same_schema(schema, changed)


def release_v2(tmp_path: Path) -> SchemaCatalog:
    """A copy of the catalog with a compatible v3 of the deviation subject (id 303)."""
    from atmpnet.contract.catalog import fingerprint
    from atmpnet.settings import REPO_ROOT

    copy = tmp_path / "schemas"
    shutil.copytree(REPO_ROOT / "schemas", copy)
    raw = json.loads((copy / "catalog.json").read_text())
    entry = raw["subjects"]["atmp.deviations.v1-value"]
    v1 = entry["versions"][-1]  # the latest released version
    schema = json.loads((copy / v1["file"]).read_text())
    schema["fields"].append({"name": "root_cause", "type": ["null", "string"], "default": None})
    (copy / "deviation" / "v3.avsc").write_text(json.dumps(schema))
    v2 = dict(v1, version=3, id=303, file="deviation/v3.avsc", fingerprint="")
    entry["versions"].append(v2)
    (copy / "catalog.json").write_text(json.dumps(raw))
    v2["fingerprint"] = fingerprint(SchemaCatalog.load(copy).by_id(303).schema)
    (copy / "catalog.json").write_text(json.dumps(raw))
    return SchemaCatalog.load(copy)


def test_cli_registers_then_reports_present_and_refuses_a_conflict(
    catalog: SchemaCatalog, fake_registry: tuple[FakeRegistry, str]
) -> None:
    from atmpnet import cli
    from typer.testing import CliRunner

    registry, url = fake_registry
    runner = CliRunner()
    first = runner.invoke(cli.app, ["schemas", "register", "--url", url])
    assert first.exit_code == 0, first.output
    assert "atmp.deviations.v1-value v1 id 301: imported" in first.output
    again = runner.invoke(cli.app, ["schemas", "register", "--url", url, "--dry-run"])
    assert again.exit_code == 0, again.output
    assert "imported" not in again.output and "to import" not in again.output

    registry.schemas[101] = '"string"'  # someone overwrote an id behind our back
    refused = runner.invoke(cli.app, ["schemas", "register", "--url", url])
    assert refused.exit_code != 0
    assert isinstance(refused.exception, SchemaIdConflict)
