"""A golden run: four members with fixed keys train, compress, sign, verify and apply five rounds in process, and
the state hash at round 5 is pinned. Any change to the round's data path (local training, compression, the
gradient envelope, the receiver's checks, aggregation, reputation, the server optimizer, the state's canonical
bytes) that changes behaviour changes this hash. A real 4-process run is not deterministic (which gradients an
entry names depends on arrival times), so every entry here names all four gradients, as in a run where none is
late; the previous round's certificate is signed by every member.

Change GOLDEN_STATE_HASH only for an intended change of the replicated state, and say why in the commit."""
from __future__ import annotations

import torch

from crypto.keys import NodeKey, load_key, save_key
from swarm.config import load_genesis, load_node_config
from swarm.ledger.apply import apply
from swarm.ledger.entry_rules import initial_state, open_gradient, rules_of
from swarm.ops.cluster import ClusterOptions, init_cluster
from swarm.round.compression import Compressor
from swarm.round.gradient import make_gradient
from swarm.training.build import build_trainer

GOLDEN_STATE_HASH = "f01714b30268a79158263a65dd029cd7ef756ba7515558f95956f6bb659dbea3"
ROUNDS = 5


def run_golden(folder) -> tuple[list[str], str]:
    keys_dir = folder / "keys"
    for i in range(4):
        save_key(NodeKey.from_seed(bytes([i + 1]) * 32), keys_dir / f"node{i}.pem")
    specs = init_cluster(folder, ClusterOptions(nodes=4, swarm_id="golden", local_steps=3))
    configs = [load_node_config(spec.config_path) for spec in specs]
    genesis = load_genesis(configs[0].genesis)
    members = []
    for config in configs:
        key = load_key(config.identity)
        compressor = Compressor(config.compression.scheme, k=config.compression.ratio,
                                error_feedback=config.compression.error_feedback)
        members.append((key, build_trainer(config, genesis, key.peer_id), compressor))
    rules = rules_of(genesis)
    state = initial_state(genesis, configs[0])
    dim = state.params.numel()
    max_size = configs[0].transport.max_payload_bytes
    hashes = []
    for round_ in range(1, ROUNDS + 1):
        gradients = []
        for key, trainer, compressor in members:
            raw = make_gradient(key, genesis.swarm_id, round_, state.hash,
                                compressor.compress(trainer.local_update(state.params)))
            gradients.append(open_gradient(raw, genesis, dim, max_size, round_, state.hash))
        signers = frozenset(genesis.peer_ids) if round_ > 1 else None
        state = apply(state, gradients, rules, signers).state
        hashes.append(state.hash.hex())
    return hashes, state.hash.hex()


def test_a_fixed_seed_four_member_run_reaches_the_pinned_state_hash(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        hashes, final = run_golden(tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert len(set(hashes)) == ROUNDS  # every round moved the state
    assert final == GOLDEN_STATE_HASH, hashes
