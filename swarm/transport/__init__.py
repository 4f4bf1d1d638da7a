"""Peer-to-peer transport: the small interface the node uses (base.Transport) and its py-libp2p implementation."""
from swarm.transport.base import PeerInfo, PushResult, Transport

__all__ = ["PeerInfo", "PushResult", "Transport"]
