"""A replica's role within its term: ELECTING (term entered, no leader known), CANDIDATE, FOLLOWER, LEADER."""

ELECTING, CANDIDATE, FOLLOWER, LEADER = "electing", "candidate", "follower", "leader"
