"""Write golden encoded records for the current latest version of every subject.

Golden files are never overwritten: they record what a released version put on the wire,
and tests/contract/test_evolution.py proves every later version still decodes them.
Run after releasing a new schema version:  python tools/golden.py
"""

from __future__ import annotations

from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.examples import example_derived_events, example_events
from atmpnet.settings import REPO_ROOT

GOLDEN_DIR = REPO_ROOT / "tests" / "contract" / "golden"


def main() -> None:
    catalog = SchemaCatalog.load(REPO_ROOT / "schemas")
    codec = AvroCodec(catalog)
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for event in [*example_events(), *example_derived_events()]:
        latest = catalog.latest(event.subject())
        avro = GOLDEN_DIR / f"{latest.topic}@v{latest.version}.avro"
        if avro.exists():
            print(f"kept    {avro.name} (released goldens never change)")
            continue
        avro.write_bytes(codec.encode(event))
        avro.with_name(avro.name.replace(".avro", ".json")).write_text(event.model_dump_json(indent=2) + "\n")
        print(f"wrote   {avro.name}")


if __name__ == "__main__":
    main()
