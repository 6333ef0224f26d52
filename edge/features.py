"""The edge's signals for routing: the retrieval scores and the edge model's passage reading.

Every signal is a plain float (see :mod:`reading.signals`, where they are defined once for both
tiers), so the fitted answer/abstain models (:mod:`pipelines.calibration`) are evaluated with a dot
product on the edge, without scikit-learn. The edge's reading signals are named ``edge.<signal>``, the cloud's ``cloud.<signal>``.
"""

from __future__ import annotations

from collections.abc import Sequence

from haystack import Document

from edge import sparse
from reading.passages import PassageReading
from reading.signals import (
    READING_SIGNALS,
    RETRIEVAL_SIGNALS,
    PassageScore,
    reading_signals,
    retrieval_signals,
)

EDGE_SIGNALS: tuple[str, ...] = (*RETRIEVAL_SIGNALS, *(f"edge.{s}" for s in READING_SIGNALS))


def passage_scores(question: str, documents: Sequence[Document]) -> list[PassageScore]:
    """Each retrieved passage's fused, dense and per-query-term BM25 scores."""
    n_terms = max(len(set(sparse.terms(question))), 1)
    return [PassageScore(round(float(d.score or 0.0), 6), round(float((d.meta or {}).get("dense_score") or 0.0), 6),
                         round(float((d.meta or {}).get("sparse_score") or 0.0) / n_terms, 6)) for d in documents]


def tier_signals(tier: str, question: str, reading: PassageReading, scores: Sequence[PassageScore]) -> dict[str, float]:
    """One tier's reading signals, named ``<tier>.<signal>``."""
    return {f"{tier}.{k}": v for k, v in reading_signals(question, reading, scores).items()}


def edge_features(question: str, scores: Sequence[PassageScore], reading: PassageReading) -> dict[str, float]:
    """The :data:`EDGE_SIGNALS` of one edge reading."""
    return {**retrieval_signals(scores), **tier_signals("edge", question, reading, scores)}
