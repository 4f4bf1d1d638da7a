"""Fetching a payload (a gradient envelope or a certified snapshot) by its digest from whichever peer has it."""
from __future__ import annotations

import asyncio
import logging
import time

from swarm.round.gradient import digest_of
from swarm.transport.base import Transport

log = logging.getLogger("swarm.node")

FETCH_TIMEOUT_S = 5.0
RETRY_S = 0.25


async def fetch_by_digest(transport: Transport, digest: bytes, leader: str | None,
                          timeout_s: float = FETCH_TIMEOUT_S) -> bytes | None:
    """Ask every connected peer in turn (the leader first) until one gives bytes that hash to ``digest``,
    retrying for up to ``timeout_s``: right after a restart the node may not be connected yet. None when nobody
    could; a peer that fails, times out or sends other bytes is just one of several."""
    deadline = time.monotonic() + timeout_s
    while True:
        peers = [p for p, info in transport.peers().items() if info.connected]
        peers.sort(key=lambda p: p != leader)
        for peer in peers:
            try:
                async with asyncio.timeout(timeout_s):  # not wait_for: it can swallow a cancellation on 3.11
                    raw = await transport.fetch(peer, digest)
            except Exception as exc:
                log.debug("fetch %s from %s failed: %s", digest.hex()[:12], peer[:12], exc)
                continue
            if raw is not None and digest_of(raw) == digest:
                return raw
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(RETRY_S)
