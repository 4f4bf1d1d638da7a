"""Safety invariants, checked incrementally as the simulator executes each action of honest nodes.

Every check is O(1) per action so that it can run after every step of thousands of seeds."""
from __future__ import annotations

from ..configs import ConfigHistory
from ..messages import Commit, NewTerm, PrePrepare, Prepare, RequestVote, Timeout, Vote
from ..state import HardState


class Violation(AssertionError):
    pass


class Invariants:
    def __init__(self, genesis: list[str] = (), quorum_override: int | None = None):
        # The configurations as committed (round by round, in order), to count every certificate in its own.
        self.configs = ConfigHistory(genesis, quorum_override) if genesis else None
        self.committed: dict[int, tuple[bytes, int]] = {}  # round -> (digest, term of the commit certificate)
        self.state_hash: dict[int, bytes] = {}
        self.leader_of_term: dict[int, str] = {}
        self.vote_of: dict[tuple[str, int], str] = {}
        self.prepare_of: dict[tuple[str, int, int], bytes] = {}
        self.honest_proposals: dict[int, list[tuple[int, bytes, str]]] = {}  # round -> [(term, digest, leader)]
        self.durable_rounds: dict[str, int] = {}
        self.violations: list[str] = []

    def fail(self, text: str) -> None:
        self.violations.append(text)
        raise Violation(text)

    # --------------------------------------------------------------------------- persistence
    def persisted_hard(self, node: str, old: HardState, new: HardState) -> None:
        if not new.not_older_than(old):
            self.fail(f"monotonic durable state: {node} wrote {new} after {old}")

    def persisted_entry(self, node: str, chain_len_before: int, ce) -> None:
        rnd = ce.entry.round
        if rnd != chain_len_before + 1:
            self.fail(f"durable chain: {node} appended round {rnd} after {chain_len_before} rounds")
        digest = ce.entry.digest()
        if ce.cert.digest != digest or ce.cert.round != rnd:
            self.fail(f"agreement: {node} stored round {rnd} with a certificate for another entry")
        known = self.committed.get(rnd)
        if known is None or known[0] == digest:
            self._certified_in_force(node, ce)
        if known is None:
            self.committed[rnd] = (digest, ce.cert.term)
            if self.configs is not None:
                self.configs.learn(ce)
            for term, d, leader in self.honest_proposals.get(rnd, []):
                self._check_completeness(rnd, term, d, leader)
        elif known[0] != digest:
            self.fail(f"agreement: round {rnd} committed as {known[0].hex()[:12]} and {digest.hex()[:12]} ({node})")
        self.durable_rounds[node] = rnd

    def _certified_in_force(self, node: str, ce) -> None:
        """The commit certificate counts a quorum of distinct members of the configuration in force at its round:
        a removed member's signature stops counting at the change, an added member's starts at it."""
        if self.configs is None:
            return
        rnd = ce.entry.round
        config = self.configs.at(rnd)
        signers = [signer for signer, _sig in ce.cert.signatures]
        outside = sorted(set(signers) - set(config.members))
        if outside or len(set(signers)) != len(signers) or len(signers) < config.quorum:
            self.fail(f"certified in force: {node} stored round {rnd} certified by {sorted(signers)}, not a quorum "
                      f"of distinct members of the configuration in force {list(config.members)} (outside: {outside})")

    def applied(self, node: str, ce, state_hash: bytes) -> None:
        rnd = ce.entry.round
        known = self.state_hash.setdefault(rnd, state_hash)
        if known != state_hash:
            self.fail(f"equal state hash: {node} computed a different state hash for round {rnd}")

    def restarted(self, node: str, committed_round: int) -> None:
        if committed_round < self.durable_rounds.get(node, 0):
            self.fail(f"durability: {node} restarted at round {committed_round} below its durable "
                      f"{self.durable_rounds[node]}")

    # --------------------------------------------------------------------------- messages of honest nodes
    def sent(self, node: str, msg, store_hard: HardState) -> None:
        """Called for each message an honest node sends, with what it had persisted at that moment."""
        if isinstance(msg, Vote) and msg.sender == node:
            prev = self.vote_of.setdefault((node, msg.term), msg.candidate)
            if prev != msg.candidate:
                self.fail(f"one vote per term: {node} voted for {prev} and {msg.candidate} in term {msg.term}")
            if (store_hard.voted_term, store_hard.voted_for) != (msg.term, msg.candidate):
                self.fail(f"persist before send: {node} sent a vote for term {msg.term} not yet persisted")
        elif isinstance(msg, Prepare) and msg.sender == node:
            prev = self.prepare_of.setdefault((node, msg.term, msg.round), msg.digest)
            if prev != msg.digest:
                self.fail(f"prepare uniqueness: {node} prepared two digests for term {msg.term} round {msg.round}")
            if (store_hard.prepared_term, store_hard.prepared_round, store_hard.prepared_digest) != (
                    msg.term, msg.round, msg.digest):
                self.fail(f"persist before send: {node} sent a prepare not yet persisted")
        elif isinstance(msg, Commit) and msg.sender == node:
            if store_hard.lock_rank() < (msg.round, msg.term):
                self.fail(f"persist before send: {node} sent a commit before persisting its lock")
        elif isinstance(msg, PrePrepare) and msg.sender == node:
            self.honest_proposals.setdefault(msg.round, []).append((msg.term, msg.digest, node))
            self._check_completeness(msg.round, msg.term, msg.digest, node)
        elif isinstance(msg, (Timeout, RequestVote, NewTerm)) and msg.sender == node:
            if store_hard.term < msg.term:
                self.fail(f"persist before send: {node} announced term {msg.term} with term {store_hard.term} stored")

    def bounded(self, node: str, footprint: dict[str, int], limit: int) -> None:
        """What other members' messages make ``node`` remember stays under ``limit`` records per member."""
        count, member = max(((c, m) for m, c in footprint.items() if m != node), default=(0, ""))
        if count > limit:
            self.fail(f"bounded memory: {node} holds {count} records fed by {member} (limit {limit})")

    def _check_completeness(self, rnd: int, term: int, digest: bytes, leader: str) -> None:
        known = self.committed.get(rnd)
        if known is not None and term >= known[1] and digest != known[0]:
            self.fail(f"leader completeness: {leader} proposed another entry for committed round {rnd} in term {term}")

    def leader_seen(self, node: str, term: int, leader: str) -> None:
        prev = self.leader_of_term.setdefault(term, leader)
        if prev != leader:
            self.fail(f"one leader per term: {prev} and {leader} both hold a term certificate for term {term} "
                      f"(seen by {node})")
