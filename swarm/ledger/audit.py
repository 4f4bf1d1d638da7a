"""Offline audit of a node's store: is every committed round certified, linked and reproducible from the genesis?

Trusts nothing in the store. For each committed round it checks the entry against its stored digest, the commit
certificate's signatures against the genesis members (2f+1 distinct valid signers), the parent link to the previous
state hash (round 1: the genesis state), and re-derives the state hash by replaying the stored gradient envelopes
from state_0; where envelopes are missing, a snapshot file whose hash a certificate signs lets the replay resume.
Every failure names its round and check, so an operator knows where a store went wrong.
"""
from __future__ import annotations

import hashlib
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

from consensus.messages import commit_cert_from_plain, entry_from_plain
from crypto.wire import DecodeError
from swarm.config import Genesis, NodeConfig
from swarm.ledger.apply import InvalidEntry, apply
from swarm.ledger.entry_rules import entry_extras, initial_state, open_gradient, rules_of, valid_commit_signers
from swarm.ledger.state import ReplicatedState
from swarm.ledger.store import ChainRow, Store


@dataclass(frozen=True)
class Finding:
    round: int          # 0: the store as a whole
    check: str          # entry, digest, certificate, quorum, parent, gradient, replay, snapshot, chain
    detail: str

    def __str__(self) -> str:
        where = f"round {self.round}" if self.round else "store"
        return f"{where}: {self.check}: {self.detail}"


@dataclass
class AuditReport:
    rounds: int = 0
    replayed: int = 0
    from_snapshot: list[int] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings and self.rounds > 0


def audit_store(data_dir: Path, genesis: Genesis, config: NodeConfig) -> AuditReport:
    """Audit the store in ``data_dir`` (opened read-only: an audit never writes to what it inspects)."""
    if not (data_dir / "node.sqlite").exists():
        raise FileNotFoundError(f"no node store (node.sqlite) in {data_dir}")
    store = _ReadOnlyStore(data_dir)
    try:
        return _audit(store, genesis, config)
    finally:
        store.close()


def _audit(store: "_ReadOnlyStore", genesis: Genesis, config: NodeConfig) -> AuditReport:
    rows = list(store.rows())
    snapshots = {h: store.snapshot_path(h) for h in store.snapshot_hashes()}
    report = AuditReport(rounds=len(rows))
    if not rows:
        report.findings.append(Finding(0, "chain", "no committed rounds in the store"))
        return report
    state: ReplicatedState | None = initial_state(genesis, config)
    rules = rules_of(genesis)
    dim = state.params.numel()
    max_size = config.transport.max_payload_bytes
    previous: ChainRow | None = None
    expected_parent = state.hash
    for row in rows:
        problems = _check_row(row, genesis, previous, expected_parent)
        report.findings.extend(problems)
        if state is None or state.round != row.round - 1:
            state = _certified_snapshot(snapshots.get(row.state_hash), row, dim, genesis)
            if state is not None:
                report.from_snapshot.append(row.round)
        elif not any(p.check in ("entry", "digest") for p in problems):
            state, finding = _replay(state, row, previous, genesis, rules, dim, max_size, store.gradient_envelope)
            if finding is not None:
                report.findings.append(finding)
                state = _certified_snapshot(snapshots.get(row.state_hash), row, dim, genesis)
                if state is not None:
                    report.from_snapshot.append(row.round)
            else:
                report.replayed += 1
        else:
            state = None
        previous, expected_parent = row, row.state_hash
    report.findings.extend(_check_snapshot_files(snapshots, {row.state_hash: row.round for row in rows}))
    return report


class _ReadOnlyStore(Store):
    """The node's Store over a read-only SQLite connection (no schema creation, no WAL checkpoint writes)."""

    def __init__(self, data_dir: Path):  # not super().__init__: that creates tables and folders
        self.dir = Path(data_dir)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(f"file:{self.dir / 'node.sqlite'}?mode=ro", uri=True, check_same_thread=False)

    def snapshot_hashes(self) -> list[bytes]:
        with self._lock:
            return [h for (h,) in self._db.execute("SELECT state_hash FROM snapshots ORDER BY round")]


def _check_row(row: ChainRow, genesis: Genesis, previous: ChainRow | None, expected_parent: bytes) -> list[Finding]:
    findings = []
    r = row.round
    if previous is None and r != 1:
        findings.append(Finding(r, "chain", f"the chain starts at round {r}, not 1"))
    elif previous is not None and r != previous.round + 1:
        findings.append(Finding(r, "chain", f"round {previous.round} is followed by round {r}"))
    try:
        entry = entry_from_plain(row.entry)
    except DecodeError as exc:
        return findings + [Finding(r, "entry", f"entry does not decode: {exc}")]
    if entry.digest() != row.digest:
        findings.append(Finding(r, "digest", "the entry's digest differs from the stored digest"))
    if entry.round != r or entry.state_hash != row.state_hash:
        findings.append(Finding(r, "entry", "the entry's round or state hash differs from the stored row"))
    if entry.parent_state_hash != expected_parent:
        what = "the genesis state hash" if r == 1 else f"the state hash of round {r - 1}"
        findings.append(Finding(r, "parent", f"the entry's parent is not {what}"))
    findings.extend(_check_certificate(row, genesis))
    return findings


def _check_certificate(row: ChainRow, genesis: Genesis) -> list[Finding]:
    r = row.round
    try:
        cert = commit_cert_from_plain(row.certificate)
    except DecodeError as exc:
        return [Finding(r, "certificate", f"certificate does not decode: {exc}")]
    if cert.round != r or cert.digest != row.digest:
        return [Finding(r, "certificate", "the certificate is for another round or digest")]
    valid, problems = valid_commit_signers(genesis, row.certificate, r, row.digest)
    findings = [Finding(r, "certificate", p) for p in problems]
    if len(valid) < genesis.quorum:
        findings.append(Finding(r, "quorum", f"{len(valid)} distinct valid signers, {genesis.quorum} needed"))
    return findings


def _replay(state: ReplicatedState, row: ChainRow, previous: ChainRow | None, genesis: Genesis, rules,
            dim: int, max_size: int, stored_gradient) -> tuple[ReplicatedState | None, Finding | None]:
    """Apply the row's stored envelopes to ``state``; (next state, None) or (None, what went wrong)."""
    r = row.round
    entry = row.entry
    gradients = []
    for digest in entry["gradients"]:
        raw = stored_gradient(digest)
        if raw is None:
            return None, Finding(r, "replay", f"gradient {digest.hex()[:12]} is not in the store")
        if hashlib.sha256(raw).digest() != digest:
            return None, Finding(r, "gradient", f"stored gradient {digest.hex()[:12]} does not match its digest")
        try:
            gradients.append(open_gradient(raw, genesis, dim, max_size, r, state.hash))
        except DecodeError as exc:
            return None, Finding(r, "gradient", f"gradient {digest.hex()[:12]} fails verification: {exc}")
    try:
        extras = entry_extras(genesis, dict(entry["params"]), r, previous.digest if previous else None)
        applied = apply(state, gradients, rules, *extras)
    except InvalidEntry as exc:
        return None, Finding(r, "replay", f"the entry cannot be applied: {exc}")
    if applied.state.hash != row.state_hash:
        return None, Finding(r, "replay", "replaying the entry gives another state hash than the certified one")
    return applied.state, None


def _certified_snapshot(path: Path | None, row: ChainRow, dim: int, genesis: Genesis) -> ReplicatedState | None:
    """The state of ``row`` from its snapshot file, only if the file hashes to the certified state hash."""
    if path is None or not path.exists():
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).digest() != row.state_hash:
        return None
    try:
        state = ReplicatedState.deserialize(data, dim, genesis.peer_ids)
    except DecodeError:
        return None
    return state if state.round == row.round else None


def _check_snapshot_files(snapshots: dict[bytes, Path], certified: dict[bytes, int]) -> list[Finding]:
    findings = []
    for state_hash, path in snapshots.items():
        if not path.exists():
            continue  # a node may prune old snapshots; only a present file can lie
        if state_hash not in certified:
            findings.append(Finding(0, "snapshot", f"{path.name} is not a certified state"))
        elif hashlib.sha256(path.read_bytes()).digest() != state_hash:
            findings.append(Finding(certified[state_hash], "snapshot", f"{path.name} does not hash to its name"))
    return findings
