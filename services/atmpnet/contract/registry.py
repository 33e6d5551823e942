"""Where schema ids come from: the committed catalog, or a Confluent-compatible Schema Registry.

Ids are stable across the network. Without a registry (the embedded default) they are the
catalog's. With one, the catalog's schemas are registered under their subjects (or found
there) and the registry's ids are used; writer schemas of ids it issued are fetched once.
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Protocol

with warnings.catch_warnings(record=True):
    # authlib, imported by the registry client, warns about its own httpx integration on import
    # and forces an "always" filter for it, so record (and drop) instead of filtering
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

from atmpnet.contract.catalog import SchemaCatalog
from atmpnet.errors import ConfigurationError, ContractError, UnknownSchemaId


class SchemaSource(Protocol):
    """Maps subjects to the id producers stamp, and ids back to writer schemas."""

    def writer_id(self, subject: str) -> int:
        """Id of the catalog's latest schema of ``subject``, as this source knows it."""
        ...

    def writer_schema(self, schema_id: int) -> dict[str, Any]:
        """The self-contained writer schema behind ``schema_id``."""
        ...


class CatalogSource:
    """Schema ids from the committed catalog (no registry server)."""

    def __init__(self, catalog: SchemaCatalog) -> None:
        self.catalog = catalog

    def writer_id(self, subject: str) -> int:
        """The catalog id of the subject's latest version."""
        return self.catalog.latest(subject).schema_id

    def writer_schema(self, schema_id: int) -> dict[str, Any]:
        """The catalog's schema for ``schema_id``."""
        return self.catalog.by_id(schema_id).schema


class RegistrySource:
    """Schema ids from a Schema Registry, through confluent-kafka's client.

    ``url`` may be ``mock://name`` for confluent-kafka's in-process mock registry.
    With ``auto_register`` the catalog's schema is registered when the registry lacks it;
    without it, a missing subject is an error (production registries are provisioned by
    the schema-registration tool).
    """

    def __init__(
        self,
        catalog: SchemaCatalog,
        url: str,
        *,
        basic_auth: str | None = None,
        auto_register: bool = True,
        client: Any = None,
    ) -> None:
        self.catalog = catalog
        self.auto_register = auto_register
        conf = {"url": url}
        if basic_auth:
            conf["basic.auth.user.info"] = basic_auth
        try:
            self.client = client or SchemaRegistryClient.new_client(conf)
        except Exception as exc:  # the client raises plain ValueErrors on bad conf
            raise ConfigurationError(f"cannot create a Schema Registry client for {url}: {exc}") from exc
        self._ids: dict[str, int] = {}

    def writer_id(self, subject: str) -> int:
        """Register (or look up) the catalog's latest schema of ``subject`` and return its id."""
        if subject in self._ids:
            return self._ids[subject]
        schema = Schema(json.dumps(self.catalog.latest(subject).schema), "AVRO")
        try:
            if self.auto_register:
                schema_id = self.client.register_schema(subject, schema)
            else:
                schema_id = self.client.lookup_schema(subject, schema).schema_id
        except SchemaRegistryError as exc:
            raise ContractError(f"schema registry refused {subject}: {exc}") from exc
        self._ids[subject] = int(schema_id)
        return self._ids[subject]

    def writer_schema(self, schema_id: int) -> dict[str, Any]:
        """Fetch the writer schema the registry holds under ``schema_id``."""
        try:
            registered = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            raise UnknownSchemaId(schema_id, "schema registry") from exc
        if registered.schema_type not in (None, "AVRO"):
            raise ContractError(f"schema id {schema_id} is {registered.schema_type}, not AVRO")
        if registered.references:
            # atmpnet registers self-contained schemas; references would need resolving here
            raise ContractError(
                f"schema id {schema_id} uses schema references, which atmpnet does not resolve"
            )
        parsed: dict[str, Any] = json.loads(str(registered.schema_str))
        return parsed
