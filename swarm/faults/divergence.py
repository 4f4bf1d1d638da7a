"""Divergence injection (``fault_injection.diverge_at_round``): a node that applies a committed entry and gets
another state hash, to test that it notices, stops contributing and resyncs from a certified snapshot."""
from __future__ import annotations

import dataclasses

import torch

from swarm.ledger.apply import Applied


def off_by_one_ulp(applied: Applied) -> Applied:
    """The applied result with its first parameter moved to the next float32."""
    params = applied.state.params.clone()
    params[0] = torch.nextafter(params[0], torch.tensor(float("inf")))
    return dataclasses.replace(applied, state=dataclasses.replace(applied.state, params=params, _hash=None))
