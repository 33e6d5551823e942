"""The per-module hash chain that makes the event history tamper-evident.

An event's hash is SHA-256 over its canonical bytes: the Avro body of its Confluent
wire-format payload (the payload minus the 5-byte header), i.e. fastavro's schemaless
encoding under the writer schema. Those are the exact bytes the producer wrote and the
event store keeps in ``raw``, so the hash needs no re-encoding and cannot depend on the
reader's schema version. The header is left out so that the same body registered under
another schema id (a registry migration) keeps its hash.

Each event carries ``previous_hash``: the hash of the previous event (sequence - 1) of its
stream (its module, else its producer). Altering, replacing or reordering a stored event
changes its hash, so the link from its successor breaks; a dropped event leaves a sequence
gap (reported by the integrity rules, not here: a gap is not a break).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from atmpnet.contract.codec import HEADER, MAGIC_BYTE
from atmpnet.errors import BadMagicByte, TruncatedPayload


def event_hash(body: bytes) -> str:
    """SHA-256 (lowercase hex) of an event's canonical Avro body bytes."""
    return hashlib.sha256(body).hexdigest()


def canonical_body(payload: bytes) -> bytes:
    """The Avro body of a Confluent wire-format payload (the payload minus its 5-byte header)."""
    if len(payload) < HEADER.size:
        raise TruncatedPayload(
            f"payload of {len(payload)} bytes is shorter than the {HEADER.size}-byte wire-format header"
        )
    if payload[0] != MAGIC_BYTE:
        raise BadMagicByte(payload[0])
    return payload[HEADER.size :]


def payload_hash(payload: bytes) -> str:
    """The chain hash of a wire-format payload: ``event_hash`` of its canonical body."""
    return event_hash(canonical_body(payload))


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One event's place in its stream's chain: its sequence, the hash it names, its own hash."""

    sequence: int
    previous_hash: str | None
    hash: str


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """A link that does not follow from the one before it.

    ``before`` and ``after`` are the sequence numbers around the break (``after`` is the event
    whose ``previous_hash`` does not match; ``before`` is ``after - 1``, or equal to ``after``
    when two different events claim one sequence). ``expected`` is the hash of the event at
    ``before`` (None if unknown), ``found`` what the event at ``after`` names.
    """

    before: int
    after: int
    expected: str | None
    found: str | None
    reason: str


def verify_chain(links: Iterable[ChainLink], *, head: str | None = None) -> list[ChainBreak]:
    """Every break in one stream's chain, in sequence order; [] when the chain holds.

    Order and exact duplicates of the input do not matter. Links are checked only between
    consecutive sequence numbers: across a gap nothing can be proved (the gap itself is a
    completeness finding). A stream may begin with links whose ``previous_hash`` is null
    (written before producers chained, or the genesis event at sequence 1); once a link is
    chained, a later null link is a break (the chain was restarted). ``head``, when given, is
    the hash recorded for the stream's last event elsewhere (e.g. the processor's chain head):
    it protects the tail, which no successor covers yet.
    """
    by_sequence: dict[int, set[ChainLink]] = {}
    for link in links:
        by_sequence.setdefault(link.sequence, set()).add(link)
    breaks: list[ChainBreak] = []
    chained = False
    previous: tuple[int, set[ChainLink]] | None = None
    for sequence in sorted(by_sequence):
        group = by_sequence[sequence]
        hashes = sorted({link.hash for link in group})
        if len(hashes) > 1:
            breaks.append(
                ChainBreak(
                    sequence,
                    sequence,
                    hashes[0],
                    hashes[1],
                    f"{len(hashes)} different events claim sequence {sequence}",
                )
            )
        named = sorted({link.previous_hash or "" for link in group})
        if previous is None or previous[0] != sequence - 1:
            # first link, or the first after a gap: only the genesis rule can be checked
            if sequence == 1 and any(named):
                breaks.append(
                    ChainBreak(0, 1, None, next(n for n in named if n), "the first event names a predecessor")
                )
        else:
            before = sorted({link.hash for link in previous[1]})
            for name in named:
                if name in before:
                    continue
                if not name and not chained:
                    continue  # still in the unchained prefix of the stream
                breaks.append(
                    ChainBreak(
                        sequence - 1,
                        sequence,
                        before[0],
                        name or None,
                        "the chain was restarted (no previous hash)"
                        if not name
                        else "previous hash does not match the event before it",
                    )
                )
        chained = chained or any(named)
        previous = (sequence, group)
    if head is not None and previous is not None:
        last = sorted({link.hash for link in previous[1]})
        if head not in last:
            breaks.append(
                ChainBreak(
                    previous[0],
                    previous[0],
                    head,
                    last[0],
                    "the last event does not match the recorded chain head",
                )
            )
    return breaks
