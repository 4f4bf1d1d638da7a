"""Offline audit of a node's store: is every committed round certified, linked and reproducible from the genesis?

Trusts nothing in the store. For each committed round it checks the entry against its stored digest, the commit
certificate's signatures against the genesis members (2f+1 distinct valid signers), the parent link to the previous
state hash (round 1: the genesis state), and re-derives the state hash by replaying the stored gradient envelopes
from state_0; where envelopes are missing, a snapshot file whose hash a certificate signs lets the replay resume.
Every failure names its round and check, so an operator knows where a store went wrong.

An auditor never runs code the bundle it audits names: unless the caller trusts it (``trust_code``, `swarm verify
--config`), a custom model or dataset ("module:function") is not imported. state_0 is then unknown, so the audit
takes the model's size and its starting state from what the chain certifies: it replays from the oldest snapshot
file that hashes to a certified state hash, and the rounds before it are checked for certificates and links only
(``certificate_only``; round 1's parent, the genesis state, is not checked).

A node that ran past ``consensus.keep_payload_rounds`` deleted the gradient envelopes of its old rounds on purpose
(``payloads_pruned_through`` in its store): the audit then replays from the oldest certified snapshot it kept,
checks the earlier rounds for certificates and links only, and says so; a pruned payload is not a fault.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from consensus.configs import ConfigHistory
from consensus.messages import commit_cert_from_plain, entry_from_plain
from consensus.quorum import Membership
from crypto.wire import DecodeError
from swarm.config import Genesis, NodeConfig
from swarm.ledger.entry_rules import initial_state, valid_commit_signers
from swarm.ledger.replay import Replayer, StopReason
from swarm.ledger.restore import certified_snapshot, snapshot_dim
from swarm.ledger.state import ReplicatedState
from swarm.ledger.store import ChainRow, Store
from swarm.training.build import custom_code


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
    certificate_only: list[int] = field(default_factory=list)  # rounds checked for certificates and links only
    not_imported: list[str] = field(default_factory=list)      # custom code the bundle names, not run by the audit
    pruned_through: int = 0  # the node deleted the payloads of rounds up to this one (disk retention)

    @property
    def ok(self) -> bool:
        return not self.findings and self.rounds > 0


def audit_store(data_dir: Path, genesis: Genesis, config: NodeConfig, trust_code: bool = False) -> AuditReport:
    """Audit the store in ``data_dir`` (opened read-only: an audit never writes to what it inspects). A custom
    model or dataset the genesis or config names is imported only with ``trust_code`` (see the module docstring)."""
    store = Store(data_dir, read_only=True)
    try:
        return _audit(store, genesis, config, trust_code)
    finally:
        store.close()


# Which check a replay stop fails: the payload's own (``gradient``) or the replay of the round's entry.
_STOP_CHECKS = {StopReason.MISSING_PAYLOAD: "replay", StopReason.DAMAGED_PAYLOAD: "gradient",
                StopReason.INVALID_PAYLOAD: "gradient", StopReason.INVALID_ENTRY: "replay",
                StopReason.STATE_HASH_DIFFERS: "replay"}


def _audit(store: Store, genesis: Genesis, config: NodeConfig, trust_code: bool) -> AuditReport:
    rows = list(store.rows())
    snapshots = {h: store.snapshot_path(h) for _round, h in store.snapshots()}
    report = AuditReport(rounds=len(rows))
    if not rows:
        report.findings.append(Finding(0, "chain", "no committed rounds in the store"))
        return report
    report.not_imported = [] if trust_code else custom_code(config, genesis)
    if report.not_imported:  # state_0 would need the bundle's code: start from what the chain certifies
        state_0, dim = None, _certified_dim(rows, snapshots)
    else:
        state_0 = initial_state(genesis, config)
        dim = state_0.params.numel()
    replayable = set()  # rounds whose stored entry is the one their digest (and so their certificate) names
    previous: ChainRow | None = None
    configs = ConfigHistory(genesis.peer_ids)  # each round's certificate counts in the members in force then
    for row in rows:
        parent = previous.state_hash if previous else (state_0.hash if state_0 is not None else None)
        problems = _check_row(row, genesis, previous, parent, configs.at(row.round))
        report.findings.extend(problems)
        if not any(p.check in ("entry", "digest") for p in problems):
            replayable.add(row.round)
            members = row.entry.get("members") if isinstance(row.entry, dict) else None
            if members is not None:
                configs.add(row.round + 1, members)
        previous = row
    report.pruned_through = int(store.get_meta("payloads_pruned_through", 0) or 0)
    if dim is not None:
        replayer = Replayer(genesis, dim, config.transport.max_payload_bytes, store.gradient_envelope)
        start = None if report.pruned_through else state_0  # the first rounds' payloads were deleted on purpose
        _replay_chain(rows, replayable, start, replayer, snapshots, report)
    if state_0 is None or report.pruned_through:
        first = min(report.from_snapshot, default=None)
        report.certificate_only = [row.round for row in rows if first is None or row.round < first]
    report.findings.extend(_check_snapshot_files(snapshots, {row.state_hash: row.round for row in rows}))
    report.findings.sort(key=lambda finding: finding.round)
    return report


def _certified_dim(rows: list[ChainRow], snapshots: dict[bytes, Path]) -> int | None:
    """The model's size from the oldest snapshot file that is a certified state (hash checked before parsing)."""
    for row in rows:
        path = snapshots.get(row.state_hash)
        if path is None or not path.exists():
            continue
        try:
            dim = snapshot_dim(path.read_bytes(), row.state_hash)
        except OSError:
            continue
        if dim is not None:
            return dim
    return None


def _replay_chain(rows: list[ChainRow], replayable: set[int], state_0: ReplicatedState | None, replayer: Replayer,
                  snapshots: dict[bytes, Path], report: AuditReport) -> None:
    """Replay every run of replayable rows from state_0; where the chain cannot be replayed (a row that fails,
    a gap, an entry that is not the certified one), resume from the next certified snapshot file."""
    state: ReplicatedState | None = state_0
    i = 0
    while i < len(rows):
        row = rows[i]
        if state is None or state.round != row.round - 1:
            state = _resume_from_snapshot(snapshots, row, replayer, report)
            i += 1
            continue
        run = []
        for candidate in rows[i:]:
            if candidate.round not in replayable or candidate.round != row.round + len(run):  # a gap ends a run
                break
            run.append(candidate)
        if not run:  # the entry itself is not the certified one: nothing to replay it from
            state = None
            i += 1
            continue
        for step in replayer.replay(state, run, rows[i - 1].digest if i else None):
            i += 1
            if step.stop is not None:
                report.findings.append(Finding(step.stop.round, _STOP_CHECKS[step.stop.reason], step.stop.detail))
                state = _resume_from_snapshot(snapshots, step.row, replayer, report)
                break
            state = step.state
            report.replayed += 1


def _resume_from_snapshot(snapshots: dict[bytes, Path], row: ChainRow, replayer: Replayer,
                          report: AuditReport) -> ReplicatedState | None:
    state = _certified_snapshot(snapshots.get(row.state_hash), row, replayer.dim, replayer.genesis)
    if state is not None:
        report.from_snapshot.append(row.round)
    return state


def _check_row(row: ChainRow, genesis: Genesis, previous: ChainRow | None,
               expected_parent: bytes | None, config: Membership) -> list[Finding]:
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
    if expected_parent is not None and entry.parent_state_hash != expected_parent:  # None: state_0 unknown
        what = "the genesis state hash" if r == 1 else f"the state hash of round {r - 1}"
        findings.append(Finding(r, "parent", f"the entry's parent is not {what}"))
    findings.extend(_check_certificate(row, genesis, config))
    return findings


def _check_certificate(row: ChainRow, genesis: Genesis, config: Membership) -> list[Finding]:
    r = row.round
    try:
        cert = commit_cert_from_plain(row.certificate)
    except DecodeError as exc:
        return [Finding(r, "certificate", f"certificate does not decode: {exc}")]
    if cert.round != r or cert.digest != row.digest:
        return [Finding(r, "certificate", "the certificate is for another round or digest")]
    valid, problems = valid_commit_signers(genesis, row.certificate, r, row.digest, config.members)
    findings = [Finding(r, "certificate", p) for p in problems]
    if len(valid) < config.quorum:
        findings.append(Finding(r, "quorum", f"{len(valid)} distinct valid signers, {config.quorum} needed"))
    return findings


def _certified_snapshot(path: Path | None, row: ChainRow, dim: int, genesis: Genesis) -> ReplicatedState | None:
    """The state of ``row`` from its snapshot file, only if the file hashes to the certified state hash."""
    if path is None or not path.exists():
        return None
    try:
        return certified_snapshot(path.read_bytes(), row.state_hash, dim, None)
    except (DecodeError, OSError):  # hashed before it is parsed: a crafted file is only "not certified"
        return None


def _check_snapshot_files(snapshots: dict[bytes, Path], certified: dict[bytes, int]) -> list[Finding]:
    findings = []
    for state_hash, path in snapshots.items():
        if not path.exists():
            continue  # a node may prune old snapshots; only a present file can lie
        if state_hash not in certified:
            findings.append(Finding(0, "snapshot", f"{path.name} is not a certified state"))
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:  # a damaged disk is named like any other fault, not raised
            findings.append(Finding(certified[state_hash], "snapshot", f"{path.name} cannot be read: {exc.strerror}"))
            continue
        if hashlib.sha256(data).digest() != state_hash:
            findings.append(Finding(certified[state_hash], "snapshot", f"{path.name} does not hash to its name"))
    return findings
