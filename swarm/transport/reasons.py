"""The fixed reasons the transport reports a peer's misbehaviour under (shared by the engine's supervisor and its
payload streams)."""

# Misbehaviour reports are these fixed texts only (the node counts them under fixed labels, node/peer_scores.py):
# nothing a peer sends ever becomes part of a reason; details go to the log.
NOT_A_MEMBER = "not a genesis member: connection refused"
STREAM_FROM_NON_MEMBER = "stream from a non-member"
MALFORMED_FRAME = "malformed frame"
BAD_FETCH_ANSWER = "bad fetch answer"
FLOODING = "flooding"
BANNED = "banned"  # a stream from a peer the node has banned, reset unread (counted as a drop, not a new penalty)
