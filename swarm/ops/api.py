"""The node's read-only HTTP API (aiohttp): status, peers, the commit log and round history as JSON, Prometheus
metrics, and the web dashboard.

Bound to 127.0.0.1 by default; when configured to bind elsewhere the config requires a bearer token, checked on
every data request (the dashboard's static files hold no data, so a browser can load them and then send the token
it is given). Handlers only read the node's in-memory views and the store: they never change state.

The API shares its event loop with the node's consensus, so what a client can make it do there is bounded
(``ApiConfig``, issue 23): the commit log, the one answer that grows with the chain, is read, decoded and encoded
in the API's own worker threads over a read-only connection to the store (a long read never holds the store's lock
that votes are persisted under), at most ``max_heavy_requests`` at once; at most ``max_requests`` requests are
answered at once and ``max_connections`` connections held; beyond any of them the answer is 503 at once, never a
queue. A client has ``header_timeout_s`` to send its request, ``body_timeout_s`` to send a body it announced (none
is read), and a request that takes ``request_timeout_s`` is answered 503 (or its connection dropped, if its answer
had started). Every parameter is checked to a 400, and a token check can only answer 401.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from aiohttp import web

from consensus.quorum import Membership
from swarm.config import ApiConfig
from swarm.ledger import reputation
from swarm.ledger.store import Store
from swarm.ops.metrics import CONTENT_TYPE, render_node_metrics
from swarm.ops.view import ChainView, NodeView

NODE = web.AppKey("node", object)
LIMITS = web.AppKey("limits", ApiConfig)
GATES = web.AppKey("gates", object)
ANSWER_STARTED = web.RequestKey("answer_started", bool)  # the handler has begun writing its answer

log = logging.getLogger("swarm.api")

MAX_ROUND = (1 << 63) - 1  # SQLite's largest integer: a round past it is a 400, not an OverflowError
_DIGITS = re.compile(r"[0-9]{1,19}")
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: 39\r\n\r\nthe node's API has too many connections")


@dataclass
class _Gates:
    """What the API is doing now (all counted on the event loop), its worker threads and its store reader."""
    limits: ApiConfig
    requests: int = 0
    heavy: int = 0
    refused: int = 0
    workers: ThreadPoolExecutor | None = None
    reader: Any = None
    reader_lock: threading.Lock = field(default_factory=threading.Lock)

    def executor(self) -> ThreadPoolExecutor:
        if self.workers is None:
            self.workers = ThreadPoolExecutor(self.limits.max_heavy_requests, thread_name_prefix="api")
        return self.workers


def _busy(why: str) -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(text=f"the node's API is busy ({why}); retry shortly",
                                      headers={"Retry-After": "1"})


def build_app(node: NodeView, token: str | None = None, limits: ApiConfig | None = None) -> web.Application:
    limits = limits or ApiConfig()
    middlewares = [_admission_middleware(limits)] + ([_token_middleware(token)] if token else [])
    app = web.Application(middlewares=middlewares)
    app[NODE] = node
    app[LIMITS] = limits
    app[GATES] = _Gates(limits)
    app.on_cleanup.append(_release_workers)
    app.router.add_get("/status", status)
    app.router.add_get("/peers", peers)
    app.router.add_get("/log", commit_log)
    app.router.add_get("/history", round_history)
    app.router.add_get("/metrics", metrics)
    if getattr(node, "desk", None) is not None:  # a running node (inspection stand-ins have none)
        app.router.add_get("/members", members)
        app.router.add_post("/members", request_membership_change)
    app.router.add_get("/", dashboard_index)
    app.router.add_static("/dashboard/", DASHBOARD_DIR, show_index=False)
    return app


async def _release_workers(app: web.Application) -> None:
    gates: _Gates = app[GATES]
    if gates.workers is not None:
        gates.workers.shutdown(wait=False, cancel_futures=True)
    with gates.reader_lock:
        reader, gates.reader = gates.reader, None
    if isinstance(reader, Store) and reader is not app[NODE].store:
        reader.close()


DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
PUBLIC_PREFIXES = ("/dashboard/",)


def _admission_middleware(limits: ApiConfig):
    """At most ``max_requests`` requests answered at once (one more: 503 at once), each within
    ``request_timeout_s``."""

    @web.middleware
    async def admit(request: web.Request, handler):
        gates: _Gates = request.app[GATES]
        if gates.requests >= limits.max_requests:
            raise _busy("too many requests at once")
        gates.requests += 1
        try:
            async with asyncio.timeout(limits.request_timeout_s):
                return await handler(request)
        except TimeoutError:
            if request.get(ANSWER_STARTED):  # too late for a 503: drop the connection
                transport = request.transport
                if transport is not None:
                    transport.abort()
            raise _busy(f"no answer within {limits.request_timeout_s:g} s") from None
        finally:
            gates.requests -= 1
    return admit


def _token_middleware(token: str):
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler):
        if request.path == "/" or request.path.startswith(PUBLIC_PREFIXES):
            return await handler(request)  # static files only: no node data without the token
        # aiohttp decodes header bytes as UTF-8 with surrogate escapes: these give the client's bytes back, so a
        # header that is not UTF-8 is simply a wrong token (401), not an encoding error (500).
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):
            raise web.HTTPUnauthorized(text="missing or wrong bearer token")
        return await handler(request)
    return check


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """A query parameter that must be a plain decimal integer in low..high; anything else is a 400."""
    text = request.query.get(name)
    if text is None:
        return default
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise web.HTTPBadRequest(text=f"{name} must be an integer in {low}..{high}")
    return int(text)


def status_view(node: NodeView) -> dict:
    core = node.core
    now_wall = time.time()
    connected = {peer: info for peer, info in node.transport.peers().items()}
    last = node.history[-1] if node.history else None
    config = Membership(node.state.members)
    return {
        "peer_id": node.id, "name": node.name, "swarm_id": node.genesis.swarm_id,
        "listen_addrs": node.transport.listen_addrs,
        "uptime_s": round(now_wall - node.started, 3),
        # the configuration in force (the genesis one until a membership change commits)
        "n": config.n, "f": config.f, "quorum": config.quorum,
        "term": core.term, "role": core.role,
        "leader": core.leader, "leader_name": node.genesis.name_of(core.leader) if core.leader else None,
        "round": node.state.round, "state_hash": node.state.hash.hex(),
        "loss": node.last_eval[0] if node.last_eval else None,
        "accuracy": node.last_eval[1] if node.last_eval else None,
        "last_commit_at": last.committed_at if last else None,
        "diverged": node.diverged,
        "store_errors": store_errors_view(node),
        "privacy": privacy_view(node),
        "training_workers": node.metrics.training_workers,
        "snapshot_transfer": snapshot_transfer_view(node),
        "rule": node.rules.rule,
        "peers": [{"peer_id": peer, "name": node.genesis.name_of(peer), "connected": info.connected,
                   "last_seen": info.last_seen_wall,
                   "last_seen_ago_s": None if info.last_seen_wall is None else round(now_wall - info.last_seen_wall, 3)}
                  for peer, info in sorted(connected.items())],
    }


def snapshot_transfer_view(node: NodeView) -> dict | None:
    """The certified snapshot being fetched in chunks, or the last one (None: none since the start): what, its
    hash prefix, state, bytes done of the total, and bytes from each peer."""
    progress = node.metrics.snapshot_transfer
    return None if progress is None else progress.view()


def store_errors_view(node: NodeView) -> dict:
    """Writes after a commit that failed (each retried until it holds): how many, the last one and when, and
    what is being retried now (None when every committed round's files are written)."""
    m = node.metrics
    return {"count": m.store_write_errors, "last": m.last_store_error, "last_at": m.last_store_error_at,
            "failing": m.store_write_failing}


def privacy_view(node: NodeView) -> dict | None:
    """Differential privacy this node spent on its own records (None: off in the genesis): epsilon at delta over
    the rounds it released an update in, its budget, and whether it stopped contributing at the budget."""
    p = node.metrics.privacy
    if p is None:
        return None
    return {"epsilon": p.epsilon, "delta": p.delta, "budget": p.budget, "rounds": p.rounds, "exhausted": p.exhausted,
            "noise_multiplier": p.noise_multiplier, "clip_norm": p.clip_norm, "sample_rate": p.sample_rate,
            "withheld_rounds": p.withheld_rounds}


async def status(request: web.Request) -> web.Response:
    return web.json_response(status_view(request.app[NODE]))


def peers_view(node: NodeView) -> list[dict]:
    floor = node.rules.reputation_floor
    transport_peers = node.transport.peers()
    rows = []
    for peer, rep in node.state.reputation:
        local = node.scores.get(peer)
        info = transport_peers.get(peer)
        score = reputation.score(rep)
        quarantined = score < floor
        banned = node.scores.is_banned(peer, time.monotonic())
        why = []
        if quarantined:
            why.append(f"committed reputation {score:.3f} under the floor {floor}")
        if banned:
            why.append(f"local score exhausted ({local.last_reason})")
        rows.append({
            "peer_id": peer, "name": node.genesis.name_of(peer), "self": peer == node.id,
            "reputation": round(score, 6), "quality": rep.quality, "participation": rep.participation,
            "consensus": rep.consensus, "rounds_included": rep.rounds_included, "penalties": rep.penalties,
            "local_score": round(local.score, 6), "rejected": local.rejected,
            "rejected_by_reason": dict(local.reasons),
            "connected": peer == node.id or bool(info and info.connected),
            "last_seen": None if info is None else info.last_seen_wall,
            "quarantined": quarantined, "banned": banned, "why": "; ".join(why) or None,
        })
    return rows


async def peers(request: web.Request) -> web.Response:
    return web.json_response(peers_view(request.app[NODE]))


def log_view(node: NodeView, start: int, limit: int, records: dict | None = None,
             chain: ChainView | None = None) -> list[dict]:
    """The committed rounds ``start``.. (at most ``limit``), with what the node remembers of each. ``records``
    (round -> RoundRecord) and ``chain`` default to the node's own; the API passes a copy of the first, taken on
    the event loop, and a read-only reader of the store, and runs this in a worker thread."""
    return list(_log_rows(node, start, limit, records, chain))


def _log_rows(node: NodeView, start: int, limit: int, records: dict | None = None,
              chain: ChainView | None = None) -> Iterator[dict]:
    if records is None:
        records = {record.round: record for record in node.history}
    chain = node.store if chain is None else chain
    name_of = node.genesis.name_of
    for row in chain.rows(start, limit):
        cert = row.certificate
        record = records.get(row.round)
        yield {
            "loss": record.loss if record else None, "accuracy": record.accuracy if record else None,
            "aggregated": record.included if record else None, "quarantined": record.quarantined if record else None,
            "rule_used": record.rule if record else None,
            "leader": name_of(record.leader) if record and record.leader else None,
            "round": row.round, "term": row.term, "digest": row.digest.hex(), "state_hash": row.state_hash.hex(),
            "rule": row.entry["rule"],
            "gradients": [d.hex() for d in row.entry["gradients"]],
            "included": [name_of(s) for s in sorted(chain.gradient_senders(row.entry["gradients"]))],
            "certificate_term": cert["term"],
            "certificate_signers": [name_of(s) for s, _ in cert["sigs"]],
            "certificate_signer_ids": [s for s, _ in cert["sigs"]],
        }


def _chain_reader(app: web.Application) -> ChainView:
    """What the worker threads read the chain through: a read-only connection of its own to the node's live
    store (SQLite in WAL mode: readers never block the writer, and the store's lock stays free for votes), opened
    once; anything else (a stand-in, a store not live in WAL mode) is read as it is."""
    gates: _Gates = app[GATES]
    with gates.reader_lock:
        if gates.reader is None:
            store = app[NODE].store
            gates.reader = store
            if (isinstance(store, Store) and not store.read_only
                    and (store.dir / "node.sqlite-wal").exists()):  # else a read-only open would be "immutable"
                try:
                    gates.reader = Store(store.dir, read_only=True)
                except Exception as exc:  # the node's own connection still answers, from this thread
                    log.warning("API: no read-only connection to the store (%s); reading through the node's", exc)
        return gates.reader


def _log_body(app: web.Application, records: dict, start: int, limit: int) -> bytes:
    rows = _log_rows(app[NODE], start, limit, records, _chain_reader(app))
    # Encoded one row at a time, as each is built: json.dumps holds the GIL for a whole call, and ten thousand
    # rows alive at once made the garbage collector pause every thread (the event loop too) for 200 ms.
    return b"[" + b",".join(json.dumps(row).encode() for row in rows) + b"]"


async def _in_worker(request: web.Request, job: Callable[..., bytes], *args) -> bytes:
    """Run ``job`` in the API's worker threads, at most ``max_heavy_requests`` at once (one more: 503 at once).
    A slot is held until the thread finishes, even if the client has gone or the request timed out."""
    gates: _Gates = request.app[GATES]
    if gates.heavy >= gates.limits.max_heavy_requests:
        raise _busy("too many log reads at once")
    gates.heavy += 1
    future = asyncio.get_running_loop().run_in_executor(gates.executor(), job, *args)

    def release(done: asyncio.Future) -> None:
        gates.heavy -= 1
        if not done.cancelled():
            done.exception()  # retrieved: a failure after the client left is not "never retrieved"

    future.add_done_callback(release)
    return await asyncio.shield(future)


async def _send_json(request: web.Request, body: bytes) -> web.StreamResponse:
    """A prepared JSON answer written inside the handler, so the request timeout covers a client that does not
    read it."""
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    response.content_length = len(body)
    request[ANSWER_STARTED] = True
    await response.prepare(request)
    await response.write(body)
    await response.write_eof()
    return response


async def commit_log(request: web.Request) -> web.StreamResponse:
    start = _int_param(request, "from", 1, 1, MAX_ROUND)
    limit = _int_param(request, "limit", 100, 1, 10_000)
    node = request.app[NODE]
    records = {record.round: record for record in list(node.history)}  # on the loop: the node appends to it
    try:
        body = await _in_worker(request, _log_body, request.app, records, start, limit)
    except RuntimeError as exc:  # the worker pool was shut down: the API is stopping
        raise _busy(str(exc)) from None
    return await _send_json(request, body)


def history_view(node: NodeView, limit: int) -> list[dict]:
    """One row per committed round the node remembers: loss, accuracy, leader, and the reputation table."""
    rows = []
    for record in list(node.history)[-limit:]:
        rows.append({
            "round": record.round, "term": record.term, "loss": record.loss, "accuracy": record.accuracy,
            "leader": node.genesis.name_of(record.leader) if record.leader else None,
            "quarantined": record.quarantined, "committed_at": record.committed_at,
            "reputation": record.reputation,
        })
    return rows


async def round_history(request: web.Request) -> web.Response:
    limit = _int_param(request, "limit", 1000, 1, 10_000)  # the node keeps a bounded history (RoundLog)
    return web.json_response(history_view(request.app[NODE], limit))


async def metrics(request: web.Request) -> web.Response:
    body = render_node_metrics(request.app[NODE])
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})


async def members(request: web.Request) -> web.StreamResponse:
    """The configuration in force, this node's place in it, the pending request and the committed changes."""
    desk = request.app[NODE].desk
    return await _send_json(request, await _in_worker(request, lambda: json.dumps(desk.view()).encode()))


MAX_CHANGE_REQUEST_BYTES = 4096


async def request_membership_change(request: web.Request) -> web.Response:
    """A membership change signed by a member's key (`swarm members add/remove`): checked against the
    configuration in force, then passed to every member for the next leader to propose. 202 when taken, 400 with
    the reason when refused. The change commits only through the three-phase agreement."""
    from crypto.wire import DecodeError
    from swarm.ledger.membership import ChangeRefused, MembershipChange

    if request.content_length is None or request.content_length > MAX_CHANGE_REQUEST_BYTES:
        return web.json_response({"error": f"a request is JSON of at most {MAX_CHANGE_REQUEST_BYTES} bytes"},
                                 status=400)
    try:
        body = json.loads(await request.read())
        plain = dict(body)
        plain["sig"] = bytes.fromhex(str(plain.get("sig", "")))
        change = MembershipChange.from_plain(plain)
        request.app[NODE].desk.submit(change)
    except (ValueError, TypeError, DecodeError, ChangeRefused) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"accepted": True, "op": change.op, "name": change.name}, status=202)


async def dashboard_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(DASHBOARD_DIR / "index.html")


async def start_api(node: NodeView, host: str, port: int, token: str | None,
                    limits: ApiConfig | None = None) -> tuple[web.AppRunner, int]:
    """Serve the API; ``limits`` is the node config's ``api`` section (its defaults when not given)."""
    limits = limits or ApiConfig()
    # keepalive_timeout: aiohttp arms it when a connection opens and closes the connection if no complete request
    # has arrived by then (and after an idle keep-alive): the header timeout. lingering_time: how long a body
    # announced but not sent is waited for after the answer, before the connection is closed.
    runner = web.AppRunner(build_app(node, token, limits), access_log=None,
                           keepalive_timeout=limits.header_timeout_s, lingering_time=limits.body_timeout_s)
    await runner.setup()
    _cap_connections(runner.server, limits.max_connections, runner.app[GATES])
    _quiet_accept_errors()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked for
    return runner, bound


def _cap_connections(server: web.Server, limit: int, gates: _Gates) -> None:
    """At most ``limit`` connections held: one more is answered 503 and closed as it opens (a reset, if the
    client's request is already in flight), so slow clients cannot take the node's file descriptors."""
    accept = server.connection_made

    def connection_made(handler, transport) -> None:
        if len(server.connections) < limit:
            accept(handler, transport)
            return
        # Refused: registered like any connection (its handler's task needs its server) and answered 503 at once;
        # the handler closes it on the next loop turn, which its task survives. Closed right here, the handler
        # lost its server before its task first ran, and each refusal logged an AssertionError traceback.
        gates.refused += 1
        accept(handler, transport)
        transport.write(_BUSY)
        asyncio.get_running_loop().call_soon(handler.force_close)

    server.connection_made = connection_made


class _RateLimitedAcceptErrors(logging.Filter):
    """asyncio logs each failed accept() (out of file descriptors: once per second per listener, with a
    traceback) at ERROR; let one through per minute, saying how many were held back."""

    EVERY_S = 60.0

    def __init__(self) -> None:
        super().__init__()
        self._last = float("-inf")
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "accept" not in str(record.msg) or "out of system resource" not in str(record.msg):
            return True
        now = time.monotonic()
        if now - self._last < self.EVERY_S:
            self._held += 1
            return False
        self._last = now
        if self._held:
            record.msg = f"{record.msg} ({self._held} more like it in the last minute not logged)"
            self._held = 0
        record.exc_info = None  # the traceback says nothing the message does not
        return True


def _quiet_accept_errors() -> None:
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _RateLimitedAcceptErrors) for f in logger.filters):
        logger.addFilter(_RateLimitedAcceptErrors())
