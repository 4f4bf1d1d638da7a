"""The simulated world: seeded event queue, faulty network, the node side of each replica (store, app, workload),
crashes and restarts. Everything random comes from one ``random.Random(seed)``, so a seed replays exactly."""
from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field

from crypto import wire

from ..actions import Apply, Broadcast, BuildProposal, LoadEntries, PersistEntry, PersistHardState, RejectMessage, \
    ReportEvidence, Send, ValidateProposal, WakeAt
from ..bounds import EVIDENCE_MEMORY_ROUNDS, MAX_TERMS_PER_ROUND
from ..events import EntriesLoaded, PayloadsReady, ProposalBuilt, Received, Tick, ValidationResult
from ..messages import Entry, from_wire, to_wire
from ..replica import Config, Replica
from ..state import PersistedState
from ..timing import TimingConfig
from .fakecrypto import KeyRing
from .invariants import Invariants
from .reconfig import change_is_valid, next_change

RULE = "mean"
GENESIS = hashlib.sha256(b"sim-genesis").digest()
SIM_TIMING = TimingConfig(heartbeat_interval=0.5, min_round_timeout=2.0, max_timeout=30.0, margin=4.0,
                          candidacy_delay=0.3, max_backoff_exponent=4)
# Tiny on purpose: replicas keep only a few committed entries in memory, so every scenario exercises catch-up from
# the store (LoadEntries) and restarts from a chain tail, not just the in-memory path.
SIM_MEMORY_ROUNDS = 2
# Records one member's messages may hold in a replica (Replica.footprint): Prepares for one round, Commits and
# PrePrepares for two, each at most MAX_TERMS_PER_ROUND terms; evidence for the rounds it is remembered, with room
# for the pieces against a leader taken in term by term while no round commits.
FOOTPRINT_LIMIT = 5 * MAX_TERMS_PER_ROUND + EVIDENCE_MEMORY_ROUNDS + 16


def grad_digest(rnd: int, member: str, variant: int = 0) -> bytes:
    return hashlib.sha256(f"grad/{rnd}/{member}/{variant}".encode()).digest()


def fake_apply(parent: bytes, digests, rule: str, params: dict) -> bytes:
    """Stands in for aggregation + update: deterministic in its inputs, like the real apply()."""
    return hashlib.sha256(wire.dumps([parent, list(digests), rule, params])).digest()


def build_entry(rnd: int, parent: bytes, members, quorum: int, variant: int = 0,
                change: tuple[str, ...] | None = None) -> Entry:
    members = list(members)
    chosen = members[variant % len(members):] + members[:variant % len(members)]
    digests = tuple(sorted(grad_digest(rnd, m) for m in chosen[:max(quorum, len(members) - (len(members) - 1) // 3)]))
    params = {"lr": 0.1}
    return Entry(rnd, digests, RULE, params, fake_apply(parent, digests, RULE, params), parent, change)


def entry_is_valid(entry: Entry) -> bool:
    return entry.rule == RULE and len(entry.gradient_digests) > 0 and entry.state_hash == fake_apply(
        entry.parent_state_hash, entry.gradient_digests, entry.rule, entry.params)


@dataclass
class FaultPlan:
    gst: float = 0.0  # global stabilization time: no network faults, crashes or partitions after it
    drop: float = 0.0
    duplicate: float = 0.0
    max_delay: float = 0.05
    partitions: bool = False
    crashes: int = 0  # crash/restart events before GST
    isolate_heal: bool = False  # scripted cuts of single nodes (see World.plan_isolations); GST comes after them


@dataclass
class SimNode:
    """One process: a replica plus what the node around it keeps (the store and the applied chain)."""
    id: str
    instance: int  # twins share an id with two instances
    replica: Replica | None
    store: PersistedState = field(default_factory=PersistedState)
    app_head: bytes = GENESIS
    incarnation: int = 0
    wake_token: int = 0
    byzantine: object = None  # a script from byzantine.py, or None for honest code


class World:
    def __init__(self, seed: int, n: int, faults: FaultPlan, rounds_after_gst: int = 2, liveness_bound: float = 300.0,
                 quorum_override: int | None = None, wire_roundtrip: bool = False, timing: TimingConfig = SIM_TIMING,
                 memory_rounds: int = SIM_MEMORY_ROUNDS, joiners: int = 0):
        self.seed, self.rng = seed, random.Random(seed)
        self.members = [f"node{i:02d}" for i in range(n)]  # the genesis configuration
        self.joiners = [f"node{i:02d}" for i in range(n, n + joiners)]  # started outside it, added by the plan
        self.ids = self.members + self.joiners
        self.keys = KeyRing(seed, self.ids)
        self.plan: list[tuple[str, ...]] | None = None  # membership changes honest leaders propose (sim/reconfig.py)
        self.changes: dict[int, tuple[str, ...]] = {}  # round -> members in force after it, as committed
        self.faults, self.timing = faults, timing
        self.quorum_override = quorum_override
        self.rounds_after_gst, self.liveness_bound = rounds_after_gst, liveness_bound
        self.wire_roundtrip = wire_roundtrip
        self.memory_rounds = memory_rounds
        self.inv = Invariants(self.members, quorum_override)
        self.now = 0.0
        self._queue: list = []
        self._seq = 0
        self.nodes: list[SimNode] = []
        self.honest: set[str] = set(self.ids)
        self.partition: list[set[str]] | None = None
        self.isolated: set[str] = set()  # cut off from everyone, GST or not (scripted faults)
        self.frozen: dict[str, list] = {}  # SIGSTOP: the node's events wait here until it resumes
        self.checks: list[tuple[float, str]] = []  # scripted liveness checks that failed: (time, what)
        self.target_round: int | None = None
        self.steps = 0
        self.messages = 0

    # ------------------------------------------------------------------------------ setup
    def config(self, node_id: str, timing: TimingConfig | None = None) -> Config:
        return Config("sim-swarm", node_id, self.members, GENESIS, timing or self.timing,
                      memory_rounds=self.memory_rounds, quorum_override=self.quorum_override)

    def add_node(self, node_id: str, instance: int = 0, byzantine=None) -> SimNode:
        node = SimNode(node_id, instance, None, byzantine=byzantine)
        self.nodes.append(node)
        if byzantine is not None:
            self.honest.discard(node_id)
        self._start(node)
        return node

    def _start(self, node: SimNode) -> None:
        node.incarnation += 1
        timing = node.byzantine.timing(self.timing) if node.byzantine else self.timing
        # Like the node: hand the core only the newest stored entries; it reads older ones back with LoadEntries.
        base = max(0, len(node.store.chain) - self.memory_rounds)
        configs = tuple((ce.entry.round + 1, ce.entry.members) for ce in node.store.chain[:base]
                        if ce.entry.members is not None)  # as a node reads them from its store
        persisted = PersistedState(node.store.hard, list(node.store.chain[base:]), base, configs)
        node.replica = Replica(self.config(node.id, timing), self.keys.signer(node.id), persisted,
                               random.Random(self.rng.getrandbits(64)), self.now)
        node.app_head = persisted.chain[-1].entry.state_hash if persisted.chain else GENESIS
        if node.id in self.honest:
            self.inv.restarted(node.id, node.replica.committed_round)
        self.schedule(0.0, ("tick", node, node.incarnation, None))
        self._schedule_payloads(node)

    def schedule(self, delay: float, item) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, item))

    # ------------------------------------------------------------------------------ network
    def faulty(self) -> bool:
        return self.now < self.faults.gst

    def deliver(self, src: str, dst: str, msg) -> None:
        if dst == src:
            return
        self.messages += 1
        if src in self.isolated or dst in self.isolated:
            return
        if self.faulty():
            if self.partition is not None and not any(src in side and dst in side for side in self.partition):
                return
            if self.rng.random() < self.faults.drop:
                return
            copies = 2 if self.rng.random() < self.faults.duplicate else 1
        else:
            copies = 1
        if self.wire_roundtrip:
            msg = from_wire(wire.loads(wire.dumps(to_wire(msg))))
        for node in self.nodes:
            if node.id == dst:
                for _ in range(copies):
                    delay = self.rng.uniform(0.001, self.faults.max_delay if self.faulty() else 0.05)
                    self.schedule(delay, ("msg", node, node.incarnation, (src, msg)))

    def send_from(self, node: SimNode, to: str | None, msg) -> None:
        """to=None broadcasts to every other member."""
        if node.id in self.honest:
            self.inv.sent(node.id, msg, node.store.hard)
        members = node.replica.membership.members if node.replica is not None else self.members
        targets = [m for m in members if m != node.id] if to is None else [to]
        for dst in targets:
            self.deliver(node.id, dst, msg)

    # ------------------------------------------------------------------------------ node side
    def feed(self, node: SimNode, event, source: str | None = None) -> None:
        """Step ``node`` with ``event``; ``source``: the member that delivered the message it carries."""
        replica = node.replica
        if node.byzantine is not None:
            actions = node.byzantine.step(self, node, event)
        else:
            actions = replica.step(self.now, event)
        self.execute(node, actions, source)
        if node.id in self.honest and replica.leader is not None:
            self.inv.leader_seen(node.id, replica.term, replica.leader)
        if node.id in self.honest and self.steps % 8 == 0:  # sampled: a flood grows far past the limit anyway
            self.inv.bounded(node.id, replica.footprint(), FOOTPRINT_LIMIT)

    def execute(self, node: SimNode, actions, source: str | None = None) -> None:
        honest = node.id in self.honest
        for action in actions:
            if isinstance(action, PersistHardState):
                if honest:
                    self.inv.persisted_hard(node.id, node.store.hard, action.state)
                node.store.hard = action.state
            elif isinstance(action, PersistEntry):
                if honest:
                    self.inv.persisted_entry(node.id, len(node.store.chain), action.committed)
                node.store.chain.append(action.committed)
            elif isinstance(action, Apply):
                entry = action.committed.entry
                if entry.parent_state_hash != node.app_head:
                    if honest:
                        self.inv.fail(f"apply order: {node.id} applied round {entry.round} on the wrong parent")
                new_head = fake_apply(entry.parent_state_hash, entry.gradient_digests, entry.rule, entry.params)
                if honest:
                    self.inv.applied(node.id, action.committed, new_head)
                    if new_head != entry.state_hash:
                        self.inv.fail(f"equal state hash: {node.id} committed round {entry.round} whose state hash "
                                      f"does not match its contents (an invalid entry was committed)")
                node.app_head = new_head
                if entry.members is not None:
                    self.changes[entry.round] = entry.members
                self._schedule_payloads(node)
            elif isinstance(action, Send):
                self.send_from(node, action.to, action.message)
            elif isinstance(action, Broadcast):
                self.send_from(node, None, action.message)
            elif isinstance(action, BuildProposal):
                self.schedule(0.02, ("build", node, node.incarnation, action))
            elif isinstance(action, ValidateProposal):
                self.schedule(0.02, ("validate", node, node.incarnation, action))
            elif isinstance(action, WakeAt):
                node.wake_token += 1
                self.schedule(max(0.0, action.time - self.now), ("tick", node, node.incarnation, node.wake_token))
            elif isinstance(action, LoadEntries):
                self.schedule(0.005, ("load", node, node.incarnation, action))
            elif isinstance(action, ReportEvidence):
                pass
            elif isinstance(action, RejectMessage):
                if honest and source in self.honest:
                    self.inv.fail(f"honest messages are never rejected: {node.id} rejected one that {source} "
                                  f"delivered ({action.reason})")
            else:
                raise TypeError(action)

    def _schedule_payloads(self, node: SimNode) -> None:
        """Local training for the next round takes a while, then its gradients (and the others') are in."""
        rnd = len(node.store.chain) + 1
        self.schedule(self.rng.uniform(0.2, 0.8), ("payloads", node, node.incarnation, rnd))

    def _answer_build(self, node: SimNode, action: BuildProposal) -> None:
        if node.byzantine is not None:
            entry = node.byzantine.build(self, node, action)
        else:
            membership = node.replica.membership
            change = next_change(self.plan, membership.members, action.round) if self.plan else None
            entry = build_entry(action.round, action.parent_state_hash, membership.members, membership.quorum,
                                change=change)
        self.feed(node, ProposalBuilt(entry))

    def _change_is_valid(self, node: SimNode, entry: Entry) -> bool:
        if self.plan is None:
            return entry.members is None
        return change_is_valid(self.plan, node.replica.membership.members, entry.members)

    # ------------------------------------------------------------------------------ faults
    def crash(self, node: SimNode) -> None:
        node.replica = None
        node.incarnation += 1

    def plan_faults(self) -> None:
        f = self.faults
        if f.isolate_heal:
            self.plan_isolations()
        if f.partitions:
            t = 0.5
            while t < f.gst:
                self.schedule(t, ("partition", None, 0, None))
                t += self.rng.uniform(1.0, 4.0)
            self.schedule(f.gst, ("heal", None, 0, None))
        for _ in range(f.crashes):
            node = self.rng.choice(self.nodes)
            at = self.rng.uniform(0.5, max(0.6, f.gst - 1.0))
            self.schedule(at, ("crash", node, 0, None))
            self.schedule(min(f.gst, at + self.rng.uniform(0.5, 4.0)), ("restart", node, 0, None))

    def plan_isolations(self) -> None:
        """What the real fault tests do, one after the other on one swarm: cut off one follower (or several in turn,
        so that nodes end up in different terms) long enough for it to time out again and again, heal; then cut off or
        freeze (SIGSTOP) the leader: the rest must elect a new leader and commit while it is gone. GST is set to the
        end of the script, so the usual liveness check follows."""
        t = 3.0
        for _ in range(self.rng.randint(1, 2)):
            length = self.rng.uniform(6.0, 25.0)
            self.schedule(t, ("isolate", None, 0, "follower"))
            self.schedule(t + length, ("heal", None, 0, "rejoin"))
            t += length + self.rng.uniform(16.0, 20.0)  # the rejoin check runs 15 s after the heal
        length = self.rng.uniform(15.0, 30.0)
        self.schedule(t, ("isolate", None, 0, "freeze" if self.rng.random() < 0.4 else "leader"))
        self.schedule(t + length, ("heal", None, 0, "leader"))
        self.faults.gst = t + length + 0.01

    def majority_leader(self) -> str | None:
        """The leader most honest, connected nodes follow (in their highest term), if any."""
        views = [(n.replica.term, n.replica.leader) for n in self.honest_nodes()
                 if n.replica is not None and n.id not in self.isolated and n.id not in self.frozen
                 and n.replica.leader is not None]
        return max(views)[1] if views else None

    def _isolate(self, what: str) -> None:
        leader = self.majority_leader()
        if what == "follower":
            pick = [m for m in self.members if m != leader and m in self.honest]
            node_id = self.rng.choice(pick)
        else:
            node_id = leader or self.rng.choice(self.members)
        self.cut_at = (self.now, node_id, {n.id: len(n.store.chain) for n in self.nodes})
        if what == "freeze":
            self.frozen[node_id] = []
        else:
            self.isolated.add(node_id)

    def _heal(self, what: str) -> None:
        at, node_id, rounds = self.cut_at
        self.isolated.discard(node_id)
        for item in self.frozen.pop(node_id, []):
            self.schedule(0.0, item)
        if what == "leader":
            # While the leader was away, the rest must have elected another one and committed rounds.
            rest = [n for n in self.honest_nodes() if n.id != node_id]
            if any(len(n.store.chain) < rounds[n.id] + 2 for n in rest):
                self.checks.append((self.now, f"the rest did not commit 2 rounds in the {self.now - at:.0f}s "
                                              f"{node_id} was cut off: {self.roles()}"))
        else:
            # The healed node must follow the swarm's leader again soon (not sit in a term of its own).
            self.schedule(15.0, ("rejoined", None, 0, node_id))

    def roles(self) -> dict:
        return {n.id: (n.replica.role, n.replica.term, n.replica.leader, len(n.store.chain)) if n.replica else None
                for n in self.nodes}

    # ------------------------------------------------------------------------------ main loop
    def honest_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes if n.id in self.honest]

    def final_members(self) -> tuple[str, ...]:
        """The configuration in force after the newest change any node committed (the genesis one without)."""
        return self.changes[max(self.changes)] if self.changes else tuple(self.members)

    def live_nodes(self) -> list[SimNode]:
        """The honest nodes liveness is owed to: members of the newest configuration (a joiner the swarm has not
        added yet and a member it removed are not)."""
        members = set(self.final_members())
        return [n for n in self.honest_nodes() if n.id in members]

    def run(self) -> dict:
        self.plan_faults()
        deadline = self.faults.gst + self.liveness_bound
        while self._queue:
            at, _, item = heapq.heappop(self._queue)
            if at > deadline:
                break
            self.now = at
            if self.target_round is None and self.now >= self.faults.gst:
                self.target_round = max(len(n.store.chain) for n in self.live_nodes()) + self.rounds_after_gst
            kind, node, incarnation, data = item
            self.steps += 1
            self._dispatch(kind, node, incarnation, data)
            if self.target_round is not None and all(
                    n.replica is not None and len(n.store.chain) >= self.target_round for n in self.live_nodes()):
                return self._result(live=True)
        return self._result(live=False)

    def _dispatch(self, kind, node, incarnation, data) -> None:
        if kind == "partition":
            ids = list(self.ids)
            self.rng.shuffle(ids)
            cut = self.rng.randint(1, len(ids) - 1)
            self.partition = [set(ids[:cut]), set(ids[cut:])] if self.rng.random() < 0.7 else None
            return
        if kind == "heal":
            if data is None:
                self.partition = None
            else:
                self._heal(data)
            return
        if kind == "isolate":
            self._isolate(data)
            return
        if kind == "rejoined":
            leaders = {n.replica.leader for n in self.honest_nodes() if n.replica is not None}
            if len(leaders) != 1 or None in leaders:
                self.checks.append((self.now, f"{data} did not rejoin the leader within 15s of healing: {self.roles()}"))
            return
        if kind == "crash":
            if node.replica is not None:
                self.crash(node)
            return
        if kind == "restart":
            if node.replica is None:
                self._start(node)
            return
        if node.replica is None or incarnation != node.incarnation:
            return
        if node.id in self.frozen:
            self.frozen[node.id].append((kind, node, incarnation, data))
            return
        if kind == "msg":
            src, msg = data
            self.feed(node, Received(msg), source=src)
        elif kind == "tick":
            if data is None or data == node.wake_token:
                self.feed(node, Tick())
        elif kind == "payloads":
            if data == len(node.store.chain) + 1:
                self.feed(node, PayloadsReady(data))
        elif kind == "build":
            self._answer_build(node, data)
        elif kind == "load":
            stored = node.store.chain[data.from_round - 1:data.from_round - 1 + data.limit]
            self.feed(node, EntriesLoaded(data.peer, data.from_round, tuple(stored)))
        elif kind == "validate":
            entry = data.entry
            ok = entry_is_valid(entry) and self._change_is_valid(node, entry)
            self.feed(node, ValidationResult(data.term, data.round, entry.digest(), ok))

    def _result(self, live: bool) -> dict:
        return {"live": live, "time": self.now, "steps": self.steps, "messages": self.messages,
                "rounds": min(len(n.store.chain) for n in self.live_nodes()), "target": self.target_round,
                "changes": len(self.changes)}
