"""Evidence on its way into the chain (swarm/evidence.py): bounded per accused member while it waits, one piece per
member in a proposal, and never proposed again once committed, across a restart too."""
from consensus.messages import Evidence, evidence_from_plain
from swarm.evidence import PENDING_PER_MEMBER, EvidenceBook
from swarm.replay import MAX_ENTRY_EVIDENCE
from swarm.store import Store


def piece(accused: str, i: int) -> Evidence:
    return Evidence(accused, 1, i, bytes([1, i]) * 16, b"a" * 64, bytes([2, i]) * 16, b"b" * 64)


def test_waiting_evidence_is_bounded_per_member_and_a_proposal_carries_one_per_member(tmp_path):
    book = EvidenceBook(Store(tmp_path))
    kept = [book.keep(piece(accused, i)) for i in range(50) for accused in ("mallory", "trudy")]
    assert sum(kept) == 2 * PENDING_PER_MEMBER
    held = sorted(e.leader for e in book.pending.values())
    assert held == ["mallory"] * PENDING_PER_MEMBER + ["trudy"] * PENDING_PER_MEMBER
    assert sorted(evidence_from_plain(p).leader for p in book.for_proposal()) == ["mallory", "trudy"]
    for i in range(10):
        book.keep(piece(f"member{i}", 0))
    assert len(book.for_proposal()) == MAX_ENTRY_EVIDENCE
    book.store.close()


def test_committed_evidence_leaves_frees_its_slot_and_is_never_kept_again(tmp_path):
    book = EvidenceBook(Store(tmp_path))
    first, second, third = piece("mallory", 1), piece("mallory", 2), piece("mallory", 3)
    assert book.keep(first) and book.keep(second) and not book.keep(third)
    book.on_commit(book.for_proposal())
    assert len(book.pending) == 1 and book.keep(third)  # its slot is free again
    committed_digest = next(iter(book.committed()))
    book.store.close()

    again = EvidenceBook(Store(tmp_path))  # a restart: the pending pieces are gone, the committed record is not
    assert again.committed() == {committed_digest}
    assert not again.keep(next(p for p in (first, second) if p.digest() == committed_digest))
    again.on_commit([])  # an entry without evidence changes nothing
    assert again.committed() == {committed_digest}
    again.store.close()
