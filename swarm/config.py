"""A node's YAML config and the swarm's genesis, validated at load.

The genesis holds everything that must be equal on every node for the replicated state to be equal: the
members, the model and its seed, the aggregation rule and the server optimizer. The node config holds what is
a node's own business: its key, addresses, data, local training, compression and timeouts. Relative paths in
a file are taken relative to that file's folder, so a cluster folder can be moved as a whole.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crypto.peer_id import PeerIdError, public_key_from_peer_id
from swarm.config_schema import ConfigError, build

DATASETS = ("mnist5k", "digits", "synthetic", "stdlib")
MODELS = ("mlp", "cnn")
RULES = ("mean", "krum", "multikrum", "median", "trimmed_mean", "bulyan", "centered_clipping")
WEIGHTABLE_RULES = ("mean", "krum", "multikrum", "median", "trimmed_mean")
COMPRESSIONS = ("none", "fp16", "int8", "topk", "topk_int8")


@dataclass
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = field(default=0, metadata={"min": 0, "max": 65535})
    token: str | None = None
    # What API clients can hold of a node (swarm/ops/api.py): open connections (one more is answered 503 and
    # closed), requests being answered at once (one more: 503), of which reading the commit log (built in a worker
    # thread, never on the consensus loop), seconds a client has to send its request line and headers, and to send
    # a body it announced (the API reads none), and seconds a request may take before it is answered 503.
    max_connections: int = field(default=64, metadata={"min": 1, "max": 4096})
    max_requests: int = field(default=32, metadata={"min": 1, "max": 4096})
    max_heavy_requests: int = field(default=2, metadata={"min": 1, "max": 64})
    header_timeout_s: float = field(default=5.0, metadata={"min": 0.1, "max": 600.0})
    body_timeout_s: float = field(default=1.0, metadata={"min": 0.0, "max": 600.0})
    request_timeout_s: float = field(default=30.0, metadata={"min": 0.1, "max": 3600.0})


@dataclass
class DatasetConfig:
    name: str = field(default="mnist5k", metadata={"choices": DATASETS})
    custom: str | None = None           # "module:function" returning a dataset; overrides name
    # "none": train on everything this node loads (the default for a user's dataset); "iid" / "dirichlet": keep
    # this node's share of a dataset every member loads whole (simulations; the default for a built-in one)
    partition: str | None = field(default=None, metadata={"choices": ("none", "iid", "dirichlet")})
    alpha: float = field(default=0.5, metadata={"min": 1e-3})


@dataclass
class TrainingConfig:
    batch_size: int = field(default=64, metadata={"min": 1, "max": 65536})
    # The inner (local) optimizer; each setting left out takes the task's default (classification: SGD, lr 0.2;
    # lm: AdamW, lr 1e-3, warmup, clipping). Its state stays on this node and never enters the replicated state.
    lr: float | None = field(default=None, metadata={"min": 0.0})
    optimizer: str | None = field(default=None, metadata={"choices": ("sgd", "adamw")})
    weight_decay: float | None = field(default=None, metadata={"min": 0.0})
    warmup_steps: int | None = field(default=None, metadata={"min": 0})
    decay_steps: int | None = field(default=None, metadata={"min": 0})      # cosine decay length; 0 = constant
    min_lr_ratio: float | None = field(default=None, metadata={"min": 0.0, "max": 1.0})
    grad_clip: float | None = field(default=None, metadata={"min": 0.0})    # max global grad norm; 0 = off
    grad_accum: int | None = field(default=None, metadata={"min": 1, "max": 4096})
    local_steps: int = field(default=10, metadata={"min": 1, "max": 10000})
    prox_mu: float = field(default=0.0, metadata={"min": 0.0})
    device: str = "auto"
    # Local training's forward pass and loss in "bf16" (torch.autocast with bfloat16 on the training device: CUDA,
    # or the CPU) or "fp32". Parameters, optimizer state and the signed update stay float32; local like the rest
    # of this section: members may differ, the replicated state is float64 on the CPU either way.
    precision: str = field(default="fp32", metadata={"choices": ("fp32", "bf16")})
    # Evaluate the committed model on the test split every this many rounds (and at max_rounds); 0 = never. For
    # people watching: it costs a forward pass over the test set and never touches the replicated state.
    eval_every: int = field(default=1, metadata={"min": 0})
    # Train the next round on the parameters this node's own aggregate gives while the current round is being
    # agreed on; used only if the commit yields those very parameters (it nearly always does). Worth it when the
    # node has cores to itself; off by default because nodes sharing cores (a local cluster) lost time with it.
    train_ahead: bool = False
    # Local training as a torch.distributed group of this many worker processes (DDP; gloo on CPU, NCCL with one
    # GPU per worker) that together produce the node's one update on the same total batch_size (a multiple of it).
    # Local only, like the rest of this section: the genesis and the replicated state do not depend on it.
    workers: int = field(default=1, metadata={"min": 1, "max": 64})
    # A round of the worker group that takes longer than this is a failed local round (the group is restarted).
    worker_timeout_s: float = field(default=600.0, metadata={"min": 1.0, "max": 86400.0})


@dataclass
class CompressionConfig:
    scheme: str = field(default="fp16", metadata={"choices": COMPRESSIONS})
    ratio: float = field(default=0.01, metadata={"min": 1e-6, "max": 1.0})
    error_feedback: bool = True


@dataclass
class ConsensusConfig:
    heartbeat_s: float = field(default=0.3, metadata={"min": 0.01, "max": 60.0})
    election_timeout_s: float = field(default=2.0, metadata={"min": 0.05, "max": 600.0})
    collection_timeout_s: float = field(default=3.0, metadata={"min": 0.05, "max": 3600.0})
    # The longest any consensus timeout may grow to (round, leader silence, election). Unset: derived from the model
    # (swarm/node/limits.py: at least 120 s, and twice the time to fetch the largest payload at a slow link's rate),
    # so that a large model's rounds are not cut short forever. A value too short to fetch one update is refused.
    max_timeout_s: float | None = field(default=None, metadata={"min": 1.0, "max": 86400.0})
    snapshot_every: int = field(default=10, metadata={"min": 1})
    # Committed entries the consensus core keeps in memory to serve catch-up; older ones are read from the store.
    memory_rounds: int = field(default=256, metadata={"min": 1})
    # Disk retention (0 = keep everything, e.g. for audits): the newest snapshot files kept, and the rounds of
    # gradient payload files kept (never those a restart replays after the newest snapshot). Chain rows stay.
    keep_snapshots: int = field(default=3, metadata={"min": 0})
    keep_payload_rounds: int = field(default=256, metadata={"min": 0})


@dataclass
class TransportConfig:
    max_payload_bytes: int = field(default=64 << 20, metadata={"min": 1024, "max": 1 << 30})
    dial_backoff_max_s: float = field(default=5.0, metadata={"min": 0.1})
    peer_timeout_s: float = field(default=2.0, metadata={"min": 0.1})
    # Inbound control messages per peer and second past a burst; more are dropped as flooding (swarm/transport/rate_limit.py).
    # The burst is what a sender's outbound queue holds (swarm/transport/control.py): the backlog an honest peer
    # delivers at once after a partition heals must never count as a flood.
    control_messages_per_s: float = field(default=200.0, metadata={"min": 1.0})
    control_burst: int = field(default=4096, metadata={"min": 1})
    # Fetches served per peer and second past a burst (swarm/transport/engine.py): a lagging node replays a few
    # payloads a round, so the burst covers a catch-up of about a hundred rounds at full speed; past it, fetches
    # are refused (a catch-up slows down) but not punished.
    fetches_per_s: float = field(default=50.0, metadata={"min": 1.0})
    fetch_burst: int = field(default=512, metadata={"min": 1})


@dataclass
class FaultInjectionConfig:
    """Test-only faults that an honest node cannot otherwise be made to show.

    ``diverge_at_round``: when this node applies that committed round, its result is off by one ulp in one
    parameter, as on a machine whose arithmetic differs. The node must notice (the certificate signs another state
    hash), say so, stop contributing and resync from a certified snapshot. 0 = off."""
    diverge_at_round: int = field(default=0, metadata={"min": 0})
    # ``slow_training``: local training takes this many times as long (the node sleeps for the extra time after
    # each local update), as on a slower machine; for the straggler bench and tests. 1 = off.
    slow_training: float = field(default=1.0, metadata={"min": 1.0, "max": 100.0})


@dataclass
class PrivacyOverride:
    """A node's own, stricter differential-privacy settings (swarm/training/privacy.py): each key left out takes
    the genesis value; one looser than the genesis (a smaller noise_multiplier, a larger clip_norm, delta or
    epsilon_budget) is refused at start naming the key."""
    clip_norm: float | None = field(default=None, metadata={"min": 1e-6, "max": 1e6})
    noise_multiplier: float | None = field(default=None, metadata={"min": 0.1, "max": 1000.0})
    delta: float | None = field(default=None, metadata={"min": 1e-15, "max": 0.01})
    epsilon_budget: float | None = field(default=None, metadata={"min": 1e-3, "max": 1000.0})


@dataclass
class NodeConfig:
    identity: str
    genesis: str
    listen: str = "/ip4/127.0.0.1/tcp/0"
    bootstrap: list[str] = field(default_factory=list)
    data_dir: str = "data"
    name: str | None = None
    api: ApiConfig = field(default_factory=ApiConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    attack: str | None = None           # an attack profile from swarm.faults.attacks, for tests and demos only
    fault_injection: FaultInjectionConfig = field(default_factory=FaultInjectionConfig)
    privacy: PrivacyOverride = field(default_factory=PrivacyOverride)
    # Torch intra-op threads for training and aggregation; None = torch's default (every core). Several nodes on one
    # machine should split the cores (`swarm cluster up` does): oversubscribed OpenMP threads spin and stall.
    torch_threads: int | None = field(default=None, metadata={"min": 1})
    max_rounds: int | None = field(default=None, metadata={"min": 1})
    log_level: str = field(default="INFO", metadata={"choices": ("DEBUG", "INFO", "WARNING", "ERROR")})


@dataclass
class Member:
    name: str
    peer_id: str


@dataclass
class ModelSpec:
    name: str = field(default="mlp", metadata={"choices": MODELS})
    custom: str | None = None           # "module:function" returning a torch.nn.Module; overrides name
    seed: int = 0
    # What is trained (swarm/training/tasks/): a built-in task ("classification", the default, whose network is
    # name/custom above; "lm") or a user's "module:Class", and its hyper-parameters, which decide the model's shape
    # on every member. ``parameters`` > 0: the model must have exactly this many (checked at start).
    task: str | None = field(default=None, metadata={"omit_default": True})
    options: dict[str, Any] = field(default_factory=dict, metadata={"omit_default": True})
    parameters: int = field(default=0, metadata={"min": 0, "omit_default": True})


@dataclass
class AggregationSpec:
    rule: str = field(default="median", metadata={"choices": RULES})
    reputation_weighted: bool = False   # weight rows by reputation (rules that take weights); off: it decides who is in
    nnm: bool = False
    reputation_floor: float = field(default=0.6, metadata={"min": 0.0, "max": 1.0})
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ServerOptimizerSpec:
    lr: float = field(default=1.0, metadata={"min": 0.0})
    momentum: float = field(default=0.0, metadata={"min": 0.0, "max": 0.999})
    # Nesterov momentum for the outer step (DiLoCo: lr 0.7, momentum 0.9, nesterov true over AdamW inner steps)
    nesterov: bool = field(default=False, metadata={"omit_default": True})


@dataclass
class PrivacySpec:
    """Local differential privacy at the update (swarm/training/privacy.py), equal on every member: each node
    clips its update to L2 norm ``clip_norm`` (C) and adds Gaussian noise of standard deviation
    ``noise_multiplier * clip_norm`` before compressing and signing it, accounts the privacy it spent for its own
    records (epsilon at ``delta``, Opacus' RDP accountant) and stops contributing before ``epsilon_budget`` would be
    exceeded. Local only: the replicated state never depends on it (the noise is each node's own)."""
    enabled: bool = False
    clip_norm: float = field(default=1.0, metadata={"min": 1e-6, "max": 1e6})
    noise_multiplier: float = field(default=1.0, metadata={"min": 0.1, "max": 1000.0})
    delta: float = field(default=1e-5, metadata={"min": 1e-15, "max": 0.01})
    epsilon_budget: float = field(default=8.0, metadata={"min": 1e-3, "max": 1000.0})


@dataclass
class StalenessSpec:
    """Late updates kept, within a bound (swarm/ledger/staleness.py): a member's signed update for round r - s that
    missed its round may enter the entry of round r, for 1 <= s <= ``bound``, scaled by ``decay`` ** s. 0 = off
    (an update that misses its round is dropped, as before). At most 8: gradient-equivocation evidence for a round
    is valid in entries up to 8 rounds later (ledger/entry_rules.py GRADIENT_EVIDENCE_ROUNDS), and the pool, which
    catches it, keeps a late round that long."""
    bound: int = field(default=0, metadata={"min": 0, "max": 8})
    decay: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})


@dataclass
class Genesis:
    swarm_id: str
    members: list[Member]
    model: ModelSpec = field(default_factory=ModelSpec)
    aggregation: AggregationSpec = field(default_factory=AggregationSpec)
    server_optimizer: ServerOptimizerSpec = field(default_factory=ServerOptimizerSpec)
    # left out of the written (hashed) genesis while off: genesis files written before it keep their hash
    privacy: PrivacySpec = field(default_factory=PrivacySpec, metadata={"omit_default": True})
    staleness: StalenessSpec = field(default_factory=StalenessSpec, metadata={"omit_default": True})

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def f(self) -> int:
        """Byzantine nodes tolerated: n = 3f+1 at best."""
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        """Votes that make a certificate: (n + f) // 2 + 1, which is 2f+1 when n = 3f+1 and keeps any two quorums
        overlapping in an honest member for other sizes too (n = 2 or 3 need 2 votes, n = 5 needs 4)."""
        return (self.n + self.f) // 2 + 1

    @property
    def peer_ids(self) -> list[str]:
        return [m.peer_id for m in self.members]

    def name_of(self, peer_id: str) -> str:
        return next((m.name for m in self.members if m.peer_id == peer_id), peer_id[:12])

    def index_of(self, peer_id: str) -> int:
        return self.peer_ids.index(peer_id)

    def data_index(self, peer_id: str) -> int:
        """Which of the n shards a simulated partition (iid, dirichlet) gives this node: its genesis position; a
        member added later (swarm/ledger/membership.py) shares a shard, picked from its peer id."""
        if peer_id in self.peer_ids:
            return self.index_of(peer_id)
        return int.from_bytes(hashlib.sha256(peer_id.encode()).digest()[:8], "big") % self.n


MAX_CONFIG_BYTES = 1 << 20   # a node config or genesis is a few KB; a bigger file is refused unread


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (``*name``): a config never needs them, and a few hundred bytes of nested
    aliases expand to gigabytes (the "billion laughs") in anything that walks or prints the value."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a swarm config",
                                              event.start_mark)
        return super().compose_node(parent, index)


def parse_yaml(text: str) -> Any:
    """Parse config YAML safely: plain data only, no aliases; raises yaml.YAMLError (or RecursionError for absurd
    nesting)."""
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(str(path), "", f"larger than {MAX_CONFIG_BYTES} bytes: not a swarm config")
    try:
        return parse_yaml(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(path), "", "not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"not valid YAML: {str(exc)[:300]}") from None
    except RecursionError:
        raise ConfigError(str(path), "", "not valid YAML: nested too deeply") from None


def _resolve(base: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path))


def load_node_config(path: str | Path, check_secrets: bool = True) -> NodeConfig:
    """Load and check a node config. A config holding an API token must be private to its owner (mode 0600) and
    the token strong (``check_token``); ``check_secrets=False`` skips both, for tools that never use the token
    (an offline audit)."""
    path = Path(path)
    config = build(NodeConfig, _read_yaml(path), str(path))
    base = path.resolve().parent
    config.identity = _resolve(base, config.identity)
    config.genesis = _resolve(base, config.genesis)
    config.data_dir = _resolve(base, config.data_dir)
    if not config.listen.startswith("/ip4/") or "/tcp/" not in config.listen:
        raise ConfigError(str(path), "listen", f"expected a multiaddr like /ip4/127.0.0.1/tcp/9000, got {config.listen!r}")
    for i, addr in enumerate(config.bootstrap):
        if "/p2p/" not in addr:
            raise ConfigError(str(path), f"bootstrap[{i}]", f"expected a multiaddr ending in /p2p/<peer id>, got {addr!r}")
    if config.api.host not in ("127.0.0.1", "localhost", "::1") and not config.api.token:
        raise ConfigError(str(path), "api.token", "required when the API is bound beyond loopback")
    if config.api.token is not None and check_secrets:
        check_token(config.api.token, str(path))
        check_private(path, "api.token")
    return config


MIN_TOKEN_CHARS = 16
MIN_TOKEN_DISTINCT = 8


def check_token(token: str, source: str) -> None:
    """A bearer token worth the name: at least MIN_TOKEN_CHARS characters, no surrounding blanks, and not one or
    two characters repeated (``secrets.token_urlsafe(32)``, what `swarm cluster init` writes, passes)."""
    if token != token.strip() or len(token) < MIN_TOKEN_CHARS or len(set(token)) < MIN_TOKEN_DISTINCT:
        raise ConfigError(source, "api.token",
                          f"too weak: use at least {MIN_TOKEN_CHARS} characters, {MIN_TOKEN_DISTINCT} of them "
                          f"different, no blanks around it (e.g. python -c 'import secrets; "
                          f"print(secrets.token_urlsafe(32))')")


def check_private(path: Path, key: str) -> None:
    """A file holding a secret must not be readable or writable by anyone but its owner (like ssh's keys)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot stat: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigError(str(path), key, f"this file holds a secret but its mode is {stat.S_IMODE(mode):04o}: "
                                          f"others can read it; run chmod 600 {path}")


def load_genesis(path: str | Path) -> Genesis:
    path = Path(path)
    genesis = build(Genesis, _read_yaml(path), str(path))
    validate_genesis(genesis, str(path))
    return genesis


def _check_rule_options(aggregation: AggregationSpec, source: str) -> None:
    """The rule's options, refused at start with the key: otherwise a bad one (an unknown key, a negative tau)
    would pass every check and fail every round's aggregation on every member. Tried once on a small stack."""
    import inspect

    import torch

    from swarm.aggregation import RULES as FUNCTIONS, aggregate

    if not isinstance(aggregation.options, dict):
        raise ConfigError(source, "aggregation.options", "expected a mapping of option names to values")
    accepted = set(list(inspect.signature(FUNCTIONS[aggregation.rule]).parameters)[3:])  # after vectors, f, weights
    for key in aggregation.options:
        if key not in accepted:
            raise ConfigError(source, f"aggregation.options.{key}",
                              f"rule {aggregation.rule} takes {', '.join(sorted(accepted)) or 'no options'}")
    trial = torch.arange(21, dtype=torch.float32).reshape(7, 3)
    try:
        aggregate(aggregation.rule, trial, 1, nnm=aggregation.nnm, **aggregation.options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(source, "aggregation.options", str(exc)) from None


def validate_genesis(genesis: Genesis, source: str) -> None:
    if not genesis.swarm_id or len(genesis.swarm_id.encode()) > 64:
        raise ConfigError(source, "swarm_id", "expected a non-empty string of at most 64 bytes")
    if not genesis.members:
        raise ConfigError(source, "members", "a swarm needs at least one member")
    aggregation = genesis.aggregation
    if aggregation.reputation_weighted and aggregation.rule not in WEIGHTABLE_RULES:
        raise ConfigError(source, "aggregation.reputation_weighted",
                          f"rule {aggregation.rule} takes no weights; set it to false or use one of "
                          f"{', '.join(WEIGHTABLE_RULES)}")
    _check_rule_options(aggregation, source)
    seen_ids, seen_names = set(), set()
    for i, member in enumerate(genesis.members):
        try:
            public_key_from_peer_id(member.peer_id)
        except PeerIdError as exc:
            raise ConfigError(source, f"members[{i}].peer_id", str(exc)) from None
        if member.peer_id in seen_ids:
            raise ConfigError(source, f"members[{i}].peer_id", "duplicate peer id")
        if member.name in seen_names:
            raise ConfigError(source, f"members[{i}].name", "duplicate name")
        seen_ids.add(member.peer_id)
        seen_names.add(member.name)
    if genesis.staleness.bound and not genesis.staleness.decay > 0.0:
        raise ConfigError(source, "staleness.decay", "must be > 0 when staleness.bound is set (0 would keep late "
                                                     "updates with no weight at all)")
    if genesis.server_optimizer.nesterov and genesis.server_optimizer.momentum == 0.0:
        raise ConfigError(source, "server_optimizer.nesterov", "needs server_optimizer.momentum > 0")
    model = genesis.model
    if model.task not in (None, "classification") and (model.custom or model.name != "mlp"):
        raise ConfigError(source, "model.name" if not model.custom else "model.custom",
                          f"only the classification task takes a network here; task {model.task!r} builds its "
                          f"own model from model.options")


def genesis_to_dict(genesis: Genesis) -> dict[str, Any]:
    """The genesis as plain data (what is written and hashed). Fields marked ``omit_default`` are left out while
    they hold their default, so a genesis written before they existed keeps its hash (and state_0 its parent)."""
    return _plain(genesis)


def _plain(value: Any) -> Any:
    from dataclasses import MISSING, fields, is_dataclass
    if is_dataclass(value) and not isinstance(value, type):
        out = {}
        for spec in fields(value):
            item = getattr(value, spec.name)
            if spec.metadata.get("omit_default"):
                default = spec.default_factory() if spec.default_factory is not MISSING else spec.default
                if item == default:
                    continue
            out[spec.name] = _plain(item)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def write_yaml(path: str | Path, data: dict[str, Any], private: bool | None = None) -> None:
    """Write ``data`` as YAML, atomically (a temp file beside it, then a rename): a reader sees the old file or the
    new one, never half of one. ``private`` (default: the data holds an API token) creates it mode 0600 from the
    first byte, so a secret is never readable by others, not even for a moment."""
    path = Path(path)
    if private is None:
        api = data.get("api") if isinstance(data, dict) else None
        private = isinstance(api, dict) and api.get("token") is not None
    text = yaml.safe_dump(data, sort_keys=False).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
