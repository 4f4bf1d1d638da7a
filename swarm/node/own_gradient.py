"""The gradient this node signed for its pending round, made durable before it leaves.

Two different signed gradients from one member for one round are proof of equivocation and are committed as such
(swarm/ledger/entry_rules.py). An honest node that crashed after pushing its gradient and trained the round again
after the restart would sign a second, different one (training is not deterministic: batches, noise, a GPU) and
be convicted for it. So the signed envelope is written (fsync) before the first push, and a restarted node that
finds the envelope for the round and parent it is about to train pushes that one again instead.
"""
from __future__ import annotations

import os
from pathlib import Path

FILE_NAME = "own_gradient.env"


class OwnGradientFile:
    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / FILE_NAME

    def save(self, raw: bytes) -> None:
        """Replace the saved envelope durably: a temp file written and fsynced, renamed, the folder fsynced."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(self.path.name + ".tmp")
        with open(temp, "wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.path)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def load(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None
