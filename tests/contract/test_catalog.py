"""The committed catalog: stable ids, frozen releases, backward compatibility, current docs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.docs import render_event_catalog
from atmpnet.errors import CatalogError, IncompatibleSchemaError
from atmpnet.settings import REPO_ROOT
from typer.testing import CliRunner

from tests.conftest import SCHEMA_DIR


def copy_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, target)
    return target


def edit_catalog(directory: Path, change: Any) -> None:
    path = directory / "catalog.json"
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw, indent=2))


def test_repository_catalog_has_no_problems(catalog: SchemaCatalog) -> None:
    assert catalog.problems() == []
    catalog.check()


def test_schema_ids_are_unique_and_stable(catalog: SchemaCatalog) -> None:
    ids = {(s, v.version): v.schema_id for s in catalog.subjects() for v in catalog.versions(s)}
    assert len(set(ids.values())) == len(ids)
    # ids already in use on the network must never move
    assert ids[("atmp.batch-steps.v1-value", 1)] == 101
    assert ids[("atmp.sensor-summaries.v1-value", 1)] == 201
    assert ids[("atmp.deviations.v1-value", 1)] == 301
    assert ids[("atmp.module-configs.v1-value", 1)] == 401
    assert ids[("atmp.baselines.v1-value", 1)] == 501


def test_subjects_follow_the_topic_name_strategy(catalog: SchemaCatalog) -> None:
    for subject in catalog.subjects():
        assert subject == f"{catalog.latest(subject).topic}-value"


def test_altering_a_released_schema_is_refused(tmp_path: Path) -> None:
    schemas = copy_schemas(tmp_path)
    path = schemas / "deviation" / "v1.avsc"
    path.write_text(
        path.read_text().replace(
            '"name": "alarm_code", "type": ["null", "string"]',
            '"name": "alarm_code", "type": ["null", "string", "int"]',
        )
    )
    problems = SchemaCatalog.load(schemas).problems()
    assert any(
        "atmp.deviations.v1-value v1 (deviation/v1.avsc) was altered after release" in p for p in problems
    )


def test_improving_a_released_schema_doc_is_allowed(tmp_path: Path) -> None:
    schemas = copy_schemas(tmp_path)
    path = schemas / "deviation" / "v1.avsc"
    path.write_text(
        path.read_text().replace("What was observed, in words.", "What was observed, in plain words.")
    )
    assert SchemaCatalog.load(schemas).problems() == []


def test_duplicate_ids_and_missing_types_are_refused(tmp_path: Path) -> None:
    schemas = copy_schemas(tmp_path)
    edit_catalog(
        schemas, lambda raw: raw["subjects"]["atmp.deviations.v1-value"]["versions"][0].update(id=101)
    )
    with pytest.raises(CatalogError, match="schema id 101 is used twice"):
        SchemaCatalog.load(schemas)
    schemas = copy_schemas(tmp_path / "b")
    edit_catalog(schemas, lambda raw: raw["types"].pop("atmp.Component"))
    with pytest.raises(CatalogError, match=r"references unknown type atmp\.Component v1"):
        SchemaCatalog.load(schemas)


def test_cli_check_passes_on_the_repository_and_fails_on_an_incompatible_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atmpnet import cli
    from atmpnet.settings import get_settings

    runner = CliRunner()
    get_settings.cache_clear()
    result = runner.invoke(cli.app, ["schemas", "check"])
    assert result.exit_code == 0, result.output
    assert "7 subjects" in result.output

    schemas = copy_schemas(tmp_path)
    release(
        schemas, "batch-step", 3, lambda s: s["fields"].append({"name": "operator_badge", "type": "string"})
    )
    monkeypatch.setenv("ATMPNET_SCHEMA_DIR", str(schemas))
    get_settings.cache_clear()
    try:
        result = runner.invoke(cli.app, ["schemas", "check"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "v3 cannot read v1: operator_badge: field added without a default" in result.output
    assert "v3 cannot read v2: operator_badge: field added without a default" in result.output


def release(schemas: Path, family: str, version: int, change: Any) -> SchemaCatalog:
    """Release a new version of ``family`` the way a developer would: copy, change, catalog it."""
    previous = json.loads((schemas / family / f"v{version - 1}.avsc").read_text())
    change(previous)
    (schemas / family / f"v{version}.avsc").write_text(json.dumps(previous, indent=2))
    subject = next(
        s
        for s, e in json.loads((schemas / "catalog.json").read_text())["subjects"].items()
        if e["versions"][0]["file"].startswith(f"{family}/")
    )

    def add(raw: dict[str, Any]) -> None:
        versions = raw["subjects"][subject]["versions"]
        versions.append(
            {
                **versions[-1],
                "version": version,
                "id": versions[-1]["id"] + 1,
                "file": f"{family}/v{version}.avsc",
                "fingerprint": "pending",
            }
        )

    edit_catalog(schemas, add)
    fresh = SchemaCatalog.load(schemas).latest(subject).fingerprint
    edit_catalog(schemas, lambda raw: raw["subjects"][subject]["versions"][-1].update(fingerprint=fresh))
    return SchemaCatalog.load(schemas)


def test_incompatible_releases_are_refused(tmp_path: Path) -> None:
    schemas = copy_schemas(tmp_path)

    def narrow(schema: dict[str, Any]) -> None:
        field = next(f for f in schema["fields"] if f["name"] == "count")
        field["type"] = "int"  # long -> int loses data

    catalog = release(schemas, "sensor-summary", 3, narrow)
    with pytest.raises(IncompatibleSchemaError) as info:
        catalog.check()
    assert info.value.problems == [
        "atmp.sensor-summaries.v1-value v3 cannot read v1: count: writer type long cannot be read as int",
        "atmp.sensor-summaries.v1-value v3 cannot read v2: count: writer type long cannot be read as int",
    ]


def test_event_catalog_doc_is_current(catalog: SchemaCatalog) -> None:
    committed = (REPO_ROOT / "docs" / "event-catalog.md").read_text()
    assert committed == render_event_catalog(catalog), "run `atmpnet schemas docs`"


def test_a_release_fastavro_cannot_parse_is_refused(tmp_path: Path) -> None:
    schemas = copy_schemas(tmp_path)
    with pytest.raises(CatalogError, match=r"atmp\.batch-steps\.v1-value v3 .* is not valid Avro"):
        release(
            schemas,
            "batch-step",
            3,
            lambda s: s["fields"].append(
                {"name": "extra", "type": ["null", "atmp.Undefined"], "default": None}
            ),
        )


def test_shared_types_named_without_namespace_are_inlined_once(tmp_path: Path) -> None:
    from atmpnet.contract.catalog import inline_references

    types = {"atmp.Step": {"type": "enum", "name": "Step", "namespace": "atmp", "symbols": ["A"]}}
    schema = {
        "type": "record",
        "name": "R",
        "namespace": "atmp",
        "fields": [
            {"name": "a", "type": "Step"},
            {"name": "b", "type": ["null", "atmp.Step"], "default": None},
        ],
    }
    expanded = inline_references(schema, types)
    assert expanded["fields"][0]["type"]["type"] == "enum"
    assert expanded["fields"][1]["type"] == ["null", "atmp.Step"]
    import fastavro

    fastavro.parse_schema(expanded)
