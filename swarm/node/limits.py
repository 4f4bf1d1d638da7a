"""Size limits that follow the model: the largest gradient envelope and snapshot a member of this swarm can send,
how long a fetch of that many bytes may take, and how long a consensus timeout may grow, derived from the genesis (the model's dimension, the members)
instead of fixed constants, so that a larger model does not hit a cliff (a 64 MiB cap used to stop snapshots,
resync and catch-up at about 8M parameters).

The transport's ``max_payload_bytes`` grows to what the model needs when it is left at its default; a limit an
operator set that cannot hold the model is refused at start, with the numbers.
"""
from __future__ import annotations

from swarm.config import ConfigError, ConsensusConfig, TransportConfig

DEFAULT_MAX_PAYLOAD_BYTES = TransportConfig().max_payload_bytes
HEADER_ALLOWANCE = 1 << 20        # envelope fields, snapshot header, codec headers: far more than any needs
PER_MEMBER_ALLOWANCE = 512        # a member's row in the snapshot's reputation table
BASE_FETCH_TIMEOUT_S = 5.0
ASSUMED_BYTES_PER_S = 4 << 20     # a slow link still gets its payload through before the deadline
MIN_TIMEOUT_CAP_S = 120.0         # the cap small models keep (the consensus core's own default)


def needed_payload_bytes(dim: int, members: int) -> int:
    """The largest payload a peer may have to send us: a snapshot (float32 parameters and momentum, 8 bytes a
    parameter) is the biggest; an uncompressed gradient is 4 bytes a parameter."""
    return 8 * dim + PER_MEMBER_ALLOWANCE * members + HEADER_ALLOWANCE


def settle_payload_limit(transport: TransportConfig, dim: int, members: int, source: str = "node config") -> int:
    """The payload limit this node runs with; raises ConfigError when the configured one cannot hold the model."""
    needed = needed_payload_bytes(dim, members)
    if transport.max_payload_bytes >= needed:
        return transport.max_payload_bytes
    if transport.max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES:
        return needed
    raise ConfigError(source, "transport.max_payload_bytes",
                      f"at least {needed} bytes for this model ({dim} parameters: a snapshot is 8 bytes a parameter "
                      f"plus headers), got {transport.max_payload_bytes}; raise it or leave it unset")


def fetch_timeout_s(payload_limit: int) -> float:
    """How long one fetch may take: a base for the round trip plus the limit at a slow link's rate."""
    return BASE_FETCH_TIMEOUT_S + payload_limit / ASSUMED_BYTES_PER_S


def timeout_cap_s(consensus: ConsensusConfig, dim: int, payload_limit: int, source: str = "node config") -> float:
    """The longest a consensus timeout may grow to. A fixed 120 s cut every round of a model whose payloads take
    longer than that to move short, and the backed-off timeouts never caught up: derived, it is at least twice a
    fetch of the largest payload. A configured cap shorter than one fetch of an update (4 bytes a parameter) could
    never let a round finish, so it is refused with the numbers."""
    if consensus.max_timeout_s is None:
        return max(MIN_TIMEOUT_CAP_S, 2 * fetch_timeout_s(payload_limit))
    needed = fetch_timeout_s(4 * dim + HEADER_ALLOWANCE)
    if consensus.max_timeout_s < needed:
        raise ConfigError(source, "consensus.max_timeout_s",
                          f"at least {needed:.0f} s for this model ({dim} parameters: one update of {4 * dim} bytes "
                          f"at {ASSUMED_BYTES_PER_S >> 20} MiB/s plus {BASE_FETCH_TIMEOUT_S:.0f} s), got "
                          f"{consensus.max_timeout_s:g}; raise it or leave it unset")
    return consensus.max_timeout_s
