"""Attacks on a live 4-node cluster on loopback (issue 23): does the swarm keep committing, and is anything lost?

    python -m bench.adversarial [--window 30] [--attacks packed_newterm,api_log,...] [--write SECURITY.md]

Starts node0..node2 of a 4-member cluster on 127.0.0.1 (swarm.ops.cluster, as `swarm cluster up` does). node3
is never started: the attacker holds its genesis key, so it passes every member gate a Byzantine member would
pass (n = 4, f = 1, quorum 3: every honest node is needed for a commit, so stalling any one of them stalls the
swarm). It measures the rounds committed in a window with no attack, then with each attack in turn, each attack a
separate attacker process on this machine:

  packed_newterm  NewTerms whose three votes carry locks packed with 1024 (member, junk signature) pairs, 40
                  messages/s on one control stream to node0, signed with node3's key (the finding: 2 rounds in 30 s)
  api_log         500 concurrent HTTP clients looping on node0's /log?from=1&limit=10000
  api_status      the same 500 clients on node0's /status
  half_open       500 HTTP requests to node0 sent up to the middle of their headers and held open; one that the
                  node closes is opened again 0.25 s later
  label_streams   thousands of libp2p streams from node3's key to node1, each carrying a frame whose error text
                  the attacker chooses (sizes, kinds, magic): /metrics size and rejection labels before and after

Rounds are read from node2 (never attacked). After each attack: how long until commits resumed, the attacker's
local score on the node it attacked (/peers), /metrics size there, node0's open descriptors at their peak. At the
end the nodes are stopped and every store is audited with `swarm verify`; chains must agree, and every payload a
committed entry names (past the retention horizon) must be on disk. `--write` puts the table in SECURITY.md.
"""
from __future__ import annotations

from bench.adversarial.run import Bench, Outcome, Window  # noqa: F401 (the harness the tests drive)
