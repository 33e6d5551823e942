"""The one root error type of atmpnet and its families.

Third-party errors are wrapped at the boundary (``raise ... from exc``) so callers
catch ``AtmpError`` and get a message that names the fault.
"""

from __future__ import annotations

from dataclasses import dataclass


class AtmpError(Exception):
    """Root of every error atmpnet raises on purpose."""


class ConfigurationError(AtmpError):
    """Settings are missing, contradictory or point at something unusable."""


class ContractError(AtmpError):
    """An event or a schema breaks the event contract."""


class CatalogError(ContractError):
    """The committed schema catalog is inconsistent (missing file, duplicate id, altered release)."""


class IncompatibleSchemaError(CatalogError):
    """A schema version cannot read data written with an earlier version of its subject."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("incompatible schema change:\n  " + "\n  ".join(problems))


class PayloadError(ContractError):
    """Bytes received from Kafka cannot be decoded into an event."""


class BadMagicByte(PayloadError):
    """The payload does not start with the Confluent wire-format magic byte 0."""

    def __init__(self, found: int) -> None:
        self.found = found
        super().__init__(f"bad magic byte {found:#04x}: expected 0x00 (Confluent wire format)")


class TruncatedPayload(PayloadError):
    """The payload ends before the header or the Avro body is complete."""


class MalformedPayload(PayloadError):
    """The Avro body does not match its writer schema (or has trailing bytes)."""


class UnknownSchemaId(PayloadError):
    """The payload names a schema id that neither the catalog nor the registry knows."""

    def __init__(self, schema_id: int, where: str) -> None:
        self.schema_id = schema_id
        super().__init__(f"unknown schema id {schema_id} (not in the {where})")


class EncodingError(ContractError):
    """An event could not be encoded with its writer schema."""


@dataclass(frozen=True)
class FieldError:
    """One failing field: its dotted path in the event and the reason."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path or '<event>'}: {self.reason}"


class EventValidationError(ContractError):
    """An event fails validation; ``errors`` names each failing field and why."""

    def __init__(self, event_type: str, errors: list[FieldError]) -> None:
        self.event_type = event_type
        self.errors = errors
        detail = "; ".join(str(e) for e in errors)
        super().__init__(f"invalid {event_type}: {detail}")


class EmbeddedStackError(AtmpError):
    """The embedded broker or ClickHouse engine could not be started or reached."""


class WarehouseError(AtmpError):
    """ClickHouse refused a statement or could not be reached."""


class OutboxFull(AtmpError):
    """Backpressure: the publisher's outbox already holds ``max_pending`` undelivered events."""


class PublishRefused(AtmpError):
    """The publisher refuses an event, e.g. one whose site differs from the publisher's own."""


class OutboxError(AtmpError):
    """The durable outbox (SQLite) could not be opened, read or written."""


class SchemaRegistrationError(ContractError):
    """The Schema Registry refused the catalog's import, could not be reached, or disagrees after it."""


class SchemaIdConflict(SchemaRegistrationError):
    """The registry already holds something else under a catalog id (or subject version)."""

    def __init__(self, schema_id: int, subject: str, version: int, reason: str) -> None:
        self.schema_id = schema_id
        self.subject = subject
        self.version = version
        super().__init__(f"schema id {schema_id} ({subject} v{version}): {reason}")


class SimulationError(AtmpError):
    """The network simulator was misused or asked for something it cannot produce."""
