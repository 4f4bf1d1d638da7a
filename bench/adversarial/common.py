"""What the attackers, the harness and the report share: who is who and what each attack does."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HONEST = ["node0", "node1", "node2"]
ATTACKER = "node3"
WATCHER = "node2"            # rounds are read here; no attack targets it
ATTACK_NAMES = ["packed_newterm", "api_log", "api_status", "half_open", "label_streams"]
TARGET = {"packed_newterm": "node0", "api_log": "node0", "api_status": "node0", "half_open": "node0",
          "label_streams": "node1"}
RATE = {"packed_newterm": "40 msg/s, 3x1024 pairs each", "api_log": "500 clients, looping",
        "api_status": "500 clients, looping", "half_open": "500 held, reopened 0.25 s after a close",
        "label_streams": "up to {n} streams, 16 at once"}
PACKED_PAIRS = 1024
PACKED_RATE = 40.0
HTTP_CLIENTS = 500
LABEL_STREAMS = 3000
