"""Tests that kill mutants mutation testing found unchecked in the transport's receive path (issue 22, TESTING.md):
a message's signature work is charged in full to its sender's bucket, the bucket's limits hold at their exact
boundaries, and a bulk frame of exactly the limit is accepted."""
from __future__ import annotations

import hashlib

import pytest

from swarm.transport.framing import FrameError, bulk_header, parse_bulk_header
from swarm.transport.rate_limit import PeerRateLimiter, TokenBucket


def test_a_message_is_charged_its_whole_signature_work_at_the_time_it_arrives():
    limiter = PeerRateLimiter(rate=1.0, burst=5.0)
    assert limiter.allow("p", 100.0, cost=5.0)        # a certificate of 5 checks takes the whole burst
    assert not limiter.allow("p", 100.0, cost=5.0)    # the same again at once: nothing left
    assert not limiter.allow("p", 100.0)              # not even one plain message
    assert limiter.allow("p", 101.0)                  # one second later: one token back
    assert not limiter.allow("q", 100.0, cost=6.0)    # more than a burst is never allowed
    assert limiter.allow("q", 100.0, cost=5.0)        # and was not charged


def test_a_burst_of_one_is_valid_and_less_is_refused_at_start():
    assert TokenBucket(1.0, 1.0, 0.0).take(0.0)
    PeerRateLimiter(1.0, 1.0)
    for rate, burst in ((0.0, 5.0), (1.0, 0.99)):
        with pytest.raises(ValueError, match="need rate > 0 and burst >= 1"):
            PeerRateLimiter(rate, burst)


def test_a_bulk_frame_of_exactly_the_limit_is_accepted_and_one_byte_more_refused():
    digest = hashlib.sha256(b"x").digest()
    assert parse_bulk_header(bulk_header(1000, digest), 1000) == (1000, digest)
    with pytest.raises(FrameError, match="1001 bytes exceeds the 1000 byte limit"):
        parse_bulk_header(bulk_header(1001, digest), 1000)
    with pytest.raises(FrameError, match="bad bulk magic"):
        parse_bulk_header(b"XXXX" + bulk_header(10, digest)[4:], 1000)
