"""A Byzantine node's behaviour, for tests and demos: what it pushes instead of its honest gradient.

Vector attacks (sign flip, scaling, noise, zero, ALIE, IPM) replace the update before compression and signing;
label flip poisons training itself; garbage, stale and equivocation attack the wire and the protocol. ALIE and
IPM need the honest updates the attacker sees: it uses the gradients it received in the previous round.
"""
from __future__ import annotations

import torch

from crypto.keys import NodeKey
from swarm.faults.attacks import Attack, garbage_payload, parse_attack
from swarm.ledger.state import ReplicatedState
from swarm.round.compression import Compressor
from swarm.round.gradient import make_gradient


class Adversary:
    def __init__(self, profile: str, key: NodeKey, swarm_id: str, compressor: Compressor, seed: int = 0):
        self.attack: Attack = parse_attack(profile, seed)
        self.key, self.swarm_id, self.compressor = key, swarm_id, compressor
        self._rng = torch.Generator().manual_seed(seed)

    @property
    def label_flip(self) -> bool:
        return self.attack.flag == "label_flip"

    def payloads(self, update: torch.Tensor, round_: int, state: ReplicatedState,
                 observed: list[torch.Tensor]) -> list[bytes]:
        """The envelopes to push for ``round_`` (each pushed to every peer)."""
        flag = self.attack.flag
        if flag == "garbage":
            return [garbage_payload(4096 + round_, seed=round_)]
        if flag == "stale":
            return [self._sign(update, round_ - 1, state.parent_hash)]
        if flag == "equivocate":
            other = -update + torch.randn(update.shape, generator=self._rng) * 1e-3
            return [self._sign(update, round_, state.hash), self._sign(other, round_, state.hash)]
        seen = observed if observed else [update]
        poisoned = self.attack.apply(update, observed=seen if self.attack.needs_observed else None,
                                     rng=self._rng)
        return [self._sign(poisoned, round_, state.hash)]

    def _sign(self, vector: torch.Tensor, round_: int, parent: bytes) -> bytes:
        return make_gradient(self.key, self.swarm_id, max(round_, 0), parent, self.compressor.compress(vector))
