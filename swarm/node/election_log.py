"""Elections are what an operator looks for when rounds stall: every move to a new term or role is logged once,
with who claims which term while a term waits for a quorum, and every new leader is reported to the node."""
from __future__ import annotations

import logging

from consensus.replica import FOLLOWER, LEADER, Replica
from swarm.config import Genesis

log = logging.getLogger("swarm.node")


class ElectionLog:
    def __init__(self, genesis: Genesis):
        self.genesis = genesis
        self._leader_seen: str | None = None
        self._role_seen: tuple[int, str, bool] = (0, "", False)

    def observe(self, core: Replica) -> bool:
        """Log what changed since the last step; True when a new leader became known."""
        self._log_role(core)
        leader = core.leader
        if leader == self._leader_seen:
            return False
        self._leader_seen = leader
        if leader is None:
            return False
        log.info("term %d: leader is %s", core.term, self.genesis.name_of(leader))
        return True

    def _log_role(self, core: Replica) -> None:
        term, role = core.term, core.role
        if role in (FOLLOWER, LEADER):  # logged as "leader is"
            self._role_seen = (term, role, True)
            return
        live = core.term_is_live(term)
        if (term, role, live) == self._role_seen:
            return
        self._role_seen = (term, role, live)
        log.info("term %d: %s after %s (%s)", term, role, core.last_term_change, "a quorum entered it" if live else
                 "waiting for a quorum to enter it; members' terms: " + ", ".join(
                     f"{self.genesis.name_of(m)}={t}" for m, t in sorted(core.term_claims().items())))
