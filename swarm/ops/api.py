"""The node's read-only HTTP API (aiohttp): status, peers, the commit log and round history as JSON, Prometheus
metrics, and the web dashboard.

Bound to 127.0.0.1 by default; when configured to bind elsewhere the config requires a bearer token, checked on
every data request (the dashboard's static files hold no data, so a browser can load them and then send the token
it is given). Handlers only read the node's in-memory views and the store: they never change state.
"""
from __future__ import annotations

import hmac
import time
from pathlib import Path

from aiohttp import web

from swarm.ledger import reputation
from swarm.ops.metrics import CONTENT_TYPE, render_node_metrics
from swarm.ops.view import NodeView

NODE = web.AppKey("node", object)


def build_app(node: NodeView, token: str | None = None) -> web.Application:
    middlewares = [_token_middleware(token)] if token else []
    app = web.Application(middlewares=middlewares)
    app[NODE] = node
    app.router.add_get("/status", status)
    app.router.add_get("/peers", peers)
    app.router.add_get("/log", commit_log)
    app.router.add_get("/history", round_history)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", dashboard_index)
    app.router.add_static("/dashboard/", DASHBOARD_DIR, show_index=False)
    return app


DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
PUBLIC_PREFIXES = ("/dashboard/",)


def _token_middleware(token: str):
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler):
        if request.path == "/" or request.path.startswith(PUBLIC_PREFIXES):
            return await handler(request)  # static files only: no node data without the token
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise web.HTTPUnauthorized(text="missing or wrong bearer token")
        return await handler(request)
    return check


def status_view(node: NodeView) -> dict:
    core = node.core
    now_wall = time.time()
    connected = {peer: info for peer, info in node.transport.peers().items()}
    last = node.history[-1] if node.history else None
    return {
        "peer_id": node.id, "name": node.name, "swarm_id": node.genesis.swarm_id,
        "listen_addrs": node.transport.listen_addrs,
        "uptime_s": round(now_wall - node.started, 3),
        "n": node.genesis.n, "f": node.genesis.f, "quorum": node.genesis.quorum,
        "term": core.term, "role": core.role,
        "leader": core.leader, "leader_name": node.genesis.name_of(core.leader) if core.leader else None,
        "round": node.state.round, "state_hash": node.state.hash.hex(),
        "loss": node.last_eval[0] if node.last_eval else None,
        "accuracy": node.last_eval[1] if node.last_eval else None,
        "last_commit_at": last.committed_at if last else None,
        "diverged": node.diverged,
        "rule": node.rules.rule,
        "peers": [{"peer_id": peer, "name": node.genesis.name_of(peer), "connected": info.connected,
                   "last_seen": info.last_seen_wall,
                   "last_seen_ago_s": None if info.last_seen_wall is None else round(now_wall - info.last_seen_wall, 3)}
                  for peer, info in sorted(connected.items())],
    }


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


def log_view(node: NodeView, start: int, limit: int) -> list[dict]:
    records = {record.round: record for record in node.history}
    out = []
    for row in node.store.rows(start, limit):
        cert = row.certificate
        record = records.get(row.round)
        out.append({
            "loss": record.loss if record else None, "accuracy": record.accuracy if record else None,
            "aggregated": record.included if record else None, "quarantined": record.quarantined if record else None,
            "rule_used": record.rule if record else None,
            "leader": node.genesis.name_of(record.leader) if record and record.leader else None,
            "round": row.round, "term": row.term, "digest": row.digest.hex(), "state_hash": row.state_hash.hex(),
            "rule": row.entry["rule"],
            "gradients": [d.hex() for d in row.entry["gradients"]],
            "included": [node.genesis.name_of(s) for s in _senders(node, row.entry["gradients"])],
            "certificate_term": cert["term"],
            "certificate_signers": [node.genesis.name_of(s) for s, _ in cert["sigs"]],
            "certificate_signer_ids": [s for s, _ in cert["sigs"]],
        })
    return out


def _senders(node: NodeView, digests: list[bytes]) -> list[str]:
    return sorted(node.store.gradient_senders(digests))


async def commit_log(request: web.Request) -> web.Response:
    try:
        start = int(request.query.get("from", "1"))
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise web.HTTPBadRequest(text="from and limit must be integers") from None
    if start < 1 or not 1 <= limit <= 10_000:
        raise web.HTTPBadRequest(text="from must be >= 1 and limit in 1..10000")
    return web.json_response(log_view(request.app[NODE], start, limit))


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
    try:
        limit = int(request.query.get("limit", "1000"))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be an integer") from None
    if not 1 <= limit <= 10_000:
        raise web.HTTPBadRequest(text="limit must be in 1..10000")
    return web.json_response(history_view(request.app[NODE], limit))


async def metrics(request: web.Request) -> web.Response:
    body = render_node_metrics(request.app[NODE])
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})


async def dashboard_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(DASHBOARD_DIR / "index.html")


async def start_api(node: NodeView, host: str, port: int, token: str | None) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(build_app(node, token), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked for
    return runner, bound
