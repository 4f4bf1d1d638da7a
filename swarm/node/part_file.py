"""A file being fetched in chunks (swarm/node/snapshot_transfer.py): the bytes at their offsets in
``<hash>.part`` and a record in ``<hash>.json`` of the size, the chunk size and, per chunk done, its SHA-256 and the
peer that gave it, so that a node restarted mid-transfer resumes. Nothing is fsynced: a resume re-hashes every chunk
the record lists and fetches again any that a crash tore."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

KEEP_OTHER_PARTIALS = 2   # part files of other objects kept (a node may alternate between two snapshots to fetch)


class PartFile:
    """The chunks of one object fetched so far: ``<hash>.part`` (bytes at their offsets) and ``<hash>.json``
    (size, chunk size, and per chunk done its SHA-256 and provider). Blocking I/O: call it from a worker thread."""

    def __init__(self, directory: Path, digest: bytes, chunk_bytes: int):
        self.directory, self.digest, self.chunk_bytes = Path(directory), digest, chunk_bytes
        self.data_path = self.directory / f"{digest.hex()}.part"
        self.record_path = self.directory / f"{digest.hex()}.json"
        self.total: int | None = None
        self.done: dict[int, tuple[str, str]] = {}   # index -> (sha256 hex of the chunk, provider peer)
        # The SHA-256 of the chunks 0 .. prefix-1, fed as they are written in order (chunks mostly arrive so), so
        # the whole need not be read and hashed again at the end; None once a chunk in it was rewritten.
        self._running: hashlib._Hash | None = hashlib.sha256()
        self._prefix = 0

    @property
    def chunks(self) -> int:
        return 0 if self.total is None else -(-self.total // self.chunk_bytes)

    def span(self, index: int) -> tuple[int, int]:
        assert self.total is not None
        offset = index * self.chunk_bytes
        return offset, min(self.chunk_bytes, self.total - offset)

    def load(self) -> int:
        """Resume what an earlier run left: the bytes of the chunks on disk that still hash right (0 if none)."""
        try:
            record = json.loads(self.record_path.read_text())
            total, chunk_bytes, done = int(record["total"]), int(record["chunk_bytes"]), record["done"]
        except (OSError, ValueError, KeyError, TypeError):
            return 0
        if chunk_bytes != self.chunk_bytes or total <= 0 or not self.data_path.exists():
            return 0  # another chunk size (a changed setting): start afresh
        self.total, kept = total, 0
        listed: dict[int, tuple[str, str]] = {}
        for key, entry in done.items():
            try:
                (sha, provider), index = entry, int(key)
            except (ValueError, TypeError):
                continue
            if 0 <= index < self.chunks:
                listed[index] = (str(sha), str(provider))
        with open(self.data_path, "rb") as handle:
            for index, (sha, provider) in sorted(listed.items()):
                offset, length = self.span(index)
                handle.seek(offset)
                data = handle.read(length)
                if len(data) == length and hashlib.sha256(data).hexdigest() == sha:
                    self.done[index] = (sha, provider)
                    kept += length
                    self._feed(index, data)
        return kept

    def start(self, total: int) -> None:
        """A fresh file of ``total`` bytes (sparse: chunks fill it in any order)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.total, self.done = total, {}
        self._running, self._prefix = hashlib.sha256(), 0
        with open(self.data_path, "wb") as handle:
            handle.truncate(total)
        self._save_record()

    def write(self, index: int, data: bytes, provider: str) -> None:
        offset, length = self.span(index)
        assert len(data) == length
        fd = os.open(self.data_path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
        self.done[index] = (hashlib.sha256(data).hexdigest(), provider)
        self._save_record()
        if index < self._prefix:
            self._running = None  # a chunk already hashed was replaced: the end hashes the whole again
        self._feed(index, data)
        while self._running is not None and self._prefix in self.done:
            self._running.update(self.read(self._prefix))
            self._prefix += 1

    def _feed(self, index: int, data: bytes) -> None:
        if self._running is not None and index == self._prefix:
            self._running.update(data)
            self._prefix += 1

    def read(self, index: int) -> bytes:
        offset, length = self.span(index)
        with open(self.data_path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    def digest_with(self, substitutes: dict[int, bytes]) -> bytes:
        """SHA-256 of the file with some chunks replaced (nothing written)."""
        hasher = hashlib.sha256()
        with open(self.data_path, "rb") as handle:
            for index in range(self.chunks):
                hasher.update(substitutes[index] if index in substitutes else handle.read(self.span(index)[1]))
                if index in substitutes:
                    handle.seek(self.span(index)[1], os.SEEK_CUR)
        return hasher.digest()

    def read_verified(self) -> bytes | None:
        """The whole file if it hashes to the digest, else None: one read, and no hashing when every chunk went
        through the running hash in order."""
        data = self.data_path.read_bytes()
        if self._running is not None and self._prefix == self.chunks:
            got = self._running.copy().digest()
        else:
            got = hashlib.sha256(data).digest()
        return data if got == self.digest else None

    def discard(self) -> None:
        for path in (self.data_path, self.record_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.total, self.done = None, {}
        self._running, self._prefix = hashlib.sha256(), 0

    def prune_others(self, keep: int = KEEP_OTHER_PARTIALS) -> None:
        """Drop part files of other objects but the ``keep`` most recently touched."""
        if not self.directory.exists():
            return
        others = []
        for path in self.directory.glob("*.part"):
            with contextlib.suppress(OSError):
                if path != self.data_path:
                    others.append((path.stat().st_mtime, path))
        for _mtime, path in sorted(others, reverse=True)[keep:]:
            for stale in (path, path.with_suffix(".json")):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()

    def _save_record(self) -> None:
        record = {"digest": self.digest.hex(), "total": self.total, "chunk_bytes": self.chunk_bytes,
                  "done": {str(i): [sha, peer] for i, (sha, peer) in sorted(self.done.items())}}
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.record_path)
