"""Golden records written by released versions keep decoding in every later version."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import DERIVED_EVENT_TYPES, EVENT_TYPES

from tests.contract.test_catalog import copy_schemas, release

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_FILES = sorted(GOLDEN.glob("*.avro"))


def expected(avro: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(avro.with_name(avro.name.replace(".avro", ".json")).read_text())
    return data


def test_every_released_version_has_a_golden_record(catalog: SchemaCatalog) -> None:
    names = {p.name for p in GOLDEN_FILES}
    for subject in catalog.subjects():
        for v in catalog.versions(subject):
            assert f"{v.topic}@v{v.version}.avro" in names, (
                f"run python tools/golden.py for {subject} v{v.version}"
            )


@pytest.mark.parametrize("golden", GOLDEN_FILES, ids=lambda p: p.name)
def test_golden_records_decode_with_the_current_models(codec: AvroCodec, golden: Path) -> None:
    event = codec.decode(golden.read_bytes())
    assert type(event) in EVENT_TYPES + DERIVED_EVENT_TYPES
    want = expected(golden)
    # envelope fields added after a golden was written read as their defaults
    want["envelope"] = {"previous_hash": None, **want["envelope"]}
    assert json.loads(event.model_dump_json()) == want


def _subset(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        return all(k in actual and _subset(actual[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return len(actual) == len(wanted) and all(_subset(a, w) for a, w in zip(actual, wanted, strict=True))
    return bool(actual == wanted)


def _json_value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def test_golden_records_decode_after_a_compatible_change(tmp_path: Path) -> None:
    schemas = copy_schemas(tmp_path)

    def evolve(schema: dict[str, Any]) -> None:
        schema["fields"].append(
            {"name": "line_clearance_confirmed", "type": ["null", "boolean"], "default": None}
        )
        schema["fields"] = [f for f in schema["fields"] if f["name"] != "performed_by"]  # dropping is fine
        attempt = next(f for f in schema["fields"] if f["name"] == "attempt")
        attempt["type"] = "long"  # widened

    catalog = release(schemas, "batch-step", 3, evolve)
    catalog.check()
    codec = AvroCodec(catalog)
    golden = GOLDEN / "atmp.batch-steps.v1@v1.avro"
    record_name, record = codec.decode_record(golden.read_bytes())
    assert record_name == "atmp.BatchStep"
    assert record["line_clearance_confirmed"] is None
    assert "performed_by" not in record
    want = expected(golden)
    del want["performed_by"]
    as_json = json.loads(json.dumps(record, default=_json_value))
    assert _subset(as_json, want)
    # the reader schema's version is 3, the event still says it was written as v1
    assert record["envelope"]["schema_version"] == 1
