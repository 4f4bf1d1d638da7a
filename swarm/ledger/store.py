"""The node's durable store: SQLite in WAL mode, snapshot files named by state hash, payload files by digest.

Holds the committed chain (entry, commit certificate, state hash per round), the consensus core's persisted values
(term, vote, lock: stored as crypto.wire bytes under a key), the gradient envelopes that committed entries name (so
a store can be replayed and audited offline), the digests of committed equivocation evidence, and local peer scores.
Every SQLite write is one transaction: a node killed at any instant finds either the old or the new value, never
half. The consensus values are fsynced before the core's next message goes out (``synchronous=FULL``, DESIGN.md: a
vote or lock lost to a power cut could make an honest node equivocate). A committed chain row may be appended
without its own fsync (``append(durable=False)``): the store remembers it, and ``sync()``, which the node calls
before every message it sends to a peer (consensus messages, gradient pushes, its current state), makes it durable
unless a durable write since has already done so. So no peer ever hears of a round that a power cut could take back;
until then the row can be lost only as if the node had stopped just before the commit. A commit is usually followed
by a vote for the next round, so one fsync serves both, and none is left on the commit's path. Payload rows and
local scores are never fsynced on their own (``NORMAL``: a kill -9 still never loses them, the WAL is in the OS's
hands, and the next fsync covers them). Snapshots are written to a temporary file, fsynced and renamed into place.

Gradient envelopes (megabytes per round) are files under ``payloads/`` named by their SHA-256, renamed into place
but not fsynced: they are content-addressed and every peer holds them, so a copy lost or torn by a power cut
fails its digest check and is fetched again, exactly like a damaged one. Keeping them out of SQLite spares the
WAL a double write and an fsync of every payload, the largest cost of a round's bookkeeping. They are written
before the database lock is taken, so megabytes of file writes never hold up a vote waiting to be persisted.
"""
from __future__ import annotations

import functools
import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from crypto import wire

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS chain (
    round INTEGER PRIMARY KEY, term INTEGER NOT NULL, digest BLOB NOT NULL, entry BLOB NOT NULL,
    certificate BLOB NOT NULL, state_hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS payloads (digest BLOB PRIMARY KEY, round INTEGER NOT NULL, sender TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS payloads_round ON payloads(round);
CREATE TABLE IF NOT EXISTS local_scores (
    peer TEXT PRIMARY KEY, score REAL NOT NULL, rejected INTEGER NOT NULL, last_reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (round INTEGER PRIMARY KEY, state_hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS committed_evidence (digest BLOB PRIMARY KEY, round INTEGER NOT NULL);
"""
LEGACY_EVIDENCE_KEY = "evidence_digests"  # stores before session 6 kept committed evidence digests as one meta list


@dataclass(frozen=True)
class ChainRow:
    round: int
    term: int
    digest: bytes
    entry: Any          # plain value (crypto.wire) of the entry
    certificate: Any    # plain value of the commit certificate
    state_hash: bytes



def payload_file(data_dir: Path, digest: bytes) -> Path:
    """Where a node's data dir keeps the gradient envelope with this SHA-256 (also for tools reading a live store)."""
    name = digest.hex()
    return Path(data_dir) / "payloads" / name[:2] / name


class StoreError(RuntimeError):
    """The store refused a write that would break an invariant (e.g. overwrite a committed round), or any write
    when it was opened read-only."""


def _writes(method):
    """Marks a method that changes the store (its database or its files): refused on a read-only store."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if self.read_only:
            raise StoreError(f"the store in {self.dir} is open read-only; {method.__name__} would write to it")
        return method(self, *args, **kwargs)
    return guarded


class Store:
    """``read_only=True``: for tools that inspect a store (``swarm verify``); opens an existing database with
    SQLite's ``mode=ro``, creates no folder or table, and refuses every write with a StoreError."""

    def __init__(self, data_dir: str | Path, read_only: bool = False):
        self.dir = Path(data_dir)
        self.read_only = read_only
        self._lock = threading.Lock()
        self._chain_unsynced = False  # a chain row is committed to the WAL but not yet fsynced
        if read_only:
            self._db = _connect_read_only(self.dir / "node.sqlite")
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "snapshots").mkdir(exist_ok=True)
        (self.dir / "payloads").mkdir(exist_ok=True)
        self._db = sqlite3.connect(self.dir / "node.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._migrate_evidence()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---------------------------------------------------------------- consensus values (term, vote, lock)
    @contextmanager
    def _transaction(self, durable: bool):
        """One transaction under the lock; ``durable``: fsynced at commit (see the module docstring)."""
        with self._lock:
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")  # explicit: the connection autocommits each statement otherwise
                try:
                    yield
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                if durable:  # the WAL's fsync covers every transaction committed before this one
                    self._chain_unsynced = False
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")

    @_writes
    def put_meta(self, key: str, value: Any, durable: bool = True) -> None:
        with self._transaction(durable):
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, wire.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else wire.loads(row[0])

    # ---------------------------------------------------------------- committed chain
    @_writes
    def append(self, row: ChainRow, gradients: list[tuple[bytes, int, str, bytes]] = (), durable: bool = True) -> None:
        """Persist a committed round (and any gradient envelopes given); never overwrites or skips a round.
        ``durable=False``: committed but not fsynced until the next durable write or ``sync()``."""
        _write_payload_files(self.dir, gradients)
        with self._transaction(durable):
            existing = self._db.execute("SELECT digest FROM chain WHERE round = ?", (row.round,)).fetchone()
            if existing is not None:
                if existing[0] != row.digest:
                    raise StoreError(f"round {row.round} is already committed with another digest")
                return
            top = self._db.execute("SELECT MAX(round) FROM chain").fetchone()[0]
            if top is not None and row.round != top + 1:
                raise StoreError(f"round {row.round} does not follow committed round {top}")
            self._insert_payload_rows(gradients)
            self._db.execute("INSERT INTO chain VALUES (?, ?, ?, ?, ?, ?)",
                             (row.round, row.term, row.digest, wire.dumps(row.entry), wire.dumps(row.certificate),
                              row.state_hash))
            if not durable:
                self._chain_unsynced = True

    def sync(self) -> bool:
        """Fsync the chain rows appended with ``durable=False`` that no durable write has covered yet; True if
        it had to. Cheap when there are none, so callers call it before every message that may depend on them."""
        if not self._chain_unsynced:  # only append sets it, so a caller that appends on this thread reads it right
            return False
        with self._lock:
            if not self._chain_unsynced:
                return False
            top = self._db.execute("SELECT MAX(round) FROM chain").fetchone()[0]
        self.put_meta("chain_synced_through", top)
        return True

    @_writes
    def add_gradients(self, gradients: list[tuple[bytes, int, str, bytes]]) -> None:
        """Keep the envelopes (digest, round, sender, raw) a committed entry names, for replay and audit. The
        caller has checked each against its digest, so a damaged copy already stored is replaced."""
        _write_payload_files(self.dir, gradients)
        with self._transaction(durable=False):
            self._insert_payload_rows(gradients)

    def _insert_payload_rows(self, gradients) -> None:
        """Rows for payload files already in place (inside the caller's transaction)."""
        self._db.executemany("INSERT OR REPLACE INTO payloads(digest, round, sender) VALUES (?, ?, ?)",
                             [(digest, round_, sender) for digest, round_, sender, _raw in gradients])

    def payload_path(self, digest: bytes) -> Path:
        return payload_file(self.dir, digest)

    def last_round(self) -> int:
        with self._lock:
            top = self._db.execute("SELECT MAX(round) FROM chain").fetchone()[0]
        return 0 if top is None else top

    def first_round(self) -> int:
        with self._lock:
            low = self._db.execute("SELECT MIN(round) FROM chain").fetchone()[0]
        return 0 if low is None else low

    def rows(self, start: int = 1, limit: int = 1 << 30) -> Iterator[ChainRow]:
        with self._lock:
            fetched = self._db.execute("SELECT * FROM chain WHERE round >= ? ORDER BY round LIMIT ?",
                                       (start, limit)).fetchall()
        for round_, term, digest, entry, cert, state_hash in fetched:
            yield ChainRow(round_, term, digest, wire.loads(entry), wire.loads(cert), state_hash)

    def row(self, round_: int) -> ChainRow | None:
        return next(self.rows(round_, 1), None) if round_ >= 1 else None

    def gradient_envelope(self, digest: bytes) -> bytes | None:
        """The stored envelope with this digest, or None; callers check the bytes against the digest."""
        try:
            return self.payload_path(digest).read_bytes()
        except OSError:
            return None

    def gradient_senders(self, digests: list[bytes]) -> list[str]:
        """Who sent the stored gradients with these digests (the sender recorded when the entry was adopted)."""
        with self._lock:
            return [row[0] for digest in digests
                    for row in self._db.execute("SELECT sender FROM payloads WHERE digest = ?", (digest,))]

    # ---------------------------------------------------------------- snapshots
    @_writes
    def save_snapshot(self, round_: int, state_hash: bytes, data: bytes) -> Path:
        path = self.snapshot_path(state_hash)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        with self._transaction(durable=True):
            self._db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?)", (round_, state_hash))
        return path

    def snapshot_path(self, state_hash: bytes) -> Path:
        return self.dir / "snapshots" / f"{state_hash.hex()}.state"

    def snapshots(self) -> list[tuple[int, bytes]]:
        """(round, state hash) of every snapshot recorded, newest first; a file may have been pruned since."""
        with self._lock:
            return self._db.execute("SELECT round, state_hash FROM snapshots ORDER BY round DESC").fetchall()

    def latest_snapshot(self) -> tuple[int, bytes, bytes] | None:
        """(round, state hash, bytes) of the newest snapshot whose file is intact on disk."""
        for round_, state_hash in self.snapshots():
            path = self.snapshot_path(state_hash)
            if path.exists():
                return round_, state_hash, path.read_bytes()
        return None

    # ---------------------------------------------------------------- retention
    @_writes
    def prune(self, keep_snapshots: int, keep_payload_rounds: int) -> tuple[int, int]:
        """Delete all but the newest ``keep_snapshots`` snapshots, and the payload files of rounds more than
        ``keep_payload_rounds`` behind the chain's head, except those a restart replays after the newest snapshot
        (0: keep all of that kind). Rows of the chain and of payload senders stay (small; the API reads them);
        a peer that needs a pruned payload resyncs from a certified snapshot. Returns (snapshots, payload files)
        removed."""
        snapshots_removed = payloads_removed = 0
        snapshots = self.snapshots()
        if keep_snapshots and len(snapshots) > keep_snapshots:
            for round_, state_hash in snapshots[keep_snapshots:]:
                self.snapshot_path(state_hash).unlink(missing_ok=True)
                with self._transaction(durable=False):  # a row whose file is gone is skipped by latest_snapshot
                    self._db.execute("DELETE FROM snapshots WHERE round = ?", (round_,))
                snapshots_removed += 1
        if keep_payload_rounds and snapshots:
            cutoff = min(self.last_round() - keep_payload_rounds, snapshots[0][0])
            done = self.get_meta("payloads_pruned_through", 0)
            if cutoff > done:
                with self._lock:
                    digests = [d for (d,) in self._db.execute(
                        "SELECT digest FROM payloads WHERE round > ? AND round <= ?", (done, cutoff))]
                for digest in digests:
                    try:
                        self.payload_path(digest).unlink()
                        payloads_removed += 1
                    except FileNotFoundError:
                        pass
                self.put_meta("payloads_pruned_through", cutoff, durable=False)
        return snapshots_removed, payloads_removed

    # ---------------------------------------------------------------- committed equivocation evidence
    @_writes
    def add_committed_evidence(self, digests: list[bytes], round_: int) -> None:
        """Digests of evidence a committed entry carried: fsynced, since a node that forgot them could propose a
        piece again after a restart and convict its member twice for one offence."""
        with self._transaction(durable=True):
            self._db.executemany("INSERT OR IGNORE INTO committed_evidence VALUES (?, ?)",
                                 [(bytes(d), round_) for d in digests])

    def evidence_committed(self, digest: bytes) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM committed_evidence WHERE digest = ?", (digest,)).fetchone()
        return row is not None

    @_writes
    def _migrate_evidence(self) -> None:
        legacy = self.get_meta(LEGACY_EVIDENCE_KEY)
        if legacy:
            with self._transaction(durable=True):
                self._db.executemany("INSERT OR IGNORE INTO committed_evidence VALUES (?, 0)",
                                     [(bytes(d),) for d in legacy])
                self._db.execute("DELETE FROM meta WHERE key = ?", (LEGACY_EVIDENCE_KEY,))

    # ---------------------------------------------------------------- local peer scores
    @_writes
    def put_local_score(self, peer: str, score: float, rejected: int, last_reason: str) -> None:
        with self._transaction(durable=False):  # local and advisory
            self._db.execute("INSERT OR REPLACE INTO local_scores VALUES (?, ?, ?, ?)",
                             (peer, score, rejected, last_reason))

    def local_scores(self) -> dict[str, tuple[float, int, str]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM local_scores").fetchall()
        return {peer: (score, rejected, reason) for peer, score, rejected, reason in rows}


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write; FileNotFoundError rather than SQLite creating an empty database.

    SQLite's ``mode=ro`` alone still creates a WAL database's -wal and -shm files beside it. A store closed cleanly
    has neither (its WAL was checkpointed into the file), so it is opened ``immutable``: the file alone, nothing
    created. Where the -wal file is there (a node running, or killed), committed rows may live only in it, so the
    connection reads through it; its -shm is there too, so again nothing new appears."""
    if not path.is_file():
        raise FileNotFoundError(f"no node store ({path.name}) in {path.parent}")
    wal_present = path.with_name(path.name + "-wal").exists()
    options = "mode=ro" if wal_present else "mode=ro&immutable=1"
    return sqlite3.connect(f"{path.resolve().as_uri()}?{options}", uri=True, check_same_thread=False)


def _write_payload_files(data_dir: Path, gradients) -> None:
    """Payload files, before their rows: a file without a row is harmless (content-addressed), the reverse is not."""
    for digest, _round, _sender, raw in gradients:
        path = payload_file(data_dir, digest)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(f".{threading.get_native_id()}.tmp")  # two threads may write the same payload
        tmp.write_bytes(raw)
        os.replace(tmp, path)  # a damaged copy already there is replaced whole
