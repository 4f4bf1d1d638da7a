"""The read-only view of a node that the API and the metrics use: exactly what they may read, typed, so that a
change to the node that breaks an operator's page fails a type check and a test, and so that the inspection
tests can serve a stand-in without building a node. Nothing here lets them change anything."""
from __future__ import annotations

from collections import deque
from typing import Iterable, Iterator, Mapping, Protocol, runtime_checkable

from swarm.config import Genesis
from swarm.ledger.apply import RoundRules
from swarm.ledger.state import ReplicatedState
from swarm.ledger.store import ChainRow
from swarm.node.peer_scores import PeerScores
from swarm.node.records import Metrics, RoundRecord
from swarm.transport.base import PeerInfo


class ConsensusView(Protocol):
    @property
    def term(self) -> int: ...

    @property
    def role(self) -> str: ...

    @property
    def leader(self) -> str | None: ...


class PeersView(Protocol):
    @property
    def listen_addrs(self) -> list[str]: ...

    def peers(self) -> Mapping[str, PeerInfo]: ...


class ChainView(Protocol):
    def rows(self, start: int = 1, limit: int = 1 << 30) -> Iterator[ChainRow]: ...

    def gradient_senders(self, digests: list[bytes]) -> Iterable[str]: ...


@runtime_checkable
class NodeView(Protocol):
    id: str
    name: str
    genesis: Genesis
    rules: RoundRules
    state: ReplicatedState
    metrics: Metrics
    scores: PeerScores
    diverged: str | None
    started: float
    core: ConsensusView
    transport: PeersView
    store: ChainView

    @property
    def history(self) -> deque[RoundRecord]: ...

    @property
    def last_eval(self) -> tuple[float, float] | None: ...
