"""What one member's messages can make a replica remember: per sender, one digest per (term, round) and a few terms
per round; the lowest term goes first, and nobody else's records are touched."""
from consensus.bounds import MAX_TERMS_PER_ROUND, record_proposal, record_signature


def test_one_digest_per_sender_term_and_round():
    table = {}
    assert record_signature(table, 3, 7, b"a", "x", b"sig-a")
    assert not record_signature(table, 3, 7, b"b", "x", b"sig-b")  # x already signed another digest in (3, 7)
    assert record_signature(table, 3, 7, b"a", "x", b"sig-a")       # the same one again is fine
    assert record_signature(table, 3, 7, b"b", "y", b"sig-y")       # y is not held to x's choice
    assert table == {(3, 7, b"a"): {"x": b"sig-a"}, (3, 7, b"b"): {"y": b"sig-y"}}


def test_the_lowest_term_of_a_sender_is_evicted_and_only_its_own_signature():
    table = {}
    for term in range(1, MAX_TERMS_PER_ROUND + 1):
        assert record_signature(table, term, 7, b"d", "x", b"x%d" % term)
    record_signature(table, 1, 7, b"d", "y", b"y1")
    record_signature(table, 1, 8, b"e", "x", b"next round")           # another round has its own allowance
    assert record_signature(table, 100, 7, b"d", "x", b"x100")
    assert table[(1, 7, b"d")] == {"y": b"y1"}                          # x's term 1 went, y's stayed
    assert (100, 7, b"d") in table and (1, 8, b"e") in table
    assert not record_signature(table, 1, 7, b"d", "x", b"old again")   # below every term x now holds
    terms_of_x = sorted(k[0] for k, sigs in table.items() if k[1] == 7 and "x" in sigs)
    assert terms_of_x == [2, 3, 4, 100][-MAX_TERMS_PER_ROUND:]


def test_flood_of_terms_and_digests_stays_flat():
    table, seen = {}, {}
    for i in range(10_000):
        record_signature(table, i % 977, 7 + i % 2, i.to_bytes(4, "big"), "x", b"s")
        record_proposal(seen, "x", i % 977, 7 + i % 2, i.to_bytes(4, "big"), b"s")
    assert sum(len(sigs) for sigs in table.values()) <= 2 * MAX_TERMS_PER_ROUND
    assert len(seen) <= 2 * MAX_TERMS_PER_ROUND


def test_the_first_proposal_per_term_is_what_a_replica_keeps():
    seen = {}
    record_proposal(seen, "x", 5, 9, b"a", b"sa")
    for term in range(6, 6 + MAX_TERMS_PER_ROUND):
        record_proposal(seen, "x", term, 9, b"b", b"sb")
    assert ("x", 5, 9) not in seen and len(seen) == MAX_TERMS_PER_ROUND
    record_proposal(seen, "x", 1, 9, b"c", b"sc")  # older than all kept: ignored
    assert ("x", 1, 9) not in seen
