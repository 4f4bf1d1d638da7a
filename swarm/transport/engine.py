"""The trio side of the transport: the libp2p host, its stream handlers, and one supervisor per genesis member.

Everything here runs in the transport's trio thread. The supervisor of a member keeps it connected (dial with
exponential back-off, redial after drops), owns the single outbound control stream to it, and runs a watchdog
on the member's heartbeats, because libp2p never reports a frozen peer. Results go to the asyncio side only
through the ``Sink`` hooks, which must be cheap and thread-safe. Pushes and fetches of payloads, both ways, are
in swarm/transport/payload_streams.py (a mixin of the engine).
"""
from __future__ import annotations

import logging
import random
import time
from typing import Any, Awaitable, Callable, Protocol

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import INotifee
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo as LibP2PPeerInfo

from crypto.keys import NodeKey
from swarm.config import TransportConfig
from swarm.transport import bulk, fastpath
from swarm.transport.control import OutboundQueue, Writer
from swarm.transport.framing import KIND_DATA, KIND_HELLO, ControlReader, FrameError, StreamClosed, encode_control
from swarm.transport.members import Member, split_p2p
from swarm.transport.payload_streams import PayloadStreams, clip
from swarm.transport.reasons import (BAD_FETCH_ANSWER, BANNED, FLOODING, MALFORMED_FRAME,  # noqa: F401
                                     NOT_A_MEMBER, STREAM_FROM_NON_MEMBER)
from swarm.transport.security import disable_reuseport, libp2p_key_pair, upgrade_options

log = logging.getLogger(__name__)

CONTROL_PROTOCOL = "/swarm/control/1.0.0"
MAX_ADDRS_PER_PEER = 8
DIAL_TIMEOUT_S = 5.0


class Sink(Protocol):
    """Hooks into the asyncio side; each is called from the trio thread and must not block."""

    def control(self, peer_id: str, bodies: list[bytes]) -> None: ...
    def peer_change(self, peer_id: str, connected: bool) -> None: ...
    def misbehaviour(self, peer_id: str, reason: str) -> None: ...
    async def payload(self, peer_id: str, digest: bytes, data: bytes) -> None: ...
    def may_fetch(self, peer_id: str) -> bool: ...
    async def lookup(self, digest: bytes) -> bytes | None: ...
    async def control_backlog(self) -> None: ...


class Engine(PayloadStreams):
    def __init__(self, key: NodeKey, listen: str, bootstrap: list[str], members: list[str],
                 config: TransportConfig, sink: Sink) -> None:
        self.key = key
        self.peer_id = key.peer_id
        self.listen = listen
        self.config = config
        self.sink = sink
        self.heartbeat_s = max(0.02, config.peer_timeout_s / 4)
        self.members: dict[str, Member] = {
            pid: Member(pid, OutboundQueue()) for pid in dict.fromkeys(members) if pid != self.peer_id}
        self.allowed = set(members) | {self.peer_id}  # read by the Noise handshake; set_members changes it
        for addr in bootstrap:
            self._learn_addr(addr)
        self.host: Any = None
        self.listen_addrs: list[str] = []
        self.refused = 0
        self.push_streams_opened = 0
        self.push_retries = 0
        self._background: trio.Nursery | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------------
    async def main(self, nursery: trio.Nursery, ready: Callable[[], None]) -> None:
        disable_reuseport()
        fastpath.install()
        key_pair = libp2p_key_pair(self.key)
        sec_opt, muxer_opt = upgrade_options(key_pair, self.allowed, self._refused)
        listen = multiaddr.Multiaddr(self.listen)
        self.host = new_host(key_pair=key_pair, sec_opt=sec_opt, muxer_opt=muxer_opt, listen_addrs=[listen])
        self.host.get_network().register_notifee(_Notifee(self))
        self.host.set_stream_handler(CONTROL_PROTOCOL, self._guard(self._on_control_stream))
        self.host.set_stream_handler(bulk.PUSH_PROTOCOL, self._guard(self._on_push_stream))
        self.host.set_stream_handler(bulk.FETCH_PROTOCOL, self._guard(self._on_fetch_stream))
        self.host.set_stream_handler(bulk.RANGE_PROTOCOL, self._guard(self._on_range_stream))
        async with self.host.run(listen_addrs=[listen]):
            self.listen_addrs = [str(a) for a in self.host.get_addrs()]
            if not self.listen_addrs:  # libp2p logs a failed bind and carries on; a node that cannot listen must not
                raise OSError(f"could not listen on {self.listen} (port in use?)")
            async with trio.open_nursery() as inner:
                self._background = inner
                for member in self.members.values():
                    inner.start_soon(self._supervise, member)
                ready()
                await trio.sleep_forever()

    # ---- membership and address book ----------------------------------------------------------------------
    def set_members(self, members: list[str]) -> None:
        """A committed membership change (trio thread): supervise and accept the members added, drop the ones
        removed (their session ends and their connections close; the handshake refuses them from now on)."""
        wanted = set(members) - {self.peer_id}
        self.allowed.clear()
        self.allowed.update(wanted | {self.peer_id})
        for pid in sorted(wanted - set(self.members)):
            member = self.members[pid] = Member(pid, OutboundQueue())
            if self._background is not None:
                self._background.start_soon(self._supervise, member)
        for pid in sorted(set(self.members) - wanted):
            member = self.members.pop(pid)
            member.removed = True
            member.wake.set()
            if member.session is not None:
                member.session.cancel()
            if self._background is not None and self.host is not None:
                self._background.start_soon(self._forget_connections, ID.from_base58(pid))

    def _refused(self, peer_id: str) -> None:
        self.refused += 1
        self.sink.misbehaviour(peer_id, NOT_A_MEMBER)

    def _learn_addr(self, addr: str) -> None:
        try:
            transport_addr, pid = split_p2p(addr)
        except Exception:  # noqa: BLE001 - a bad address from config or a peer is ignored
            log.warning("ignoring malformed peer address %r", addr)
            return
        member = self.members.get(pid)
        if member is None or transport_addr in member.addrs:
            return
        member.addrs.insert(0, transport_addr)
        del member.addrs[MAX_ADDRS_PER_PEER:]
        member.wake.set()

    def _hello(self) -> bytes:
        lines = list(self.listen_addrs)
        for member in self.members.values():
            if member.connected:
                lines += [f"{a}/p2p/{member.peer_id}" for a in member.addrs[:2]]
        return encode_control(KIND_HELLO, "\n".join(lines).encode())

    def _has_connection(self, peer_id: str) -> bool:
        """A connection that libp2p has not marked closed (its table may still list closed ones)."""
        connections = self.host.get_network().get_connections(ID.from_base58(peer_id))
        return any(not getattr(conn, "is_closed", False) for conn in connections)

    async def _forget_connections(self, pid: ID) -> None:
        """Close and forget every connection to ``pid``. py-libp2p 0.8.1 can keep a connection it can no longer use in
        its table (a close cut short on a dead link): new_stream then fails with "No valid connections" without ever
        dialling again, and the peer stays unreachable after the network heals. The close is bounded; whatever it
        left behind is dropped from the table so the next attempt dials afresh."""
        network = self.host.get_network()
        if not network.get_connections(pid):
            return
        with trio.move_on_after(1):
            try:
                await network.close_peer(pid)
            except Exception as exc:  # noqa: BLE001 - best effort: the entry is dropped below anyway
                log.debug("closing connections to %s failed: %r", pid.to_base58()[:16], exc)
        table = getattr(network, "connections", None)
        if isinstance(table, dict):
            table.pop(pid, None)

    def connection_closed(self, peer_id: str) -> None:
        """Notifee: a connection went away; if it was the last one, end that member's session now."""
        member = self.members.get(peer_id)
        if member is None or self._has_connection(peer_id):
            return
        if member.session is not None:
            member.session.cancel()

    def connection_opened(self, peer_id: str) -> None:
        member = self.members.get(peer_id)
        if member is not None:
            member.wake.set()

    # ---- supervisor: dial, control stream, watchdog -------------------------------------------------------
    async def _pause(self, member: Member, seconds: float) -> None:
        member.wake = trio.Event()
        with trio.move_on_after(seconds * random.uniform(0.8, 1.2)):
            await member.wake.wait()

    async def _supervise(self, member: Member) -> None:
        backoff = 0.1
        pid = ID.from_base58(member.peer_id)
        while not member.removed:
            try:
                if not self._has_connection(member.peer_id):
                    await self._forget_connections(pid)  # closed ones still listed: connect() would trust them
                    if not member.addrs:
                        await self._pause(member, self.config.dial_backoff_max_s)
                        continue
                    info = LibP2PPeerInfo(pid, [multiaddr.Multiaddr(a) for a in member.addrs])
                    with trio.fail_after(DIAL_TIMEOUT_S):
                        await self.host.connect(info)
                with trio.fail_after(DIAL_TIMEOUT_S):
                    stream = await self.host.new_stream(pid, [CONTROL_PROTOCOL])
            except Exception as exc:  # noqa: BLE001 - any dial failure means: back off and retry
                log.debug("dial %s failed: %r", member.peer_id[:16], exc)
                if member.timed_out:
                    await self._forget_connections(pid)  # a peer found dead, whose connection is still listed
                await self._pause(member, backoff)
                backoff = min(backoff * 2, self.config.dial_backoff_max_s)
                continue
            backoff = 0.1
            await self._session(member, stream)
            await self._pause(member, 0.05)

    async def _session(self, member: Member, stream: Any) -> None:
        member.touch()
        member.timed_out = False
        self._set_connected(member, True)
        try:
            async with trio.open_nursery() as nursery:
                member.session = nursery.cancel_scope
                nursery.start_soon(self._watchdog, member, nursery.cancel_scope)
                nursery.start_soon(self._write, member, stream, nursery.cancel_scope)
        finally:
            member.session = None
            self._set_connected(member, False)
            idle, member.idle_push = member.idle_push, []
            with trio.CancelScope(shield=True):
                await bulk.reset(stream)
                for old, _ in idle:
                    await bulk.reset(old)
                if member.timed_out:
                    with trio.move_on_after(1):
                        try:
                            await self.host.disconnect(ID.from_base58(member.peer_id))
                        except Exception:  # noqa: BLE001 - best effort
                            pass

    async def _write(self, member: Member, stream: Any, scope: trio.CancelScope) -> None:
        try:
            await Writer(stream, member.queue, self.heartbeat_s, lambda: None).run(first=self._hello())
        except Exception as exc:  # noqa: BLE001 - the stream failed: end the session
            log.debug("control stream to %s failed: %r", member.peer_id[:16], exc)
        scope.cancel()

    async def _watchdog(self, member: Member, scope: trio.CancelScope) -> None:
        timeout = self.config.peer_timeout_s
        while True:
            await trio.sleep(self.heartbeat_s / 2)
            if member.last_seen is None or time.monotonic() - member.last_seen > timeout:
                log.info("peer %s silent for %.1fs: dropping it", member.peer_id[:16], timeout)
                member.timed_out = True
                scope.cancel()
                return

    def _set_connected(self, member: Member, connected: bool) -> None:
        if member.connected != connected:
            member.connected = connected
            self.sink.peer_change(member.peer_id, connected)

    # ---- inbound streams ----------------------------------------------------------------------------------
    def _guard(self, handler: Callable[[Member, Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        """Wrap a stream handler: members only, and no exception ever escapes into libp2p."""

        async def guarded(stream: Any) -> None:
            try:
                peer_id = stream.muxed_conn.peer_id.to_base58()
            except Exception:  # noqa: BLE001
                await bulk.reset(stream)
                return
            member = self.members.get(peer_id)
            if member is None:
                self.sink.misbehaviour(peer_id, STREAM_FROM_NON_MEMBER)
                await bulk.reset(stream)
                return
            try:
                await handler(member, stream)
            except FrameError as exc:  # the reason is a fixed text; what the peer's bytes said goes to the log only
                log.info("malformed frame from %s: %s", peer_id[:16], clip(exc))
                self.sink.misbehaviour(peer_id, MALFORMED_FRAME)
                await bulk.reset(stream)
            except StreamClosed:
                await bulk.reset(stream)
            except Exception as exc:  # noqa: BLE001 - never let a peer's bytes kill the node
                log.debug("stream handler for %s failed: %r", peer_id[:16], exc)
                await bulk.reset(stream)

        return guarded

    async def _on_control_stream(self, member: Member, stream: Any) -> None:
        reader = ControlReader(stream)
        while True:
            with trio.fail_after(self.config.peer_timeout_s * 3):  # a live peer heartbeats: a stall is a dead stream
                batch = await reader.next_batch()
            member.touch()
            bodies = [body for kind, body in batch if kind == KIND_DATA]
            for kind, body in batch:
                if kind == KIND_HELLO:
                    self._on_hello(body)
            if bodies:
                self.sink.control(member.peer_id, bodies)
                await self.sink.control_backlog()

    def _on_hello(self, body: bytes) -> None:
        try:
            lines = body.decode().split("\n")
        except UnicodeDecodeError:
            raise FrameError("hello is not UTF-8") from None
        for line in lines[:64]:
            if line and not line.endswith(self.peer_id):
                self._learn_addr(line)




class _Notifee(INotifee):
    """Tells the engine when connections open or close (kill -9 of a peer shows up here at once)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def opened_stream(self, network: Any, stream: Any) -> None:
        pass

    async def closed_stream(self, network: Any, stream: Any) -> None:
        pass

    async def connected(self, network: Any, conn: Any) -> None:
        try:
            self._engine.connection_opened(conn.muxed_conn.peer_id.to_base58())
        except Exception:  # noqa: BLE001
            pass

    async def disconnected(self, network: Any, conn: Any) -> None:
        try:
            self._engine.connection_closed(conn.muxed_conn.peer_id.to_base58())
        except Exception:  # noqa: BLE001
            pass

    async def listen(self, network: Any, multiaddr: Any) -> None:
        pass

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        pass
