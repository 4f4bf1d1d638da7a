"""Fetching a certified snapshot (hundreds of megabytes for a large model) in chunks, from several members at
once, resumable, and verified against the certified state hash before anything uses it.

How a transfer goes:

- **Chunks from several peers.** The object (named by its SHA-256, the state hash a commit certificate signs) is
  cut into fixed-size chunks (``chunk_bytes``, 4 MiB by default) asked for by range (transport ``fetch_range``,
  swarm/transport/bulk.py). Up to ``in_flight`` chunks are in flight at once, at most ``per_peer`` from one peer (a
  peer serves two fetches at a time; more would be refused as flooding). The first answer gives the object's size.
- **A peer that dies or stalls** costs only its chunks in flight: a chunk not answered within ``chunk_timeout_s``
  (or refused, or failed) goes back to the queue for another peer, and that peer is backed off (0.5 s doubling up
  to 8 s). Nothing restarts. The transfer gives up (keeping what is on disk) only when no chunk has arrived for
  ``stall_s``: the caller retries later, and the retry resumes.
- **Resume from disk.** Chunks are written at their offsets into ``<dir>/<hash>.part``; ``<hash>.json`` records
  the size, the chunk size and, per chunk done, its SHA-256 and the peer that gave it. A node restarted
  mid-transfer loads the record, re-hashes each chunk it lists from the part file (a chunk torn by the crash is
  simply fetched again) and fetches only the rest. No fsync per chunk: the re-hash makes that unnecessary.
- **Verified before use.** Once every chunk is in, the whole is checked against the certified digest (a running
  hash fed as chunks are written in order, else one pass over the file: swarm/node/part_file.py); only bytes that
  hash to it are returned, and the caller still decodes them through ``certified_snapshot``. Nothing partial is
  used.

A peer that sends wrong bytes (the hash of the whole fails) must not make the transfer fail forever, so the bad
chunks and their sender are localised, with the certified hash as the only judge (a majority of peers is not
trusted by itself; it is only the first guess):

1. A second copy of every chunk is fetched from another peer than the one that gave it, and compared by SHA-256.
   Chunks whose copies agree are left as they are; the others are disputed.
2. Every other reachable peer is asked for the disputed chunks, so each has one version per peer.
3. Candidate files are hashed without being written: first the majority version of each disputed chunk, then for
   each peer involved, its version wherever it gave one. The first candidate that hashes to the certified digest is
   written and returned; every peer whose version of a chunk differs from it sent bytes that are not the snapshot,
   and is reported (``on_bad_peer``, the node's local penalty path) and not used again in this transfer.

This costs a second copy of the whole, paid only when the hash fails. It finds the file when each bad chunk can be
had right from at least one peer: a liar beside one honest server or more, or several liars that disagree. Peers that all agree on wrong bytes cannot be told from honest ones; the transfer
then fails (logged), its part file is dropped, and the next attempt starts afresh. Peers that announce different
sizes for the same digest cannot all be right: those that differ from the first answer are left out; if the file
then fails its hash and cannot be repaired, or stalls while more peers announced another size (the first answer
came from a peer that then went quiet), the transfer starts over with the other size (at most once per size), and
whoever announced a size that turns out wrong is reported.

Progress goes to the log (every 10% or ``progress_every_s``) and to ``progress`` (shown in the API's /status).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarm.node.part_file import PartFile

log = logging.getLogger("swarm.node")

DEFAULT_CHUNK_BYTES = 4 << 20
BASE_CHUNK_TIMEOUT_S = 5.0
ASSUMED_BYTES_PER_S = 4 << 20    # as swarm/node/limits.py: a slow link still gets a chunk through in time
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 8.0
TICK_S = 0.1

OnBadPeer = Callable[[str, str], None]   # (peer, what it did)


class TransferStalled(Exception):
    """No chunk arrived for ``stall_s``: the transfer stops, keeping what it has on disk."""


@dataclass
class TransferSettings:
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    in_flight: int = 4                   # chunks requested at once, over all peers
    per_peer: int = 2                    # chunks requested at once from one peer (it serves two fetches at a time)
    chunk_timeout_s: float | None = None  # None: BASE_CHUNK_TIMEOUT_S plus the chunk at ASSUMED_BYTES_PER_S
    stall_s: float = 60.0                # give up, keeping the chunks on disk, when none arrived for this long
    progress_every_s: float = 5.0

    def timeout_s(self) -> float:
        if self.chunk_timeout_s is not None:
            return self.chunk_timeout_s
        return BASE_CHUNK_TIMEOUT_S + self.chunk_bytes / ASSUMED_BYTES_PER_S


@dataclass
class TransferProgress:
    """What /status shows of the transfer under way (or the last one)."""

    label: str
    digest: bytes
    state: str = "starting"              # starting, fetching, verifying, localising, done, failed, stalled
    total: int | None = None
    done_bytes: int = 0
    resumed_bytes: int = 0               # found on disk at the start
    chunks_done: int = 0
    chunks: int = 0
    started: float = field(default_factory=time.time)
    by_peer: Counter = field(default_factory=Counter)   # bytes received from each peer
    reported: list[str] = field(default_factory=list)   # peers found sending wrong bytes

    def view(self) -> dict[str, Any]:
        elapsed = max(time.time() - self.started, 1e-9)
        return {"what": self.label, "hash": self.digest.hex()[:16], "state": self.state, "total": self.total,
                "done_bytes": self.done_bytes, "resumed_bytes": self.resumed_bytes,
                "percent": None if not self.total else round(100 * self.done_bytes / self.total, 1),
                "chunks_done": self.chunks_done, "chunks": self.chunks,
                "mb_per_s": round((self.done_bytes - self.resumed_bytes) / elapsed / 1e6, 2),
                "peers": {peer: n for peer, n in self.by_peer.items()}, "reported": list(self.reported),
                "elapsed_s": round(elapsed, 1)}


@dataclass
class _Peer:
    busy: int = 0
    failures: int = 0
    retry_at: float = 0.0
    excluded: str | None = None    # why it is not used again in this transfer


Handler = Callable[[int, str, int, bytes], Awaitable[None]]   # (chunk index, peer, announced total, bytes)


class SnapshotTransfer:
    """One object fetched in chunks into ``directory``; ``run()`` gives its verified bytes or None."""

    def __init__(self, transport: Any, digest: bytes, max_total: int, directory: Path, label: str = "",
                 settings: TransferSettings | None = None, on_bad_peer: OnBadPeer | None = None):
        self.transport, self.digest, self.max_total = transport, digest, max_total
        self.settings = settings or TransferSettings()
        self.file = PartFile(directory, digest, self.settings.chunk_bytes)
        self.on_bad_peer = on_bad_peer
        self.progress = TransferProgress(label or f"snapshot {digest.hex()[:12]}", digest)
        self.requests: Counter = Counter()        # range requests made, per chunk index
        self._peers: dict[str, _Peer] = {}
        self._claims: dict[str, int] = {}         # the total size each peer announced
        self._failed_totals: set[int] = set()
        self._pending: dict[int, set[str]] = {}   # chunk index -> peers not to ask for it
        self._last_log = (0.0, -1)                # (time, tenth of the total) of the last progress line

    @property
    def answered(self) -> bool:
        """Some peer answered a range request (False: none has the object, or none speaks the ranged protocol)."""
        return bool(self._claims)

    # ------------------------------------------------------------------------------------------- the whole
    async def run(self) -> bytes | None:
        """The object's bytes, verified against its digest, or None (stalled, nobody has it, or it could not be
        put together right; what is on disk stays for the next try unless it proved wrong)."""
        await asyncio.to_thread(self.file.prune_others)
        self.progress.resumed_bytes = self.progress.done_bytes = await asyncio.to_thread(self.file.load)
        if self.file.done:
            log.info("%s: resuming with %d of %d chunks on disk", self.progress.label, len(self.file.done),
                     self.file.chunks)
        while True:
            try:
                data = await self._attempt()
            except TransferStalled as exc:
                if await self._drop_outvoted_size():
                    continue
                self.progress.state = "stalled"
                log.warning("%s: %s; %d of %d chunks kept on disk for the next try", self.progress.label, exc,
                            len(self.file.done), self.file.chunks)
                return None
            if data is not None or not self._another_size():
                return data

    async def _drop_outvoted_size(self) -> bool:
        """Stalled on a size that fewer peers announced than another (the first answer came from a peer that
        then went quiet, say): drop what we have and start over with the other size. Kept otherwise: a retry
        later resumes it."""
        votes = Counter(self._claims.values())
        if self.file.total is None or not votes or votes[self.file.total] >= max(votes.values()):
            return False
        log.warning("%s: stalled on a size of %d bytes that %d peer(s) announced, against %d for another",
                    self.progress.label, self.file.total, votes[self.file.total], max(votes.values()))
        await asyncio.to_thread(self.file.discard)
        return self._another_size()

    async def _attempt(self) -> bytes | None:
        self.progress.state = "fetching"
        if self.file.total is None:
            self._pending = {0: set()}
        else:
            self._note_total()
            self._pending = {i: set() for i in range(self.file.chunks) if i not in self.file.done}
        await self._fetch(self._store_chunk, give_up_unplaced=False)
        self.progress.state = "verifying"
        data = await asyncio.to_thread(self.file.read_verified)
        if data is not None:
            return await self._finish(data)
        log.warning("%s: the assembled %d bytes do not hash to the certified digest: finding the bad chunks",
                    self.progress.label, self.file.total)
        self.progress.state = "localising"
        if await self._localise() and (data := await asyncio.to_thread(self.file.read_verified)) is not None:
            return await self._finish(data)
        self.progress.state = "failed"
        log.error("%s: could not put together bytes that hash to the certified digest; starting afresh next time",
                  self.progress.label)
        await asyncio.to_thread(self.file.discard)
        return None

    def _another_size(self) -> bool:
        """After a failed attempt: start over with a size another peer announced, if one was not tried yet."""
        if self.file.total is not None:
            return False
        failed = self.progress.total
        if failed is not None:
            self._failed_totals.add(failed)
        others = {total for total in self._claims.values()
                  if total not in self._failed_totals and total <= self.max_total}
        if not others:
            return False
        for peer, state in self._peers.items():
            if state.excluded and self._claims.get(peer) in others and peer not in self.progress.reported:
                state.excluded = None   # it announced the size we try now
        self.progress.total, self.progress.done_bytes, self.progress.chunks_done = None, 0, 0
        log.warning("%s: trying again with the size other peers announced", self.progress.label)
        return True

    async def _finish(self, data: bytes) -> bytes:
        self.progress.state = "done"
        liars = [peer for peer, total in self._claims.items() if total != self.file.total]
        for peer in liars:
            self._report(peer, f"announced {self._claims[peer]} bytes for a {self.file.total}-byte snapshot")
        await asyncio.to_thread(self.file.discard)
        elapsed = time.time() - self.progress.started
        log.info("%s: %d bytes fetched and verified in %.1f s (%d resumed from disk) from %d peer(s)",
                 self.progress.label, len(data), elapsed, self.progress.resumed_bytes, len(self.progress.by_peer))
        return data

    # ------------------------------------------------------------------------------------------- chunks
    async def _store_chunk(self, index: int, peer: str, total: int, data: bytes) -> None:
        if self.file.total is None:
            await asyncio.to_thread(self.file.start, total)
            self._note_total()
            self._pending.update({i: set() for i in range(1, self.file.chunks)})
        await asyncio.to_thread(self.file.write, index, data, peer)
        self.progress.chunks_done = len(self.file.done)
        self.progress.done_bytes += len(data)
        self.progress.by_peer[peer] += len(data)
        self._log_progress()

    def _note_total(self) -> None:
        self.progress.total, self.progress.chunks = self.file.total, self.file.chunks
        self.progress.chunks_done = len(self.file.done)

    def _log_progress(self) -> None:
        total = self.progress.total or 1
        tenth = 10 * self.progress.done_bytes // total
        now = time.monotonic()
        last_at, last_tenth = self._last_log
        if tenth == last_tenth and now - last_at < self.settings.progress_every_s:
            return
        self._last_log = (now, tenth)
        view = self.progress.view()
        log.info("%s: %.0f%% (%.1f of %.1f MB, %d of %d chunks) from %d peer(s), %.1f MB/s", self.progress.label,
                 view["percent"] or 0, self.progress.done_bytes / 1e6, total / 1e6, self.progress.chunks_done,
                 self.progress.chunks, len(self.progress.by_peer), view["mb_per_s"])

    async def _fetch(self, handle: Handler, give_up_unplaced: bool) -> set[int]:
        """Fetch every chunk in ``self._pending`` (index -> peers not to ask), several at once, handing each
        answer to ``handle``. A chunk that fails goes back to the queue; with ``give_up_unplaced`` the peer that
        failed it is not asked for it again, and a chunk no peer is left for is given up (returned). Raises
        TransferStalled when nothing arrived for ``stall_s``."""
        unplaced: set[int] = set()
        tasks: dict[asyncio.Task, tuple[int, str]] = {}
        last_progress = time.monotonic()
        try:
            while self._pending or tasks:
                now = time.monotonic()
                for index in sorted(self._pending):
                    if len(tasks) >= self.settings.in_flight:
                        break
                    avoid = self._pending[index]
                    peer = self._pick(avoid, now)
                    if peer is None:
                        if give_up_unplaced and not self._anyone_left(avoid):
                            unplaced.add(index)
                            del self._pending[index]
                        continue
                    del self._pending[index]
                    self._peers[peer].busy += 1
                    task = asyncio.create_task(self._ask(peer, index))
                    tasks[task] = (index, peer)
                if not tasks:
                    if not self._pending:
                        break
                    if now - last_progress > self.settings.stall_s:
                        raise TransferStalled(f"no chunk arrived for {self.settings.stall_s:g} s")
                    await asyncio.sleep(TICK_S)
                    continue
                done, _ = await asyncio.wait(tasks, timeout=TICK_S, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    index, peer = tasks.pop(task)
                    state = self._peers[peer]
                    state.busy -= 1
                    answer = task.result()
                    if answer is not None and self._accept(peer, index, answer[0]):
                        state.failures = 0
                        last_progress = time.monotonic()
                        await handle(index, peer, *answer)
                    else:
                        state.failures += 1
                        state.retry_at = time.monotonic() + min(BACKOFF_FIRST_S * 2 ** (state.failures - 1),
                                                                BACKOFF_MAX_S)
                        self._pending[index] = self._pending.get(index, set()) | ({peer} if give_up_unplaced
                                                                                   else set())
                if time.monotonic() - last_progress > self.settings.stall_s:
                    raise TransferStalled(f"no chunk arrived for {self.settings.stall_s:g} s")
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for _index, peer in tasks.values():
                self._peers[peer].busy -= 1
        return unplaced

    async def _ask(self, peer: str, index: int) -> tuple[int, bytes] | None:
        if self.file.total is None:
            offset, length = 0, self.settings.chunk_bytes
        else:
            offset, length = self.file.span(index)
        self.requests[index] += 1
        try:
            async with asyncio.timeout(self.settings.timeout_s()):
                return await self.transport.fetch_range(peer, self.digest, offset, length)
        except TimeoutError:
            log.info("%s: chunk %d from %s timed out after %.1f s; asking another peer", self.progress.label,
                     index, peer[:12], self.settings.timeout_s())
        except Exception as exc:  # noqa: BLE001 - one failed chunk is just asked of someone else
            log.info("%s: chunk %d from %s failed: %r", self.progress.label, index, peer[:12], exc)
        return None

    def _accept(self, peer: str, index: int, total: int) -> bool:
        """An answer's announced size must be the one this attempt goes by (the first answer's) and within the
        limit; a peer that announces another is left out of this attempt."""
        self._claims.setdefault(peer, total)
        if total > self.max_total:
            self._exclude(peer, f"announced {total} bytes, over the {self.max_total}-byte limit")
            self._report(peer, f"announced a snapshot of {total} bytes, over the limit")
            return False
        if total in self._failed_totals or (self.file.total is not None and total != self.file.total):
            self._exclude(peer, f"announced {total} bytes where others announced {self.file.total}")
            return False
        return self.file.total is not None or index == 0

    def _pick(self, avoid: set[str], now: float) -> str | None:
        """The connected peer, not excluded or avoided, with a free slot and no back-off, that is least busy."""
        best = None
        for peer, info in self.transport.peers().items():
            if not info.connected or peer in avoid:
                continue
            state = self._peers.setdefault(peer, _Peer())
            if state.excluded or state.busy >= self.settings.per_peer or state.retry_at > now:
                continue
            if best is None or (state.busy, state.failures) < (self._peers[best].busy, self._peers[best].failures):
                best = peer
        return best

    def _anyone_left(self, avoid: set[str]) -> bool:
        return any(info.connected and peer not in avoid and not self._peers.setdefault(peer, _Peer()).excluded
                   for peer, info in self.transport.peers().items())

    def _exclude(self, peer: str, why: str) -> None:
        state = self._peers.setdefault(peer, _Peer())
        if state.excluded is None:
            state.excluded = why
            log.warning("%s: leaving %s out: %s", self.progress.label, peer[:12], why)

    def _report(self, peer: str, what: str) -> None:
        self._exclude(peer, what)
        if peer in self.progress.reported:
            return
        self.progress.reported.append(peer)
        log.warning("%s: %s sent bytes that are not the certified snapshot: %s", self.progress.label, peer[:12], what)
        if self.on_bad_peer is not None:
            try:
                self.on_bad_peer(peer, what)
            except Exception:  # a failing report must not lose the transfer
                log.exception("reporting %s failed", peer[:12])

    # ------------------------------------------------------------------------------------------- bad chunks
    async def _localise(self) -> bool:
        """Find the chunks that make the hash fail and the peers that sent them (see the module docstring); True
        when the file now hashes right (fixed on disk)."""
        versions: dict[int, dict[str, tuple[set[str], bytes | None]]] = {
            index: {sha: ({provider}, None)} for index, (sha, provider) in self.file.done.items()}
        asked = {index: {provider} for index, (_sha, provider) in self.file.done.items()}

        async def keep_copy(index: int, peer: str, _total: int, data: bytes) -> None:
            sha = hashlib.sha256(data).hexdigest()
            holders, kept = versions[index].get(sha, (set(), None))
            versions[index][sha] = (holders | {peer}, kept if kept is not None or sha == self.file.done[index][0]
                                    else data)
            asked[index].add(peer)

        self._pending = {index: set(peers) for index, peers in asked.items()}       # a second copy of each chunk
        await self._fetch(keep_copy, give_up_unplaced=True)
        while True:                                                                  # every peer's copy of a dispute
            self._pending = {index: set(asked[index]) for index in versions if len(versions[index]) > 1
                             and self._anyone_left(asked[index])}
            if not self._pending:
                break
            before = sum(len(peers) for peers in asked.values())
            await self._fetch(keep_copy, give_up_unplaced=True)
            if sum(len(peers) for peers in asked.values()) == before:
                break
        disputed = {index: found for index, found in versions.items() if len(found) > 1}
        if not disputed:
            log.warning("%s: every peer asked agrees on every chunk, yet the whole does not hash right",
                        self.progress.label)
            return False
        log.warning("%s: %d chunk(s) disputed between peers: %s", self.progress.label, len(disputed),
                    sorted(disputed)[:20])
        for choice in self._candidates(disputed):
            substitutes = {index: disputed[index][sha][1] for index, sha in choice.items()
                           if sha != self.file.done[index][0]}
            if await asyncio.to_thread(self.file.digest_with, substitutes) != self.digest:
                continue
            for index, data in substitutes.items():
                provider = min(disputed[index][choice[index]][0])
                await asyncio.to_thread(self.file.write, index, data, provider)
            for index, sha in sorted(choice.items()):
                for other, (holders, _data) in disputed[index].items():
                    if other != sha:
                        for peer in sorted(holders):
                            self._report(peer, f"chunk {index} of the snapshot differs from the certified bytes")
            return True
        return False

    @staticmethod
    def _candidates(disputed: dict[int, dict[str, tuple[set[str], bytes | None]]]) -> list[dict[int, str]]:
        """Which version of each disputed chunk to try: the majority's first, then each peer's own."""
        majority = {index: max(found, key=lambda sha: (len(found[sha][0]), sha)) for index, found in disputed.items()}
        candidates = [majority]
        peers = sorted({peer for found in disputed.values() for holders, _ in found.values() for peer in holders})
        for peer in peers:
            trusting = dict(majority)
            for index, found in disputed.items():
                for sha, (holders, _data) in found.items():
                    if peer in holders:
                        trusting[index] = sha
            if trusting not in candidates:
                candidates.append(trusting)
        return candidates
