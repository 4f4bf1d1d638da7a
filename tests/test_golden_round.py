"""Golden runs: four members with fixed keys compress, sign, verify and apply five rounds in process.

The replicated path (compression, the gradient envelope, the receiver's checks, aggregation, reputation, the server
optimizer, the state's canonical bytes) must give the same bits on every machine, or members on different CPUs
would never agree on a state hash. So its hash is pinned, fed with updates that every machine builds bit for bit
(integers over a power of two from numpy's PCG64: no transcendental functions, no vectorised float kernels).

Local training is not bit-identical across CPUs (float32 matmul and convolution kernels are chosen per instruction
set: the hash of a trained run pinned on one Intel Xeon did not hold on an AMD EPYC), and it need not be: each member
trains on its own and signs what it got. It is pinned apart: a trained run is repeatable on one machine, and its
loss and update size are pinned to a tolerance far above rounding noise and far below any change of behaviour.

A real 4-process run is not deterministic (which gradients an entry names depends on arrival times), so every entry
here names all four gradients, as in a run where none is late; the previous round's certificate is signed by every
member. Change a pinned value only for an intended change of behaviour, and say why in the commit."""
from __future__ import annotations

import math

import numpy as np
import torch

from crypto.keys import NodeKey, load_key, save_key
from swarm.config import load_genesis, load_node_config
from swarm.ledger.apply import apply
from swarm.ledger.entry_rules import initial_state, open_gradient, rules_of
from swarm.ops.cluster import ClusterOptions, init_cluster
from swarm.round.compression import Compressor
from swarm.round.gradient import make_gradient
from swarm.training.build import build_trainer

GOLDEN_STATE_HASH = "2075e77f24c37f5d9f9f3da3527c1eb380ec65c2e418865b34eaaf0c081171bf"
ROUNDS = 5
# The trained run's pinned behaviour (mlp on mnist5k, 3 local steps, 4 members, 5 rounds), to a relative tolerance:
# member 0's first update, and how far five rounds moved the replicated parameters from the initial ones.
TRAINED_FIRST_UPDATE_NORM = 0.32092334
TRAINED_MOVEMENT_NORM = 1.5082629
TOLERANCE = 1e-3


def _cluster(folder):
    keys_dir = folder / "keys"
    for i in range(4):
        save_key(NodeKey.from_seed(bytes([i + 1]) * 32), keys_dir / f"node{i}.pem")
    specs = init_cluster(folder, ClusterOptions(nodes=4, swarm_id="golden", local_steps=3))
    configs = [load_node_config(spec.config_path) for spec in specs]
    return configs, load_genesis(configs[0].genesis)


def _compressor(config) -> Compressor:
    return Compressor(config.compression.scheme, k=config.compression.ratio,
                      error_feedback=config.compression.error_feedback)


def run(folder, update_of) -> tuple[list[str], torch.Tensor]:
    """Five rounds; ``update_of(member, round, params)`` gives each member's update. (hashes, final params)"""
    configs, genesis = _cluster(folder)
    members = [(load_key(config.identity), _compressor(config)) for config in configs]
    rules = rules_of(genesis)
    state = initial_state(genesis, configs[0])
    dim = state.params.numel()
    max_size = configs[0].transport.max_payload_bytes
    hashes = []
    for round_ in range(1, ROUNDS + 1):
        gradients = []
        for index, (key, compressor) in enumerate(members):
            update = update_of(index, round_, state.params)
            raw = make_gradient(key, genesis.swarm_id, round_, state.hash, compressor.compress(update))
            gradients.append(open_gradient(raw, genesis, dim, max_size, round_, state.hash))
        signers = frozenset(genesis.peer_ids) if round_ > 1 else None
        state = apply(state, gradients, rules, signers).state
        hashes.append(state.hash.hex())
    return hashes, state.params


def fixed_update(member: int, round_: int, params: torch.Tensor) -> torch.Tensor:
    """A shared direction plus each member's own part, member 3 further out: multiples of 2^-14, exact in float32."""
    rng = np.random.Generator(np.random.PCG64(1000 * round_))
    shared = rng.integers(-512, 512, params.numel())
    own = np.random.Generator(np.random.PCG64(1000 * round_ + member + 1)).integers(-256, 256, params.numel())
    scale = 4 if member == 3 else 1
    return torch.from_numpy((shared + scale * own).astype(np.float32) / np.float32(1 << 14))


def trained_run(folder) -> tuple[list[str], torch.Tensor, float]:
    """(hashes, final minus initial parameters, member 0's first update norm)"""
    configs, genesis = _cluster(folder)
    trainers = [build_trainer(config, genesis, load_key(config.identity).peer_id) for config in configs]
    first = []

    def update_of(member, round_, params):
        update = trainers[member].local_update(params)
        if round_ == 1 and member == 0:
            first.append(float(update.double().norm()))
        return update

    hashes, params = run(folder / "run", update_of)
    initial = initial_state(genesis, configs[0]).params
    return hashes, params - initial, first[0]


def _single_thread(fn, *args):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


def test_the_replicated_path_reaches_the_pinned_state_hash_on_any_machine(tmp_path):
    hashes, _ = run(tmp_path, fixed_update)
    assert len(set(hashes)) == ROUNDS  # every round moved the state
    assert hashes[-1] == GOLDEN_STATE_HASH, hashes


def test_a_trained_run_is_repeatable_and_keeps_its_pinned_behaviour(tmp_path):
    hashes, moved, first_norm = _single_thread(trained_run, tmp_path / "a")
    again, _, _ = _single_thread(trained_run, tmp_path / "b")
    assert again == hashes  # the same machine, the same bits
    assert len(set(hashes)) == ROUNDS
    movement = float(moved.double().norm())
    assert math.isclose(first_norm, TRAINED_FIRST_UPDATE_NORM, rel_tol=TOLERANCE), first_norm
    assert math.isclose(movement, TRAINED_MOVEMENT_NORM, rel_tol=TOLERANCE), movement
