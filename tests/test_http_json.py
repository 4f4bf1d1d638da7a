"""The one GET every tool reads a node's API with: fetch_json says why it failed, get_json answers None, and the
CLI turns each reason into its own line."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cli.api_client import fetch_json as cli_fetch_json
from cli.errors import UserFacingError
from swarm.ops.cluster import free_port
from swarm.ops.http_json import NOT_JSON, STATUS, UNREACHABLE, ApiError, fetch_json, get_json


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the name http.server calls)
        if self.headers.get("Authorization") != "Bearer right" and self.path != "/open":
            self.send_response(401)
            self.end_headers()
            return
        body = {"/json": b'{"round": 3}', "/open": b"[]", "/text": b"<html>"}.get(self.path)
        self.send_response(200 if body else 500)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def base():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_json_comes_back_with_the_token_and_none_on_any_failure(base):
    assert fetch_json(base + "/json", 2.0, "right") == {"round": 3}
    assert get_json(base + "/open") == []
    assert get_json(base + "/json", 2.0, "wrong") is None
    assert get_json(f"http://127.0.0.1:{free_port()}/status", 1.0) is None


@pytest.mark.parametrize("path, token, kind, status", [
    ("/json", "wrong", STATUS, 401), ("/missing", "right", STATUS, 500), ("/text", "right", NOT_JSON, None)])
def test_fetch_json_says_why(base, path, token, kind, status):
    with pytest.raises(ApiError) as raised:
        fetch_json(base + path, 2.0, token)
    assert (raised.value.kind, raised.value.status) == (kind, status)


def test_an_unreachable_node_is_its_own_reason():
    with pytest.raises(ApiError) as raised:
        fetch_json(f"http://127.0.0.1:{free_port()}/status", 1.0)
    assert raised.value.kind == UNREACHABLE


@pytest.mark.parametrize("path, token, line", [
    ("/json", "wrong", "missing or wrong --token"), ("/missing", "right", "answered 500 to /missing"),
    ("/text", "right", "not JSON for /text")])
def test_the_cli_turns_each_reason_into_one_line(base, path, token, line):
    with pytest.raises(UserFacingError, match=line):
        cli_fetch_json(base, path, token)
