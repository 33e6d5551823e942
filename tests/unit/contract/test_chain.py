"""The hash chain: canonical bytes, and every kind of break found at the right sequence numbers."""

from __future__ import annotations

import hashlib
import struct

import pytest
from atmpnet.contract.chain import (
    ChainBreak,
    ChainLink,
    canonical_body,
    event_hash,
    payload_hash,
    verify_chain,
)
from atmpnet.contract.codec import AvroCodec
from atmpnet.contract.events import Event
from atmpnet.contract.examples import example_events
from atmpnet.errors import BadMagicByte, TruncatedPayload
from hypothesis import given
from hypothesis import strategies as st

EXAMPLES = example_events()


def stream_payloads(codec: AvroCodec, n: int) -> list[bytes]:
    """n encoded events of one module stream, sequence 1..n (distinct bodies)."""
    base = EXAMPLES[0]
    return [codec.encode(base.with_envelope(sequence=i)) for i in range(1, n + 1)]


def chain_of(payloads: list[bytes]) -> list[ChainLink]:
    """Links as the publisher stamps them: each names the hash of the one before."""
    links, previous = [], None
    for i, p in enumerate(payloads, start=1):
        own = payload_hash(p)
        links.append(ChainLink(i, previous, own))
        previous = own
    return links


def relink(links: list[ChainLink], stored: list[bytes]) -> list[ChainLink]:
    """Links as a verifier recomputes them from stored bytes (the named hash stays as stored)."""
    return [
        ChainLink(link.sequence, link.previous_hash, payload_hash(p))
        for link, p in zip(links, stored, strict=True)
    ]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_the_hash_is_sha256_of_the_avro_body_and_survives_a_decode_and_reencode(
    codec: AvroCodec, event: Event
) -> None:
    payload = codec.encode(event)
    body = payload[5:]
    assert canonical_body(payload) == body
    assert event_hash(body) == hashlib.sha256(body).hexdigest()
    assert payload_hash(payload) == event_hash(body)
    assert len(event_hash(body)) == 64
    # canonical: decoding and encoding again under the same writer schema gives the same bytes
    assert payload_hash(codec.encode(codec.decode(payload))) == payload_hash(payload)


def test_the_header_is_not_hashed_but_every_body_byte_is(codec: AvroCodec) -> None:
    payload = codec.encode(EXAMPLES[0])
    other_id = b"\x00" + struct.pack(">I", 999) + payload[5:]
    assert payload_hash(other_id) == payload_hash(payload)
    for i in range(5, len(payload), max(1, len(payload) // 17)):
        altered = bytearray(payload)
        altered[i] ^= 0x01
        assert payload_hash(bytes(altered)) != payload_hash(payload)


def test_bad_payloads_are_refused() -> None:
    with pytest.raises(TruncatedPayload):
        canonical_body(b"\x00\x00\x00")
    with pytest.raises(BadMagicByte):
        canonical_body(b'{"a": 1}')


def test_an_intact_chain_has_no_break(codec: AvroCodec) -> None:
    links = chain_of(stream_payloads(codec, 8))
    assert verify_chain(links) == []
    assert verify_chain(links, head=links[-1].hash) == []


def test_an_altered_stored_event_breaks_the_link_after_it(codec: AvroCodec) -> None:
    payloads = stream_payloads(codec, 8)
    links = chain_of(payloads)
    stored = list(payloads)
    tampered = bytearray(stored[3])  # sequence 4
    tampered[-3] ^= 0x20
    stored[3] = bytes(tampered)
    breaks = verify_chain(relink(links, stored))
    assert [(b.before, b.after) for b in breaks] == [(4, 5)]
    assert breaks[0].expected == payload_hash(stored[3])
    assert breaks[0].found == links[3].hash


def test_the_tail_is_protected_only_by_the_recorded_head(codec: AvroCodec) -> None:
    payloads = stream_payloads(codec, 5)
    links = chain_of(payloads)
    stored = [*payloads[:-1], payloads[-1][:-1] + bytes([payloads[-1][-1] ^ 1])]
    assert verify_chain(relink(links, stored)) == []
    breaks = verify_chain(relink(links, stored), head=links[-1].hash)
    assert [(b.before, b.after, b.reason) for b in breaks] == [
        (5, 5, "the last event does not match the recorded chain head")
    ]


def test_a_gap_is_not_a_break_but_a_replaced_event_is(codec: AvroCodec) -> None:
    links = chain_of(stream_payloads(codec, 6))
    assert verify_chain([link for link in links if link.sequence != 3]) == []
    forged = ChainLink(3, links[1].hash, "f" * 64)  # a different event slipped in at 3
    breaks = verify_chain([*links[:2], forged, *links[3:]])
    assert [(b.before, b.after) for b in breaks] == [(3, 4)]


def test_two_events_claiming_one_sequence_are_a_fork() -> None:
    links = [ChainLink(1, None, "a" * 64), ChainLink(2, "a" * 64, "b" * 64), ChainLink(2, "a" * 64, "c" * 64)]
    breaks = verify_chain(links)
    assert breaks == [ChainBreak(2, 2, "b" * 64, "c" * 64, "2 different events claim sequence 2")]


def test_genesis_restart_and_legacy_prefix() -> None:
    a, b, c, d = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
    # sequence 1 may not name a predecessor
    assert [(x.before, x.after) for x in verify_chain([ChainLink(1, d, a)])] == [(0, 1)]
    # events written before producers chained (previous_hash null) may begin a stream
    legacy = [ChainLink(1, None, a), ChainLink(2, None, b), ChainLink(3, b, c)]
    assert verify_chain(legacy) == []
    # but once chained, a null previous hash is a restart
    restarted = [*legacy, ChainLink(4, None, d)]
    assert [(x.before, x.after, x.found) for x in verify_chain(restarted)] == [(3, 4, None)]


@given(
    order=st.permutations(range(10)),
    repeats=st.lists(st.integers(0, 9), max_size=6),
    tamper=st.one_of(st.none(), st.integers(1, 9)),
)
def test_verification_ignores_order_and_duplicates(
    order: list[int], repeats: list[int], tamper: int | None
) -> None:
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(10)]
    links = [ChainLink(i + 1, hashes[i - 1] if i else None, hashes[i]) for i in range(10)]
    if tamper is not None:  # the event at sequence `tamper` now hashes differently
        links[tamper - 1] = ChainLink(tamper, links[tamper - 1].previous_hash, "0" * 64)
    expected = verify_chain(links)
    assert [(b.before, b.after) for b in expected] == ([] if tamper is None else [(tamper, tamper + 1)])
    shuffled = [links[i] for i in order] + [links[i] for i in repeats]
    assert verify_chain(shuffled) == expected
