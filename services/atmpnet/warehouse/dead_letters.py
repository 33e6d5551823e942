"""The dead-letter table: records the processors rejected, with the reason, read with FINAL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from clickhouse_connect.driver.client import Client

from atmpnet.errors import WarehouseError

TABLE = "dead_letters"
COLUMNS: tuple[str, ...] = (
    "topic",
    "partition",
    "offset",
    "received_at",
    "reason_code",
    "reason",
    "schema_id",
    "event_id",
    "site_id",
    "key",
    "value",
    "traceparent",
)


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """One rejected record as the table holds it (``key`` and ``value`` as received)."""

    topic: str
    partition: int
    offset: int
    received_at: datetime
    reason_code: str
    reason: str
    schema_id: int | None
    event_id: UUID | None
    site_id: str | None
    key: bytes | None
    value: bytes
    traceparent: str | None


def insert_dead_letters(client: Client, rows: list[DeadLetterRow]) -> None:
    """Insert rejected records; a re-delivered record collapses on (topic, partition, offset)."""
    if not rows:
        return
    data: list[list[Any]] = [
        [
            r.topic,
            r.partition,
            r.offset,
            r.received_at,
            r.reason_code,
            r.reason,
            r.schema_id,
            r.event_id,
            r.site_id,
            r.key,
            r.value,
            r.traceparent,
        ]
        for r in rows
    ]
    try:
        client.insert(TABLE, data, column_names=list(COLUMNS))
    except Exception as exc:  # clickhouse-connect raises several unrelated types
        raise WarehouseError(f"cannot insert {len(rows)} dead letters: {exc}") from exc


def dead_letters(client: Client, topic: str | None = None) -> list[DeadLetterRow]:
    """Rejected records, oldest first (all topics, or one source topic)."""
    where = "WHERE topic = %(topic)s" if topic else ""
    columns = ", ".join(f"`{c}`" for c in COLUMNS)
    order = "ORDER BY received_at, topic, `partition`, `offset`"
    query = f"SELECT {columns} FROM {TABLE} FINAL {where} {order}"  # noqa: S608 - constants, bound values
    result = client.query(
        query,
        parameters={"topic": topic} if topic else None,
        column_formats={"key": "bytes", "value": "bytes"},
    )
    return [DeadLetterRow(*row) for row in result.result_rows]
