"""Byzantine scripts. Each runs the honest replica underneath (so it stays in step with the swarm) and distorts what
goes in or out. Every one signs only with its own key: forging other members' signatures must fail by design."""
from __future__ import annotations

from dataclasses import replace

from ..actions import Broadcast, Send
from ..events import Received, Tick
from ..messages import (CatchUpResponse, Commit, CommitCertificate, CommittedEntry, Entry, Evidence, EvidenceMessage,
                        Heartbeat, NewTerm, PrePrepare, Prepare, RequestVote, Timeout, Vote)
from ..quorum import sign_fields
from .world import build_entry


class Script:
    """Honest behaviour; subclasses override what they distort."""
    eager = False  # stand as candidate almost at once, so the faulty node usually leads

    def timing(self, base):
        return replace(base, candidacy_delay=0.01) if self.eager else base

    def step(self, world, node, event):
        return self.distort(world, node, event, node.replica.step(world.now, event))

    def distort(self, world, node, event, actions):
        return actions

    def build(self, world, node, action) -> Entry:
        return build_entry(action.round, action.parent_state_hash, world.members, node.replica.membership.quorum)

    @staticmethod
    def sign(world, node, msg):
        sig = sign_fields("sim-swarm", world.keys.signer(node.id), msg.kind, msg.term, msg.round, msg.digest, node.id)
        return replace(msg, sig=sig)


class EquivocatingLeader(Script):
    """Sends one proposal to half the swarm and a different (valid) one to the other half, and both to one node."""
    eager = True

    def distort(self, world, node, event, actions):
        out = []
        for a in actions:
            if isinstance(a, Broadcast) and isinstance(a.message, PrePrepare) and a.message.sender == node.id:
                pp = a.message
                alt_entry = build_entry(pp.round, pp.entry.parent_state_hash, world.members,
                                        node.replica.membership.quorum, variant=1)
                alt = self.sign(world, node, PrePrepare(pp.term, pp.round, alt_entry, node.id))
                peers = [m for m in world.members if m != node.id]
                half = len(peers) // 2
                out += [Send(p, pp) for p in peers[:half]] + [Send(p, alt) for p in peers[half:]]
                if half:
                    out.append(Send(peers[0], alt))  # one node sees both: that is signed evidence
            else:
                out.append(a)
        return out


class DoubleVoter(Script):
    """Votes for every candidate that asks, whatever it voted before."""

    def distort(self, world, node, event, actions):
        if isinstance(event, Received) and isinstance(event.message, RequestVote):
            rv = event.message
            vote = self.sign(world, node, Vote(rv.term, rv.round, rv.sender, node.replica.hard.lock, node.id))
            actions = list(actions) + [Send(rv.sender, vote)]
        return actions


class TermSpammer(Script):
    """Floods huge terms: timeouts, vote requests, heartbeats and a NewTerm backed by its own vote only."""

    def distort(self, world, node, event, actions):
        if isinstance(event, Tick) and world.rng.random() < 0.5:
            huge = node.replica.term + 1000 + world.rng.randrange(1000)
            own_vote = self.sign(world, node, Vote(huge, 999, node.id, None, node.id))
            spam = [Timeout(huge, 999, node.id), RequestVote(huge, 999, node.id), Heartbeat(huge, 0, node.id),
                    NewTerm(huge, (own_vote,) * node.replica.membership.quorum, node.id)]
            actions = list(actions) + [Broadcast(self.sign(world, node, m)) for m in spam]
        return actions


class ReplayForger(Script):
    """Re-sends others' signatures under other types, terms and rounds, and forges messages in others' names."""

    def distort(self, world, node, event, actions):
        actions = list(actions)
        if not isinstance(event, Received) or world.rng.random() < 0.7:
            return actions
        msg = event.message
        replayed = world.__dict__.setdefault("replayed_sigs", set())
        if msg.sig in replayed or msg.sender not in world.honest or not node.replica.verify.message(msg):
            return actions  # react to genuine honest messages only: forgers must not amplify each other unboundedly
        replayed.add(msg.sig)
        if isinstance(msg, (Prepare, Commit)):
            other = Commit if isinstance(msg, Prepare) else Prepare
            replays = [other(msg.term, msg.round, msg.digest, msg.sender, msg.sig),
                       replace(msg, term=msg.term + 1), replace(msg, round=msg.round + 1)]
            actions += [Broadcast(m) for m in replays]
        victim = world.rng.choice([m for m in world.members if m != node.id])
        digest = world.rng.randbytes(32)
        replica = node.replica
        forged_sig = world.keys.signer(node.id).sign(b"not the victim's key")
        forged = [Commit(replica.term, replica.pending, digest, victim, forged_sig),
                  Prepare(replica.term, replica.pending, digest, victim, world.rng.randbytes(32)),
                  Timeout(replica.term + 1, 0, victim, forged_sig)]
        actions += [Broadcast(m) for m in forged]
        bogus = Entry(replica.pending, (digest,), "mean", {}, digest, replica.head_state_hash)
        cert = CommitCertificate(replica.term, replica.pending, bogus.digest(),
                                 tuple((m, forged_sig) for m in world.members))
        actions.append(Broadcast(self.sign(world, node, CatchUpResponse(replica.pending, (CommittedEntry(bogus, cert),),
                                                                        node.id))))
        return actions


class StateFlooder(Script):
    """Answers honest traffic with signed junk that passes every signature check: Prepares for digests that exist
    nowhere, Commits in any term, pairs of conflicting PrePrepares for any term and round (equivocation evidence
    against itself, which honest nodes would otherwise relay to everyone) and that evidence itself. The honest
    replicas must stay live with bounded tables (Replica.footprint, checked by the world)."""
    batches = 1  # junk batches per honest message it answers (half of them); tests turn it up

    def distort(self, world, node, event, actions):
        actions = list(actions)
        if not isinstance(event, Received) or event.message.sender not in world.honest or world.rng.random() < 0.5:
            return actions  # react to honest messages only: flooders must not amplify each other unboundedly
        replica, rng = node.replica, world.rng
        for _ in range(self.batches):
            term, rnd = replica.view + rng.randrange(40), replica.pending + rng.randrange(2)
            junk = rng.randbytes(32)
            entries = [Entry(rnd, (rng.randbytes(32),), "mean", {}, junk, replica.head_state_hash) for _ in range(2)]
            proposals = [self.sign(world, node, PrePrepare(term, rnd, e, node.id)) for e in entries]
            evidence = Evidence(node.id, term, rnd, proposals[0].digest, proposals[0].sig, proposals[1].digest,
                                proposals[1].sig)
            messages = [Prepare(replica.view, replica.pending, junk, node.id), Commit(term, rnd, junk, node.id),
                        EvidenceMessage(evidence, node.id)]
            actions += [Broadcast(p) for p in proposals] + [Broadcast(self.sign(world, node, m)) for m in messages]
        return actions


class SilentLeader(Script):
    """Wins elections and heartbeats, but never proposes."""
    eager = True

    def distort(self, world, node, event, actions):
        return [a for a in actions if not (isinstance(a, Broadcast) and isinstance(a.message, PrePrepare))]


class InvalidLeader(Script):
    """Proposes entries whose state hash does not follow from their contents (the validator rejects them)."""
    eager = True

    def build(self, world, node, action) -> Entry:
        good = super().build(world, node, action)
        return replace(good, state_hash=bytes(32))


class Twin(Script):
    """Honest code, but a second copy runs with the same key (a misconfigured or cloned node)."""

    def __init__(self, variant: int):
        self.variant = variant

    def build(self, world, node, action) -> Entry:
        return build_entry(action.round, action.parent_state_hash, world.members, node.replica.membership.quorum,
                           variant=self.variant)


SCRIPTS = {
    "equivocate": EquivocatingLeader, "double_vote": DoubleVoter, "term_spam": TermSpammer,
    "replay_forge": ReplayForger, "silent_leader": SilentLeader, "state_flood": StateFlooder,
    "invalid_leader": InvalidLeader,
}
