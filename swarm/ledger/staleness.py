"""Late updates kept, within a bound: the rules every node applies the same way, from the replicated state alone.

A member slower than the round (heterogeneous hardware is the normal case) used to lose its update every round,
and its participation score with it. With the genesis' ``staleness.bound`` B > 0, a signed gradient for round
q = r - s (1 <= s <= B) that missed its round may be named in the entry of round r, under ``params["stale"]`` as
``[[digest, s], ...]`` sorted by digest; ``gradient_digests`` keep naming the round's own (fresh) gradients, at
least a quorum of them, as before. A late gradient is admitted only when:

- it is a validly signed gradient of a member for round r - s, with 1 <= s <= B (beyond the bound: refused);
- it was built on the committed state of round q - 1: its parent is the hash the replicated state remembers for
  that round (``Recent.ancestors``); a gradient on a state the chain never had is refused;
- its member has no gradient in the same entry (a fresh one supersedes a late one: one row per member), and no
  gradient of round q or later was counted before (``Recent.counted``, the newest round counted per member): a
  gradient is never counted twice, and a member counts at most once per round.

It enters the aggregation rule scaled by ``weight(s) = decay ** s`` (1 for a fresh gradient): an update computed on
a model s rounds old pulls the aggregate less the older it is, whatever the rule (a mean takes it with that weight;
a median or a trimmed mean sees a shorter row). The weight is a product of Python floats and the scaling an
elementwise float32 multiply, the same bits on every machine.

Reputation (swarm/ledger/reputation.py) does not punish lateness: a late gradient is in the entry like any other,
so it counts as participation, is part of the reference every gradient is scored against, and is scored on its
own unscaled vector (the weight is the rule's business, not a judgement): its member is scored exactly as if the
same update had arrived on time. Scoring it against the fresh gradients alone was tried and was wrong: late in
training honest updates of non-iid shards are pairwise slightly anti-correlated, so a member judged against a
reference it is not part of drifts to a negative cosine and was quarantined within 20 rounds (bench/stragglers.py),
the very bias reputation.py's reference avoids. It is still scored: a poisoned update cannot hide by arriving late.

With B = 0 (the default) none of this exists: the state carries no ``Recent`` and its bytes are unchanged.
"""
from __future__ import annotations

from typing import Any, Iterable

from swarm.ledger.state import Recent, ReplicatedState
from swarm.round.gradient import Gradient

STALE_PARAM = "stale"
DIGEST_LEN = 32


class StaleRefused(ValueError):
    """A late gradient that the rules above do not admit; the message says which rule."""


def weight(staleness: int, decay: float) -> float:
    """decay ** staleness by repeated multiplication: exact IEEE steps, the same on every machine."""
    w = 1.0
    for _ in range(staleness):
        w *= decay
    return w


def parent_of_round(state: ReplicatedState, round_: int) -> bytes | None:
    """The parent a gradient for ``round_`` must name (the hash of committed state round_ - 1) as far as ``state``
    remembers it; None for a round it cannot vouch for (too old, or not yet reached)."""
    if round_ == state.round + 1:
        return state.hash
    back = state.round - (round_ - 1)  # how many states before ``state``
    if state.recent is None or back < 1 or back > len(state.recent.ancestors):
        return None
    return state.recent.ancestors[-back]


def counted_round(state: ReplicatedState, member: str) -> int:
    """The newest round of a gradient of ``member`` that a committed entry counted (0: none, or staleness off)."""
    if state.recent is None:
        return 0
    return dict(state.recent.counted).get(member, 0)


def refusal(state: ReplicatedState, bound: int, gradient: Gradient, fresh_senders: Iterable[str]) -> str | None:
    """Why ``gradient`` may not enter the entry of round state.round + 1 as a late update, or None if it may."""
    round_ = state.round + 1
    staleness = round_ - gradient.round
    if staleness < 1:
        return f"round {gradient.round} is not older than round {round_}"
    if staleness > bound:
        return f"staleness {staleness} is beyond the bound {bound}"
    parent = parent_of_round(state, gradient.round)
    if parent is None or gradient.parent != parent:
        return f"built on a state the chain did not have at round {gradient.round - 1}"
    if gradient.sender in set(fresh_senders):
        return "its member has a gradient of this round in the entry"
    counted = counted_round(state, gradient.sender)
    if gradient.round <= counted:
        return f"a gradient of its member for round {counted} was counted already"
    return None


def check(state: ReplicatedState, bound: int, fresh: list[Gradient], late: list[Gradient]) -> None:
    """StaleRefused unless every late gradient is admissible and their members are distinct."""
    if late and bound == 0:
        raise StaleRefused("late updates are off in this genesis (staleness.bound = 0)")
    senders = [g.sender for g in late]
    if len(set(senders)) != len(senders):
        raise StaleRefused("two late gradients from one member")
    fresh_senders = {g.sender for g in fresh}
    for gradient in late:
        why = refusal(state, bound, gradient, fresh_senders)
        if why is not None:
            raise StaleRefused(f"late gradient of {gradient.sender[:16]} for round {gradient.round}: {why}")


def choose(state: ReplicatedState, bound: int, candidates: Iterable[Gradient],
           fresh: list[Gradient]) -> tuple[list[Gradient], list[tuple[Gradient, str]]]:
    """What a leader names: per member without a fresh gradient, its newest admissible late one. Returns (chosen,
    sorted by sender; [(refused, why)] for the candidates left out, other than those counted already or superseded
    by a newer gradient of their member: the pool keeps those for a while, and they are no fault)."""
    fresh_senders = {g.sender for g in fresh}
    best: dict[str, Gradient] = {}
    refused = []
    for gradient in candidates:
        if gradient.sender in fresh_senders or gradient.round <= counted_round(state, gradient.sender):
            continue  # superseded by a fresher gradient of its member, or counted already: nothing to report
        why = refusal(state, bound, gradient, fresh_senders)
        if why is not None:
            refused.append((gradient, why))
            continue
        kept = best.get(gradient.sender)
        if kept is None or gradient.round > kept.round:
            best[gradient.sender] = gradient
    return [best[s] for s in sorted(best)], refused


def next_recent(state: ReplicatedState, bound: int, fresh: list[Gradient], late: list[Gradient]) -> Recent | None:
    """The Recent of the state after this entry: the ancestors shift by one (this state's hash joins, the oldest
    beyond the bound leaves) and every counted gradient's member moves to that gradient's round."""
    if bound == 0:
        return None
    ancestors = (state.recent.ancestors if state.recent is not None else ()) + (state.hash,)
    counted = dict(state.recent.counted) if state.recent is not None else {peer: 0 for peer, _ in state.reputation}
    for gradient in [*fresh, *late]:
        counted[gradient.sender] = max(counted[gradient.sender], gradient.round)
    return Recent(ancestors[-bound:], tuple(sorted(counted.items())))


def to_params(round_: int, late: list[Gradient]) -> list[list[Any]]:
    """The entry's record of its late gradients: [[digest, staleness], ...] sorted by digest."""
    return [[g.digest, round_ - g.round] for g in sorted(late, key=lambda g: g.digest)]


def from_params(params: dict, bound: int, max_items: int) -> list[tuple[bytes, int]]:
    """[(digest, staleness)] an entry's params name (none when absent); StaleRefused when malformed, unsorted,
    longer than ``max_items`` or beyond the bound. Says nothing about the gradients themselves."""
    if STALE_PARAM not in params:
        return []
    items = params[STALE_PARAM]
    if bound == 0:
        raise StaleRefused("late updates are off in this genesis (staleness.bound = 0)")
    if type(items) is not list or not items or len(items) > max_items:
        raise StaleRefused(f"params[{STALE_PARAM!r}] must be a list of 1 to {max_items} [digest, staleness]")
    out = []
    for item in items:
        if (type(item) is not list or len(item) != 2 or type(item[0]) is not bytes or len(item[0]) != DIGEST_LEN
                or type(item[1]) is not int):
            raise StaleRefused(f"params[{STALE_PARAM!r}] holds an item that is not [32-byte digest, staleness]")
        if not 1 <= item[1] <= bound:
            raise StaleRefused(f"staleness {item[1]} is beyond the bound {bound}")
        out.append((item[0], item[1]))
    digests = [d for d, _ in out]
    if digests != sorted(set(digests)):
        raise StaleRefused(f"params[{STALE_PARAM!r}] must be sorted by digest, without repeats")
    return out
