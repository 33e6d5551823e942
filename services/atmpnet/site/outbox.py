"""The durable outbox: every event a site publishes is on disk before it is produced.

One SQLite file in WAL mode holds the encoded records not yet acknowledged by the broker, in
the order they were published, and the head of every stream: its last sequence number and
the chain hash of its last event (``contract/chain.py``). A record is appended in the same
transaction that stamps its sequence and its ``previous_hash``, so sequences rise by one
without gaps and the hash chain continues unbroken across restarts, and a record is deleted
only when the broker has acknowledged it. Deleting on acknowledgement keeps the file bounded:
the outbox holds exactly the undelivered records.

The connection is shared by the publishing threads and the delivery thread under one lock
(``check_same_thread=False``); SQLite itself serialises writers to one file anyway. One outbox
belongs to one ``Outbox`` at a time: the counters (next id, last sequences, pending) live in
memory, so a second writer would stamp duplicate sequences. An exclusive ``flock`` on a
``<file>.lock`` beside it enforces that; the kernel releases it when the owner dies, so a
restart after a crash opens the outbox at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from atmpnet.errors import OutboxError, OutboxFull

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY,
    topic       TEXT NOT NULL,
    key         BLOB NOT NULL,
    value       BLOB NOT NULL,
    traceparent TEXT
);
CREATE TABLE IF NOT EXISTS streams (
    stream        TEXT PRIMARY KEY,
    last_sequence INTEGER NOT NULL,
    last_hash     TEXT
) WITHOUT ROWID;
"""
# outboxes created before the hash chain (issue 7) get the column; their streams' heads are
# null, so those streams go on chained from their next event (an unchained prefix is allowed)
_ADD_LAST_HASH = "ALTER TABLE streams ADD COLUMN last_hash TEXT"

Durability = Literal["FULL", "NORMAL"]


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One undelivered record as stored: produced again, unchanged, after a restart."""

    id: int
    topic: str
    key: bytes
    value: bytes
    traceparent: str | None


class OutboxTransaction:
    """Records appended, sequences and chain hashes stamped together; committed or rolled back as one."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self.rows: list[tuple[int, str, bytes, bytes, str | None]] = []
        self._stamped: dict[str, int] = {}
        self._hashes: dict[str, str] = {}
        self._next_id = outbox._next_id

    def next_sequence(self, stream: str) -> int:
        """The stream's next sequence number (its last committed one + 1, or 1)."""
        stamped = self._stamped
        last = stamped.get(stream)
        if last is None:
            last = self._outbox._last_sequence.get(stream, 0)
        stamped[stream] = last + 1
        return last + 1

    def last_hash(self, stream: str) -> str | None:
        """The chain hash of the stream's last event: stamped earlier in this transaction, else committed.

        None for a stream with no event yet, or whose events were published before chaining.
        """
        found = self._hashes.get(stream)
        return found if found is not None else self._outbox._last_hash.get(stream)

    def stamp_hash(self, stream: str, event_hash: str) -> None:
        """Record ``event_hash`` as the head of a stream whose next sequence was just taken.

        Call it with the chain hash of the event added with that sequence. A stream given a
        sequence but no hash in a transaction gets a null head (its hash is unknown).
        """
        self._hashes[stream] = event_hash

    def add(self, topic: str, key: bytes, value: bytes, traceparent: str | None) -> int:
        """Append a record; return its outbox id (ids rise in publish order)."""
        row_id = self._next_id
        self._next_id = row_id + 1
        self.rows.append((row_id, topic, key, value, traceparent))
        return row_id

    @property
    def stamped(self) -> dict[str, int]:
        """The last sequence stamped per stream in this transaction."""
        return self._stamped

    def heads(self) -> list[tuple[str, int, str | None]]:
        """(stream, last sequence, last hash) of every stream this transaction gave a sequence."""
        hashes = self._hashes
        return [(stream, sequence, hashes.get(stream)) for stream, sequence in self._stamped.items()]


class Outbox:
    """A bounded, durable, ordered queue of encoded records on SQLite (WAL)."""

    def __init__(
        self,
        path: Path,
        *,
        max_pending: int = 1_000_000,
        durability: Durability = "FULL",
    ) -> None:
        """Open (or create) the outbox at ``path``.

        ``durability="FULL"`` fsyncs the WAL on every commit, so an appended record survives
        power loss; ``"NORMAL"`` survives a killed process but not a lost machine.
        """
        if max_pending < 1:
            raise OutboxError(f"max_pending must be at least 1, not {max_pending}")
        self.path = path
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        # acknowledged ids not yet deleted: the next append's commit deletes them (one fsync for
        # both), or apply_acknowledged() when no append comes soon
        self._ack_lock = threading.Lock()
        self._acknowledged: list[int] = []
        self._acknowledged_since = 0.0
        self._owner = _claim(path)
        try:
            # autocommit mode: transactions are begun and ended explicitly below
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={durability}")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(streams)")}
            if "last_hash" not in columns:
                self._db.execute(_ADD_LAST_HASH)
            heads = self._db.execute("SELECT stream, last_sequence, last_hash FROM streams").fetchall()
            self._last_sequence: dict[str, int] = {stream: sequence for stream, sequence, _ in heads}
            self._last_hash: dict[str, str] = {stream: h for stream, _, h in heads if h is not None}
            count, max_id = self._db.execute("SELECT count(*), coalesce(max(id), 0) FROM outbox").fetchone()
        except sqlite3.Error as exc:
            os.close(self._owner)
            raise OutboxError(f"cannot open the outbox {path}: {exc}") from exc
        self._pending: int = count
        self._next_id: int = max_id + 1
        self._closed = False

    # -- capacity -----------------------------------------------------------------

    def pending(self) -> int:
        """Records appended and not yet acknowledged."""
        return self._pending

    def wait_for_room(self, count: int, *, block: bool, timeout_s: float) -> None:
        """Return when ``count`` more records fit under ``max_pending``, else raise OutboxFull.

        With ``block`` wait up to ``timeout_s`` for acknowledgements to make room.
        """
        if count > self.max_pending:
            raise OutboxFull(f"{count} events can never fit an outbox of max_pending={self.max_pending}")
        if self._pending + count > self.max_pending and self._acknowledged:
            self.apply_acknowledged()  # room the broker made already, its deletion not yet committed
        with self._room:
            if self._pending + count <= self.max_pending:
                return
            if block:
                deadline = time.monotonic() + timeout_s
                while self._pending + count > self.max_pending:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._closed:
                        break
                    self._room.wait(left)
                if self._pending + count <= self.max_pending:
                    return
            raise OutboxFull(
                f"outbox {self.path} holds {self._pending} undelivered events (max_pending="
                f"{self.max_pending}); the broker is not acknowledging fast enough or is unreachable"
                + (f" (waited {timeout_s}s)" if block else "")
            )

    def wait_until_empty(self, timeout_s: float | None) -> int:
        """Wait until every record is acknowledged or ``timeout_s`` passes; return the pending count."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._room:
            while self._pending and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._room.wait(left if left is not None else 1.0)
            return self._pending

    # -- writing ------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[OutboxTransaction]:
        """Stamp sequences and chain hashes and append records; all are committed together or none is.

        The lock is held for the whole transaction, so concurrent publishers get disjoint,
        ordered ids and sequences.
        """
        with self._lock:
            if self._closed:
                raise OutboxError(f"the outbox {self.path} is closed")
            tx = OutboxTransaction(self)
            yield tx
            if not tx.rows:
                return
            heads = tx.heads()
            acked = self._take_acknowledged()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    removed = self._delete(acked)
                    self._db.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?, ?)", tx.rows)
                    if heads:
                        self._db.executemany(
                            "INSERT INTO streams VALUES (?, ?, ?) ON CONFLICT(stream) "
                            "DO UPDATE SET last_sequence = excluded.last_sequence, "
                            "last_hash = excluded.last_hash",
                            heads,
                        )
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # SQLite may have rolled back already (disk full, I/O)
                        self._db.execute("ROLLBACK")
                    raise
            except BaseException as exc:
                with self._ack_lock:
                    self._acknowledged[:0] = acked  # deleted with a later commit
                if isinstance(exc, sqlite3.Error):
                    raise OutboxError(f"cannot append to the outbox {self.path}: {exc}") from exc
                raise
            # only a committed transaction moves the counters
            self._last_sequence.update(tx.stamped)
            last_hash = self._last_hash
            for stream, _, head in heads:
                if head is None:
                    last_hash.pop(stream, None)
                else:
                    last_hash[stream] = head
            self._next_id = tx.rows[-1][0] + 1
            self._pending += len(tx.rows) - removed
            if removed:
                self._room.notify_all()

    def _take_acknowledged(self) -> list[int]:
        with self._ack_lock:
            acked, self._acknowledged = self._acknowledged, []
        return acked

    def _delete(self, ids: list[int]) -> int:
        # acknowledgements come nearly in id order, so a few ranges cover thousands of rows
        if not ids:
            return 0
        ranges = []
        ordered = sorted(ids)
        start = end = ordered[0]
        for i in ordered:
            if i > end + 1:
                ranges.append((start, end))
                start = i
            end = i
        ranges.append((start, end))
        return self._db.executemany("DELETE FROM outbox WHERE id BETWEEN ? AND ?", ranges).rowcount

    def acknowledge(self, ids: Iterable[int]) -> None:
        """Record broker acknowledgements; the rows are deleted with the next commit.

        Cheap enough to call from a delivery callback thread. Until deleted, the records still
        count as pending, and a crash before the commit resends them (duplicates, not loss).
        """
        with self._ack_lock:
            if not self._acknowledged:
                self._acknowledged_since = time.monotonic()
            self._acknowledged.extend(ids)

    def acknowledged_age(self) -> float:
        """Seconds since the oldest acknowledgement not yet applied (0 when there is none)."""
        with self._ack_lock:
            return time.monotonic() - self._acknowledged_since if self._acknowledged else 0.0

    def apply_acknowledged(self) -> int:
        """Delete every acknowledged record now; return how many were pending."""
        return self.mark_delivered(self._take_acknowledged())

    def mark_delivered(self, ids: Sequence[int]) -> int:
        """Forget records the broker acknowledged; return how many were still pending."""
        if not ids:
            return 0
        with self._room:
            if self._closed:
                return 0
            try:
                self._db.execute("BEGIN IMMEDIATE")
                removed = self._delete(list(ids))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise OutboxError(f"cannot mark records delivered in {self.path}: {exc}") from exc
            self._pending -= removed
            self._room.notify_all()
            return removed

    # -- reading ------------------------------------------------------------------

    def undelivered(self, after_id: int = 0, limit: int = 10_000) -> list[OutboxRecord]:
        """Undelivered records with id > ``after_id``, oldest first (publish order)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, key, value, traceparent FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [OutboxRecord(*row) for row in rows]

    def iter_undelivered(self, batch: int = 10_000) -> Iterable[OutboxRecord]:
        """Every undelivered record, oldest first, read in batches."""
        after = 0
        while True:
            rows = self.undelivered(after, batch)
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].id

    def last_sequence(self, stream: str) -> int:
        """The last committed sequence of ``stream`` (0 when it has none)."""
        return self._last_sequence.get(stream, 0)

    def last_hash(self, stream: str) -> str | None:
        """The committed chain hash of ``stream``'s last event (None when unknown or unchained)."""
        return self._last_hash.get(stream)

    def last_id(self) -> int:
        """The id of the newest appended record (0 when none ever was)."""
        return self._next_id - 1

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close it; safe to call twice."""
        with self._room:
            if self._closed:
                return
            self._closed = True
            self._room.notify_all()
            # a checkpoint is an optimisation; the WAL is replayed on the next open anyway
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            os.close(self._owner)  # releases the flock: the next owner may open it


def _claim(path: Path) -> int:
    """Lock ``path`` for this Outbox (a descriptor holding an exclusive flock), else OutboxError.

    The lock is on a separate file: closing any descriptor of the database file itself would
    drop SQLite's own POSIX locks on it.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise OutboxError(f"cannot open the outbox {path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise OutboxError(
            f"the outbox {path} is in use by another publisher (one outbox, one writer at a time)"
        ) from exc
    return fd
