"""``atmpnet verify``: re-check every stream's hash chain and sequence numbers in the event store.

Streams (a module, else a producer: the envelope's sequence stream) are read one at a time in
sequence order, so memory stays bounded by the largest stream. Each event's hash is recomputed
from the stored ``raw`` bytes (in ClickHouse: SHA-256 of the Avro body, as
``contract.chain.payload_hash``), never read from a stored hash that could have been altered with
the row. The platform's own deviations (producer kind PROCESSOR) belong to no site stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from atmpnet.rules import integrity
from atmpnet.warehouse.chain_heads import PLATFORM_PRODUCER_KIND, chain_heads, usable_heads
from atmpnet.warehouse.views import (
    ENVELOPE_SQL,
    FAMILY_TABLES,
    STREAM_SQL,
    _query,
    _utc,
)


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify_store`` checked and found."""

    streams: int
    events: int
    findings: tuple[integrity.Finding, ...]

    @property
    def breaks(self) -> tuple[integrity.Finding, ...]:
        """Chain breaks and events claiming one sequence: the history was altered."""
        kinds = {integrity.FindingKind.CHAIN_BREAK, integrity.FindingKind.DUPLICATE_SEQUENCE}
        return tuple(f for f in self.findings if f.kind in kinds)

    @property
    def gaps(self) -> tuple[integrity.Finding, ...]:
        """Sequence numbers never received."""
        return tuple(f for f in self.findings if f.kind is integrity.FindingKind.SEQUENCE_GAP)


def _where() -> str:
    return f"producer_kind != '{PLATFORM_PRODUCER_KIND}'"


def stream_names(client: Client) -> list[str]:
    """Every sequence stream in the store, sorted."""
    union = " UNION ALL ".join(
        f"SELECT DISTINCT {STREAM_SQL} AS s FROM {t} FINAL WHERE {_where()}"  # noqa: S608 (constants)
        for t in FAMILY_TABLES
    )
    return sorted({str(r[0]) for r in _query(client, f"SELECT DISTINCT s FROM ({union})")})  # noqa: S608


def stream_facts(client: Client, stream: str) -> list[integrity.EventFact]:
    """One stream's events as integrity facts, hashes recomputed from ``raw``."""
    kind, _, name = stream.partition("/")
    column = "module_id" if kind == "module" else "producer_id"
    extra_where = "" if kind == "module" else " AND ifNull(module_id, '') = ''"
    out = []
    for table in FAMILY_TABLES:
        rows = client.query(
            f"SELECT {ENVELOPE_SQL} FROM {table} FINAL"  # noqa: S608 (constant names)
            f" WHERE {_where()} AND {column} = {{name:String}}{extra_where}",
            parameters={"name": name},
        ).result_rows
        for r in rows:
            out.append(
                integrity.EventFact(
                    event_id=str(r[0]),
                    site_id=r[1] or None,
                    module_id=r[2],
                    producer_id=r[3],
                    sequence=int(r[4]),
                    occurred_at=_utc(r[5]),  # type: ignore[arg-type]
                    published_at=_utc(r[6]),  # type: ignore[arg-type]
                    previous_hash=r[7],
                    hash=r[8],
                    lane=r[9],
                    batch_id=r[10],
                )
            )
    return out


def verify_store(client: Client) -> VerifyReport:
    """Re-check every stream: chain breaks (the tail against its recorded head), claimed twice, gaps."""
    bounds = integrity.IntegrityBounds(streams_start_at_one=True)
    findings: list[integrity.Finding] = []
    streams = stream_names(client)
    recorded = chain_heads(client)
    events = 0
    for stream in streams:
        facts = integrity.unique_facts(stream_facts(client, stream))
        events += len(facts)
        # the recorded head protects the tail
        top = {stream: max((f.sequence for f in facts), default=0)}
        findings += integrity.chain_breaks(facts, usable_heads(recorded, top))
        findings += integrity.sequence_findings(facts, bounds)
    findings.sort(key=lambda f: (f.stream, f.sequences, f.kind.value))
    return VerifyReport(len(streams), events, tuple(findings))
