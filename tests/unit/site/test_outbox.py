"""The durable outbox on its own: append, stamp, deliver, restart, stay bounded, push back."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from atmpnet.errors import OutboxError, OutboxFull
from atmpnet.site.outbox import Outbox


def _append(outbox: Outbox, streams: list[str]) -> list[tuple[int, int]]:
    """Append one record per stream entry; return (id, sequence) pairs."""
    out = []
    with outbox.transaction() as tx:
        for stream in streams:
            sequence = tx.next_sequence(stream)
            row_id = tx.add("topic", stream.encode(), f"{stream}:{sequence}".encode(), None)
            out.append((row_id, sequence))
    return out


def test_append_stamps_sequences_per_stream_and_keeps_order(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    appended = _append(outbox, ["m1", "m1", "m2", "m1"])
    assert [seq for _, seq in appended] == [1, 2, 1, 3]
    assert outbox.pending() == 4
    records = outbox.undelivered()
    assert [r.id for r in records] == sorted(r.id for r in records)
    assert [r.value for r in records] == [b"m1:1", b"m1:2", b"m2:1", b"m1:3"]
    assert outbox.last_sequence("m1") == 3
    assert outbox.last_sequence("m2") == 1
    assert outbox.last_sequence("never") == 0


def test_a_failed_transaction_stores_nothing_and_burns_no_sequence(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    _append(outbox, ["m1"])

    def fail_half_way() -> None:
        with outbox.transaction() as tx:
            tx.next_sequence("m1")
            tx.add("topic", b"k", b"v", None)
            raise RuntimeError("encoding failed half-way")

    with pytest.raises(RuntimeError):
        fail_half_way()
    assert outbox.pending() == 1
    assert outbox.last_sequence("m1") == 1
    assert [seq for _, seq in _append(outbox, ["m1"])] == [2]


def test_restart_keeps_undelivered_records_and_continues_sequences(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    first = Outbox(path)
    ids = [row_id for row_id, _ in _append(first, ["m1", "m1", "m2"])]
    first.mark_delivered(ids[:1])
    first.close()

    again = Outbox(path)
    assert again.pending() == 2
    assert [r.id for r in again.undelivered()] == ids[1:]
    more = _append(again, ["m1", "m2"])
    assert [seq for _, seq in more] == [3, 2]
    assert more[0][0] > ids[-1]


def test_sequences_have_no_gaps_under_concurrent_publishers(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    sequences: list[int] = []
    lock = threading.Lock()

    def publish() -> None:
        for _ in range(50):
            got = _append(outbox, ["m1", "m1"])
            with lock:
                sequences.extend(seq for _, seq in got)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sequences) == list(range(1, 401))
    # outbox order and sequence order agree: ids were taken in the same transaction
    assert [int(r.value.split(b":")[1]) for r in outbox.iter_undelivered(batch=7)] == list(range(1, 401))


def test_mark_delivered_forgets_records_once(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    ids = [row_id for row_id, _ in _append(outbox, ["m1"] * 5)]
    assert outbox.mark_delivered(ids[:3]) == 3
    assert outbox.mark_delivered(ids[:3]) == 0  # a duplicate acknowledgement changes nothing
    assert outbox.pending() == 2
    assert [r.id for r in outbox.undelivered()] == ids[3:]


def test_delivered_records_are_purged_so_the_file_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    outbox = Outbox(path, durability="NORMAL")
    payload = b"x" * 1000
    for _ in range(20):
        with outbox.transaction() as tx:
            ids = [tx.add("topic", b"k", payload, None) for _ in range(500)]
        outbox.mark_delivered(ids)
    assert outbox.pending() == 0
    outbox.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    # 10 MB went through; the file holds pages for about one batch, not all of it
    assert path.stat().st_size < 2_000_000
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


def test_full_outbox_raises_at_once(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", max_pending=3)
    _append(outbox, ["m1"] * 3)
    with pytest.raises(OutboxFull, match="holds 3 undelivered events"):
        outbox.wait_for_room(1, block=False, timeout_s=5)
    with pytest.raises(OutboxFull, match="can never fit"):
        outbox.wait_for_room(4, block=True, timeout_s=5)


def test_full_outbox_blocks_until_the_timeout(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", max_pending=2)
    _append(outbox, ["m1"] * 2)
    started = time.monotonic()
    with pytest.raises(OutboxFull, match=r"waited 0\.3s"):
        outbox.wait_for_room(1, block=True, timeout_s=0.3)
    assert time.monotonic() - started >= 0.3


def test_full_outbox_blocks_until_deliveries_make_room(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", max_pending=2)
    ids = [row_id for row_id, _ in _append(outbox, ["m1"] * 2)]
    timer = threading.Timer(0.2, outbox.mark_delivered, args=(ids[:1],))
    started = time.monotonic()
    timer.start()
    outbox.wait_for_room(1, block=True, timeout_s=5)
    waited = time.monotonic() - started
    timer.join()
    assert 0.15 <= waited < 5
    assert outbox.pending() == 1


def test_wait_until_empty_reports_what_is_left(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    ids = [row_id for row_id, _ in _append(outbox, ["m1"] * 3)]
    assert outbox.wait_until_empty(0.05) == 3
    threading.Timer(0.1, outbox.mark_delivered, args=(ids,)).start()
    assert outbox.wait_until_empty(5) == 0


def test_acknowledgements_are_deleted_with_the_next_commit(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    ids = [row_id for row_id, _ in _append(outbox, ["m1"] * 4)]
    outbox.acknowledge(ids[:2])
    assert outbox.pending() == 4  # recorded, not yet committed
    assert outbox.acknowledged_age() >= 0
    _append(outbox, ["m1"])  # this commit deletes the acknowledged rows too
    assert outbox.pending() == 3
    assert outbox.acknowledged_age() == 0
    outbox.acknowledge(ids[2:])
    assert outbox.apply_acknowledged() == 2
    assert [r.id for r in outbox.undelivered()] == [ids[-1] + 1]


def test_acknowledgements_survive_a_failed_commit(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    ids = [row_id for row_id, _ in _append(outbox, ["m1"] * 2)]
    outbox.acknowledge(ids)

    def fail() -> None:
        with outbox.transaction() as tx:
            tx.add("topic", b"k", b"v", None)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail()
    assert outbox.pending() == 2
    assert outbox.apply_acknowledged() == 2
    assert outbox.pending() == 0


def test_an_outbox_in_use_cannot_be_opened_again_until_it_is_closed(tmp_path: Path) -> None:
    # two writers would stamp the same sequences from their cached counters and delete each
    # other's rows on acknowledgement; a SIGKILLed owner's lock goes with its process
    path = tmp_path / "o.db"
    first = Outbox(path)
    with pytest.raises(OutboxError, match="in use"):
        Outbox(path)
    script = f"from pathlib import Path; from atmpnet.site.outbox import Outbox; Outbox(Path({str(path)!r}))"
    holder = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "in use" in holder.stderr
    first.close()
    again = Outbox(path)
    again.close()


def test_acknowledged_records_make_room_before_their_deletion_is_committed(tmp_path: Path) -> None:
    # the broker made room already: a raising publisher must not refuse for the 50 ms until then
    outbox = Outbox(tmp_path / "o.db", max_pending=2)
    ids = [row_id for row_id, _ in _append(outbox, ["m1"] * 2)]
    outbox.acknowledge(ids[:1])
    outbox.wait_for_room(1, block=False, timeout_s=0)
    assert outbox.pending() == 1


def _append_chained(outbox: Outbox, streams: list[str]) -> list[tuple[int, str | None, str]]:
    """Append one record per stream entry, chained as the publisher does; (sequence, previous, hash)."""
    out = []
    with outbox.transaction() as tx:
        for stream in streams:
            sequence = tx.next_sequence(stream)
            previous = tx.last_hash(stream)
            value = f"{stream}:{sequence}:{previous}".encode()
            own = hashlib.sha256(value).hexdigest()
            tx.stamp_hash(stream, own)
            tx.add("topic", stream.encode(), value, None)
            out.append((sequence, previous, own))
    return out


def test_chain_heads_are_committed_with_the_records_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    first = Outbox(path)
    a = _append_chained(first, ["m1", "m1", "m2"])
    # within one transaction the head moves with each event; a new stream starts unchained
    assert a[0][1] is None and a[1][1] == a[0][2] and a[2][1] is None
    assert first.last_hash("m1") == a[1][2]
    assert first.last_hash("never") is None

    def fail_half_way() -> None:
        with first.transaction() as tx:
            tx.next_sequence("m1")
            tx.stamp_hash("m1", "f" * 64)
            tx.add("topic", b"k", b"v", None)
            raise RuntimeError("encoding failed half-way")

    with pytest.raises(RuntimeError):
        fail_half_way()
    assert first.last_hash("m1") == a[1][2]  # a rolled-back transaction moves no head
    first.close()

    again = Outbox(path)
    b = _append_chained(again, ["m1", "m2"])
    assert b == [(3, a[1][2], b[0][2]), (2, a[2][2], b[1][2])]
    again.close()


def test_a_stream_given_a_sequence_without_a_hash_gets_a_null_head(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    _append_chained(outbox, ["m1"])
    _append(outbox, ["m1"])  # sequence 2 with no hash: its hash is unknown, so the head is too
    assert outbox.last_sequence("m1") == 2
    assert outbox.last_hash("m1") is None
    outbox.close()
    assert Outbox(tmp_path / "o.db").last_hash("m1") is None


def test_an_outbox_from_before_the_chain_gains_the_head_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the schema of the publishing issue, before chaining
        db.executescript(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, key BLOB NOT NULL,"
            " value BLOB NOT NULL, traceparent TEXT);"
            "CREATE TABLE streams (stream TEXT PRIMARY KEY, last_sequence INTEGER NOT NULL) WITHOUT ROWID;"
            "INSERT INTO streams VALUES ('m1', 41);"
        )
    outbox = Outbox(path)
    assert outbox.last_sequence("m1") == 41
    assert outbox.last_hash("m1") is None
    [(sequence, previous, own)] = _append_chained(outbox, ["m1"])
    assert (sequence, previous) == (42, None)  # the chain begins here: an unchained prefix is allowed
    outbox.close()
    assert Outbox(path).last_hash("m1") == own
