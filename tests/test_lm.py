"""The built-in language-model task (issue 16, step 4) and the DiLoCo outer step (step 5): inner AdamW on the
node, outer Nesterov SGD in the replicated state."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crypto.keys import NodeKey
from swarm.config import ConfigError, Genesis, Member, NodeConfig, validate_genesis
from swarm.ledger.entry_rules import rules_of
from swarm.ledger.server_optimizer import apply_update
from swarm.training.build import build_trainer, initial_parameters
from swarm.training.tasks import TaskError, make_task
from swarm.training.tasks.lm import IID_BLOCK, iid_share, stdlib_corpus
from swarm.training.trainer import build_task_model

SMALL = {"layers": 1, "width": 32, "heads": 2, "context": 32, "corpus_bytes": 300_000, "validation_bytes": 8_192}


def _genesis(n=4, **options) -> Genesis:
    genesis = Genesis(swarm_id="lm", members=[Member(f"n{i}", NodeKey.from_seed(bytes([i + 7]) * 32).peer_id)
                                              for i in range(n)])
    genesis.model.task, genesis.model.options = "lm", {**SMALL, **options}
    return genesis


def _config(**training) -> NodeConfig:
    config = NodeConfig(identity="", genesis="", data_dir="")
    config.training.device = "cpu"
    config.training.batch_size = 8
    for key, value in training.items():
        setattr(config.training, key, value)
    return config


def test_the_default_model_has_about_a_million_parameters_and_no_buffers():
    task = make_task("lm")
    model = build_task_model(task, seed=0)
    count = sum(p.numel() for p in model.parameters())
    assert 900_000 < count < 1_200_000, count
    assert not list(model.buffers())
    again = build_task_model(make_task("lm"), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    big = make_task("lm", {"layers": 8, "width": 512, "heads": 8, "context": 256})
    assert sum(p.numel() for p in build_task_model(big, 0).parameters()) > 25_000_000


def test_the_model_is_causal():
    model = build_task_model(make_task("lm", SMALL), seed=1).eval()
    x = torch.randint(0, 256, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 256
    with torch.no_grad():
        assert torch.allclose(model(x)[0, :10], model(y)[0, :10], atol=1e-6)
        assert not torch.allclose(model(x)[0, 10:], model(y)[0, 10:])


def test_the_corpus_is_the_stdlib_fixed_and_the_validation_split_is_equal_on_every_node():
    corpus = stdlib_corpus(300_000)
    assert len(corpus) == 300_000 and corpus == stdlib_corpus(300_000)
    assert b"def " in corpus and b"import " in corpus
    genesis = _genesis()
    config = _config()
    config.dataset.partition = "iid"
    trainers = [build_trainer(config, genesis, genesis.peer_ids[i]) for i in range(4)]
    assert len({t.data.validation.tobytes() for t in trainers}) == 1
    assert len({t.data.train.tobytes() for t in trainers}) == 4
    assert sum(len(t.data.train) for t in trainers) == 300_000 - 8_192
    config.dataset.partition = None  # a built-in corpus: iid by default
    assert build_trainer(config, genesis, genesis.peer_ids[0]).data.train_size == trainers[0].data.train_size
    config.dataset.partition = "none"
    assert len(build_trainer(config, genesis, genesis.peer_ids[0]).data.train) == 300_000 - 8_192


def test_iid_shares_deal_blocks_over_the_whole_corpus():
    train = np.random.default_rng(0).integers(0, 256, 40 * IID_BLOCK + 123, dtype=np.uint8).tobytes()
    shares = [iid_share(train, i, 4) for i in range(4)]
    assert sum(map(len, shares)) == len(train)
    # dealt round-robin: block j of the corpus is block j // 4 of share j % 4, so every share spans the corpus
    blocks = [[s[k:k + IID_BLOCK] for k in range(0, len(s), IID_BLOCK)] for s in shares]
    assert b"".join(blocks[j % 4][j // 4] for j in range(41)) == train
    assert shares[3][-IID_BLOCK:] == train[39 * IID_BLOCK:40 * IID_BLOCK]
    small = train[:4_000]  # a small corpus: smaller blocks, still at least 8 per node and nothing lost
    parts = [iid_share(small, i, 4) for i in range(4)]
    assert sum(map(len, parts)) == len(small) and all(len(p) >= 8 * (4_000 // 32) for p in parts)
    assert parts[0][:125] == small[:125] and parts[0][125:250] == small[500:625]


def test_bad_lm_settings_are_refused_naming_the_key():
    for options, key in (({"heads": 3}, "model.options.heads"), ({"widht": 3}, "model.options.widht"),
                         ({"layers": 0}, "model.options.layers"), ({"context": 2.5}, "model.options.context")):
        with pytest.raises(TaskError) as info:
            initial_parameters(_config(), _genesis(**options))
        assert info.value.key == key, str(info.value)
    config = _config()
    config.dataset.name = "digits"
    with pytest.raises(TaskError, match="byte corpus") as info:
        build_trainer(config, _genesis(), _genesis().peer_ids[0])
    assert info.value.key == "dataset.name"
    config.dataset.name, config.dataset.partition = "stdlib", "dirichlet"
    with pytest.raises(TaskError) as info:
        build_trainer(config, _genesis(), _genesis().peer_ids[0])
    assert info.value.key == "dataset.partition"
    genesis = _genesis()
    genesis.model.name = "cnn"
    with pytest.raises(ConfigError, match="model.name"):
        validate_genesis(genesis, "genesis.yaml")


def test_inner_adamw_and_outer_nesterov_lower_the_validation_loss():
    """Four members, H = 8 AdamW steps each, the median of their pseudo-gradients, DiLoCo's outer step."""
    genesis = _genesis()
    genesis.server_optimizer.lr, genesis.server_optimizer.momentum, genesis.server_optimizer.nesterov = 0.7, 0.9, True
    rules = rules_of(genesis)
    assert rules.nesterov and rules.server_lr == 0.7
    config = _config(local_steps=8, lr=3e-3)
    config.dataset.partition = "iid"
    trainers = [build_trainer(config, genesis, pid) for pid in genesis.peer_ids]
    assert trainers[0].opt.name == "adamw" and trainers[0].opt.grad_clip == 1.0
    params, buf = trainers[0].initial_parameters(), None
    start = trainers[0].evaluate_metrics(params)
    for _ in range(6):
        updates = torch.stack([t.local_update(params) for t in trainers])
        params, buf = apply_update(params, updates.median(dim=0).values, rules.server_lr, rules.momentum, buf,
                                   rules.nesterov)
    end = trainers[0].evaluate_metrics(params)
    assert set(end) == {"loss", "bits_per_byte", "accuracy"}
    assert end["bits_per_byte"] == pytest.approx(end["loss"] / math.log(2))
    assert end["loss"] < start["loss"] - 0.5, (start, end)
    assert all(t._inner is not None for t in trainers)  # moments live in the trainers, not in the state


def test_nesterov_outer_step_matches_torch_sgd_in_float64():
    gen = torch.Generator().manual_seed(3)
    p, g1, g2 = (torch.randn(1000, generator=gen) for _ in range(3))
    ref = torch.nn.Parameter(p.double().clone())
    sgd = torch.optim.SGD([ref], lr=0.7, momentum=0.9, nesterov=True)
    new, buf = p, None
    for g in (g1, g2):
        ref.grad = g.double().clone()
        sgd.step()
        new, buf = apply_update(new, g, 0.7, 0.9, buf, nesterov=True)
        assert torch.allclose(new.double(), ref.detach(), atol=1e-5)
    # the first step is exact: p - lr * (g + m * g) in float64, cast once
    first, _ = apply_update(p, g1, 0.7, 0.9, None, nesterov=True)
    assert torch.equal(first, (p.double() - 0.7 * (g1.double() + 0.9 * g1.double())).float())
    plain, _ = apply_update(p, g1, 0.7, 0.9, None)
    assert not torch.equal(plain, first)
    assert torch.equal(apply_update(p, g1, 0.7, 0.0, None, nesterov=True)[0], apply_update(p, g1, 0.7, 0.0, None)[0])


def test_nesterov_is_thread_independent_and_needs_momentum():
    gen = torch.Generator().manual_seed(0)
    p, g, b = (torch.randn(200_003, generator=gen) for _ in range(3))
    before = torch.get_num_threads()
    try:
        out = set()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            new, buf = apply_update(p, g, 0.7, 0.9, b, nesterov=True)
            out.add(new.numpy().tobytes() + buf.numpy().tobytes())
    finally:
        torch.set_num_threads(before)
    assert len(out) == 1
    genesis = _genesis()
    genesis.server_optimizer.nesterov = True
    with pytest.raises(ConfigError, match="server_optimizer.nesterov"):
        validate_genesis(genesis, "genesis.yaml")
    assert not rules_of(Genesis(swarm_id="x", members=genesis.members)).nesterov
    assert np.isfinite(p.numpy()).all()


def test_cluster_init_with_task_lm_writes_the_task_the_outer_step_and_the_corpus(tmp_path):
    from cli.cluster import _options
    from cli.main import build_parser
    from swarm.config import load_genesis, load_node_config
    from swarm.ops.cluster import init_cluster
    args = build_parser().parse_args(["cluster", "init", "--dir", str(tmp_path), "--task", "lm",
                                      "--task-option", "layers=1", "--task-option", "width=32"])
    specs = init_cluster(tmp_path, _options(args))
    genesis = load_genesis(tmp_path / "genesis.yaml")
    assert genesis.model.task == "lm" and genesis.model.options["layers"] == 1 and genesis.model.options["width"] == 32
    assert (genesis.server_optimizer.lr, genesis.server_optimizer.momentum, genesis.server_optimizer.nesterov) == \
        (1.2, 0.0, False)  # measured closer to one process than FedAvg's lr 1 and DiLoCo's 0.7 / 0.9 at this scale
    config = load_node_config(specs[0].config_path)
    assert config.dataset.name == "stdlib" and config.training.lr is None and config.training.batch_size == 16
    trainer = build_trainer(config, genesis, genesis.peer_ids[0])
    assert trainer.opt.name == "adamw" and trainer.dimension == initial_parameters(config, genesis).numel()
