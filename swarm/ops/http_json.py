"""Reading a node's HTTP API as JSON: the one GET that every tool polling a node goes through (the cluster
supervisor, the container health check, the CLI's inspecting commands).

``fetch_json`` says why a request gave no JSON, for tools that explain failures to a person; ``get_json`` answers
None instead, for polling loops where a node not answering yet is an expected answer.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

UNREACHABLE = "unreachable"   # no HTTP answer: refused, timed out, no route
STATUS = "status"             # the node answered with an HTTP error status
NOT_JSON = "not_json"         # the node answered 200 with something that does not parse


class ApiError(Exception):
    def __init__(self, kind: str, detail: str, status: int | None = None):
        super().__init__(detail)
        self.kind, self.detail, self.status = kind, detail, status


def fetch_json(url: str, timeout: float, token: str | None = None) -> Any:
    """GET ``url`` (with the bearer ``token`` if given) and parse its JSON; ApiError when that fails."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # before URLError and OSError: it is both
        raise ApiError(STATUS, f"HTTP {exc.code}", exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(UNREACHABLE, str(getattr(exc, "reason", exc))) from None
    except ValueError as exc:
        raise ApiError(NOT_JSON, str(exc)) from None


def get_json(url: str, timeout: float = 2.0, token: str | None = None) -> Any | None:
    """The JSON at ``url``, or None whatever went wrong."""
    try:
        return fetch_json(url, timeout, token)
    except ApiError:
        return None


def post_json(url: str, body: Any, timeout: float, token: str | None = None) -> tuple[int, Any]:
    """POST ``body`` as JSON to ``url``; (HTTP status, parsed answer), the answer of an error status included
    (it says why); ApiError when no JSON answer came."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            raise ApiError(STATUS, f"HTTP {exc.code}", exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(UNREACHABLE, str(getattr(exc, "reason", exc))) from None
    except ValueError as exc:
        raise ApiError(NOT_JSON, str(exc)) from None
