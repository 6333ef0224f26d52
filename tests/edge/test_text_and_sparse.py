from __future__ import annotations

import pytest

from edge import sparse
from edge.fusion import fuse
from reading.text import find_span, normalize_answer


def test_normalize_answer_drops_case_punctuation_articles_and_spaces() -> None:
    assert normalize_answer("  The  Norman-Conquest, of AN age! ") == "normanconquest of age"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("France", (24, 30)),
        ("france.", (24, 30)),
        ('"France"', (24, 30)),
        ("the 10th century", (43, 55)),
        ("Germany", None),
        ("", None),
    ],
)
def test_find_span_locates_answer_case_insensitively(answer: str, expected: tuple[int, int] | None) -> None:
    passage = "Normandy is a region in France, settled in 10th century."
    span = find_span(answer, passage)
    assert span == expected
    if span:
        assert passage[span[0] : span[1]].lower() in answer.lower()


def test_terms_drop_stopwords_and_plural() -> None:
    assert sparse.terms("What are the capitals of the Normans?") == ["capital", "norman"]


def test_document_vector_saturates_term_frequency() -> None:
    ids, vals = sparse.document_vector("Miret Miret Miret harbour", avg_len=4)
    weights = dict(zip(ids, vals))
    assert weights[sparse.term_id("miret")] > weights[sparse.term_id("harbour")]
    # BM25 saturation: three occurrences weigh less than three times one.
    assert weights[sparse.term_id("miret")] < 3 * weights[sparse.term_id("harbour")]


def test_query_vector_is_unique_sorted_unit_weights() -> None:
    ids, vals = sparse.query_vector("glacier glacier river")
    assert ids == sorted(ids) and len(ids) == 2 and vals == [1.0, 1.0]


def test_term_ids_are_stable_31_bit() -> None:
    assert sparse.term_id("norman") == sparse.term_id("norman")
    assert 0 <= sparse.term_id("norman") < 2**31


def test_convex_fusion_mixes_normalised_scores() -> None:
    dense = [("a", 0.9), ("b", 0.5)]
    bm25 = [("b", 10.0), ("c", 5.0)]
    out = dict(fuse(dense, bm25, top_k=3, method="convex", dense_weight=0.6))
    assert out["a"] == pytest.approx(0.54)
    assert out["b"] == pytest.approx(0.6 * 0.5 + 0.4 * 1.0)
    assert out["c"] == pytest.approx(0.4 * 0.5)
    assert [pid for pid, _ in fuse(dense, bm25, 3)] == ["b", "a", "c"]


def test_rrf_fusion_uses_ranks_and_weights() -> None:
    dense = [("a", 0.9), ("b", 0.5)]
    bm25 = [("b", 10.0), ("a", 1.0)]
    out = fuse(dense, bm25, top_k=2, method="rrf", dense_weight=1.0, sparse_weight=2.0)
    assert out[0][0] == "b"
    assert out[0][1] == pytest.approx(1 / 62 + 2 / 61)


def test_unknown_fusion_is_rejected() -> None:
    with pytest.raises(ValueError, match="convex, rrf"):
        fuse([], [], 1, method="max")
