"""Chain heads: the newest event of each sequence stream, recorded as the ingest writes it.

Each event's chain hash is checked by its successor's ``previous_hash``; the newest event of a
stream has no successor yet, so an altered or deleted last event would go unnoticed until the
module publishes again (for a retired module: never). The ingest records, in the same write as
the events, each stream's highest sequence and the hash of that event's bytes as they arrived;
``atmpnet verify`` and the integrity view compare the store's tail with it
(``rules.integrity.chain_breaks(heads=...)``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from atmpnet.contract.chain import payload_hash
from atmpnet.errors import ContractError, WarehouseError
from atmpnet.rules.integrity import stream_name
from atmpnet.warehouse.event_store import StoredEvent

# deviations the platform raises itself (integrity findings) belong to no site stream
PLATFORM_PRODUCER_KIND = "PROCESSOR"
_COLUMNS = ["stream", "site_id", "sequence", "hash", "event_id", "recorded_at"]


def _envelope(stored: StoredEvent) -> tuple[str | None, str | None, str, str, int]:
    """(site id, module id, producer kind, producer id, sequence), without building the model."""
    if stored.record is not None:
        env: dict[str, Any] = stored.record["envelope"]
        producer = env["producer"]
        kind = producer["kind"]
        return (
            env["site_id"],
            env["module_id"],
            str(getattr(kind, "value", kind)),
            producer["id"],
            env["sequence"],
        )
    e = stored.event.envelope
    return e.site_id, e.module_id, e.producer.kind.value, e.producer.id, e.sequence


def heads_of(events: Iterable[StoredEvent]) -> dict[str, tuple[str, int, str, Any]]:
    """Per stream in ``events``: (site id, sequence, chain hash, event id) of its highest sequence."""
    top: dict[str, tuple[int, StoredEvent, str]] = {}
    for stored in events:
        site_id, module_id, kind, producer_id, sequence = _envelope(stored)
        if kind == PLATFORM_PRODUCER_KIND:
            continue
        stream = stream_name(module_id, producer_id)
        best = top.get(stream)
        if best is None or sequence > best[0]:
            top[stream] = (sequence, stored, site_id or "")
    out: dict[str, tuple[str, int, str, Any]] = {}
    for stream, (sequence, stored, site_id) in top.items():
        try:
            digest = payload_hash(stored.raw)
        except ContractError:
            continue  # no wire-format bytes (a store fed without them): nothing to protect
        out[stream] = (site_id, sequence, digest, stored.event_id)
    return out


def record_chain_heads(client: Client, events: Iterable[StoredEvent], recorded_at: datetime) -> int:
    """Record the head of every stream in ``events``; return how many. The table keeps the highest."""
    heads = heads_of(events)
    if not heads:
        return 0
    rows = [
        (stream, site, seq, digest, event_id, recorded_at)
        for stream, (site, seq, digest, event_id) in heads.items()
    ]
    try:
        client.insert("chain_heads", rows, column_names=_COLUMNS)
    except Exception as exc:  # clickhouse-connect raises several unrelated types
        raise WarehouseError(f"cannot record {len(rows)} chain heads: {exc}") from exc
    return len(rows)


def usable_heads(recorded: dict[str, tuple[int, str]], tops: dict[str, int]) -> dict[str, str]:
    """Stream -> head hash, for the streams whose recorded head is at or past the stored top.

    A head behind the store's tail (events written without one, e.g. by a tool) cannot judge
    that tail: it is left out rather than raising a false break.
    """
    return {s: h for s, (seq, h) in recorded.items() if s in tops and seq >= tops[s]}


def chain_heads(client: Client) -> dict[str, tuple[int, str]]:
    """Per stream: the recorded head's (sequence, hash), the highest sequence recorded."""
    try:
        rows = client.query(
            "SELECT stream, max(sequence), argMax(hash, sequence) FROM chain_heads GROUP BY stream"
        ).result_rows
    except Exception as exc:  # clickhouse-connect raises several unrelated types
        raise WarehouseError(f"cannot read chain heads: {exc}") from exc
    return {str(s): (int(seq), str(h)) for s, seq, h in rows}
