"""The event contract: Avro schemas, the catalog of stable schema ids, event models and codec."""
