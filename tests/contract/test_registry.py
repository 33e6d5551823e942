"""Schema ids from a Confluent-compatible registry, through confluent-kafka's mock:// client."""

from __future__ import annotations

import json
import struct
import uuid

import pytest
from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import BatchStep
from atmpnet.contract.examples import example_events
from atmpnet.contract.registry import RegistrySource
from atmpnet.errors import ContractError, UnknownSchemaId
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient


def mock_client() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})


def test_round_trip_with_registry_ids(catalog: SchemaCatalog) -> None:
    client = mock_client()
    client.register_schema(
        "unrelated-value", Schema('{"type": "string"}', "AVRO")
    )  # ids now differ from ours
    codec = AvroCodec(catalog, RegistrySource(catalog, "mock://ignored", client=client))
    for event in example_events():
        payload = codec.encode(event)
        (schema_id,) = struct.unpack(">I", payload[1:5])
        registered = client.get_latest_version(event.subject())
        assert schema_id == registered.schema_id
        assert schema_id != catalog.latest(event.subject()).schema_id
        assert json.loads(str(registered.schema.schema_str)) == catalog.latest(event.subject()).schema
        # a reader with its own client fetches the writer schema by id
        reader = AvroCodec(catalog, RegistrySource(catalog, "mock://ignored", client=client))
        assert reader.decode(payload) == event


def test_old_writer_schema_in_registry_resolves_to_the_readers(catalog: SchemaCatalog) -> None:
    client = mock_client()
    old = json.loads(json.dumps(catalog.latest(BatchStep.subject()).schema))
    old["fields"] = [f for f in old["fields"] if f["name"] != "performed_by"]  # an older producer's schema
    old_id = client.register_schema(BatchStep.subject(), Schema(json.dumps(old), "AVRO"))

    import fastavro

    event = next(e for e in example_events() if isinstance(e, BatchStep))
    record = event.to_avro()
    del record["performed_by"]
    import io

    buf = io.BytesIO()
    buf.write(b"\x00" + struct.pack(">I", old_id))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), record)

    codec = AvroCodec(catalog, RegistrySource(catalog, "mock://ignored", client=client))
    decoded = codec.decode(buf.getvalue())
    assert decoded == event.model_copy(update={"performed_by": None})


def test_without_auto_register_a_missing_subject_is_an_error(catalog: SchemaCatalog) -> None:
    codec = AvroCodec(
        catalog, RegistrySource(catalog, "mock://ignored", client=mock_client(), auto_register=False)
    )
    with pytest.raises(ContractError, match=r"schema registry refused atmp\.batch-steps\.v1-value"):
        codec.encode(example_events()[0])


def test_unknown_registry_id_is_named(catalog: SchemaCatalog) -> None:
    codec = AvroCodec(catalog, RegistrySource(catalog, "mock://ignored", client=mock_client()))
    with pytest.raises(UnknownSchemaId, match="not in the schema registry"):
        codec.decode(b"\x00" + struct.pack(">I", 4242) + b"\x02")


def test_registry_url_builds_a_real_client(catalog: SchemaCatalog) -> None:
    source = RegistrySource(catalog, f"mock://{uuid.uuid4().hex}")
    assert type(source.client).__name__ == "MockSchemaRegistryClient"
