"""The node's durable store: SQLite in WAL mode, snapshot files named by state hash, payload files by digest.

Holds the committed chain (entry, commit certificate, state hash per round), the consensus core's persisted
values (term, vote, lock: stored as crypto.wire bytes under a key), the gradient envelopes that committed entries
name (so a store can be replayed and audited offline), and local peer scores. Every SQLite write is one
transaction with ``synchronous=FULL``: a node killed at any instant finds either the old or the new value, never
half. Snapshots are written to a temporary file, fsynced and renamed into place.

Gradient envelopes (megabytes per round) are files under ``payloads/`` named by their SHA-256, renamed into place
but not fsynced: they are content-addressed and every peer holds them, so a copy lost or torn by a power cut
fails its digest check and is fetched again, exactly like a damaged one. Keeping them out of SQLite spares the
WAL a double write and an fsync of every payload, the largest cost of a round's bookkeeping.
"""
from __future__ import annotations

import os
import sqlite3
import threading
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
"""


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
    """The store refused a write that would break an invariant (e.g. overwrite a committed round)."""


class Store:
    def __init__(self, data_dir: str | Path):
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "snapshots").mkdir(exist_ok=True)
        (self.dir / "payloads").mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.dir / "node.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---------------------------------------------------------------- consensus values (term, vote, lock)
    def put_meta(self, key: str, value: Any) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, wire.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else wire.loads(row[0])

    # ---------------------------------------------------------------- committed chain
    def append(self, row: ChainRow, gradients: list[tuple[bytes, int, str, bytes]] = ()) -> None:
        """Persist a committed round (and any gradient envelopes given); never overwrites or skips a round."""
        with self._lock, self._db:
            existing = self._db.execute("SELECT digest FROM chain WHERE round = ?", (row.round,)).fetchone()
            if existing is not None:
                if existing[0] != row.digest:
                    raise StoreError(f"round {row.round} is already committed with another digest")
                return
            top = self._db.execute("SELECT MAX(round) FROM chain").fetchone()[0]
            if top is not None and row.round != top + 1:
                raise StoreError(f"round {row.round} does not follow committed round {top}")
            self._write_payloads(gradients)
            self._db.execute("INSERT INTO chain VALUES (?, ?, ?, ?, ?, ?)",
                             (row.round, row.term, row.digest, wire.dumps(row.entry), wire.dumps(row.certificate),
                              row.state_hash))

    def add_gradients(self, gradients: list[tuple[bytes, int, str, bytes]]) -> None:
        """Keep the envelopes (digest, round, sender, raw) a committed entry names, for replay and audit. The
        caller has checked each against its digest, so a damaged copy already stored is replaced."""
        with self._lock, self._db:
            self._write_payloads(gradients)

    def _write_payloads(self, gradients) -> None:
        """Files first, then their rows (inside the caller's transaction)."""
        for digest, _round, _sender, raw in gradients:
            path = self.payload_path(digest)
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(raw)
            os.replace(tmp, path)  # a damaged copy already there is replaced whole
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

    def gradient(self, digest: bytes) -> bytes | None:
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
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?)", (round_, state_hash))
        return path

    def snapshot_path(self, state_hash: bytes) -> Path:
        return self.dir / "snapshots" / f"{state_hash.hex()}.state"

    def latest_snapshot(self) -> tuple[int, bytes, bytes] | None:
        """(round, state hash, bytes) of the newest snapshot whose file is intact on disk."""
        with self._lock:
            rows = self._db.execute("SELECT round, state_hash FROM snapshots ORDER BY round DESC").fetchall()
        for round_, state_hash in rows:
            path = self.snapshot_path(state_hash)
            if path.exists():
                return round_, state_hash, path.read_bytes()
        return None

    # ---------------------------------------------------------------- local peer scores
    def put_local_score(self, peer: str, score: float, rejected: int, last_reason: str) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO local_scores VALUES (?, ?, ?, ?)",
                             (peer, score, rejected, last_reason))

    def local_scores(self) -> dict[str, tuple[float, int, str]]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM local_scores").fetchall()
        return {peer: (score, rejected, reason) for peer, score, rejected, reason in rows}
