"""One step's actions grouped the way the node carries them out (etcd raft's ``Ready``): persist first, then sync
once if anything is about to leave, then send, then apply and answer the core's requests.

The core returns its actions as an ordered list; this batch keeps every ordering that matters and nothing more.
Persisting earlier than the list asks is always safe (a message may only leave after what it depends on is
durable, never the other way round), so every Persist* moves ahead of every message; later hard states replace
earlier ones (they never go backwards); entries keep their order, and so do messages, applies and requests.
"""
from __future__ import annotations

from dataclasses import dataclass

from .actions import (Action, Apply, Broadcast, BuildProposal, LoadEntries, PersistEntry, PersistHardState,
                      RejectMessage, ReportEvidence, Send, ValidateProposal, WakeAt)
from .messages import CommittedEntry, Evidence
from .state import HardState

Request = BuildProposal | ValidateProposal | LoadEntries


@dataclass(frozen=True)
class Ready:
    hard_state: HardState | None = None            # the newest term / vote / lock to persist (fsync)
    entries: tuple[CommittedEntry, ...] = ()       # committed entries to append to the chain, in order
    messages: tuple[Send | Broadcast, ...] = ()    # to send once everything above is durable
    committed: tuple[CommittedEntry, ...] = ()     # to apply to the replicated state, in order
    requests: tuple[Request, ...] = ()             # build a proposal, validate one, load old entries
    evidence: tuple[Evidence, ...] = ()            # signed proof of a leader's equivocation
    wake_at: float | None = None                   # feed a Tick at or after this time
    rejections: tuple[str, ...] = ()               # why the message handled was invalid (score who delivered it)

    @property
    def must_sync(self) -> bool:
        """Messages leave in this batch: whatever was written without its fsync must be durable first."""
        return bool(self.messages)


def ready(actions: list[Action]) -> Ready:
    """Group a step's actions; raises TypeError for an action it does not know (a new kind must be placed)."""
    hard_state = None
    groups: dict[str, list] = {"entries": [], "messages": [], "committed": [], "requests": [], "evidence": []}
    wake_at = None
    rejections = []
    for action in actions:
        if isinstance(action, PersistHardState):
            hard_state = action.state
        elif isinstance(action, PersistEntry):
            groups["entries"].append(action.committed)
        elif isinstance(action, (Send, Broadcast)):
            groups["messages"].append(action)
        elif isinstance(action, Apply):
            groups["committed"].append(action.committed)
        elif isinstance(action, (BuildProposal, ValidateProposal, LoadEntries)):
            groups["requests"].append(action)
        elif isinstance(action, ReportEvidence):
            groups["evidence"].append(action.evidence)
        elif isinstance(action, WakeAt):
            wake_at = action.time
        elif isinstance(action, RejectMessage):
            rejections.append(action.reason)
        else:
            raise TypeError(f"unknown action {type(action).__name__}")
    return Ready(hard_state, *(tuple(groups[k]) for k in ("entries", "messages", "committed", "requests",
                                                          "evidence")), wake_at, tuple(rejections))
