"""Confidence and answerability features of an edge answer, for the calibrated score and routing.

Every feature is a plain float so the calibrated models (logistic regressions fitted by
`make calibrate`) can be evaluated with a dot product on the edge, without scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from haystack import Document

from edge import sparse
from reading.text import find_span, normalize_answer

FEATURES: tuple[str, ...] = (
    "top_dense",  # cosine of the best passage
    "top_sparse",  # BM25 of the best passage / number of query terms
    "top_fused",  # fused retrieval score of the best passage
    "margin_fused",  # best minus second fused score
    "mean_logprob",  # mean token logprob of the reply (0 when empty)
    "min_logprob",  # lowest token logprob of the reply
    "p_answerable",  # the model's p(yes) to "is the answer stated in the passages?" (reading/prompts.py)
    "is_no_answer",  # the edge said "no answer"
    "is_span",  # the answer is a span of a retrieved passage (SQuAD answers are)
    "in_top_passage",  # ... of the best passage
    "answer_words",  # length of the answer, in words (log1p)
    "question_overlap",  # share of answer words already in the question (echoing it is a bad sign)
)


def answer_features(
    question: str,
    answer: str,
    documents: Sequence[Document],
    token_logprobs: Sequence[float],
    p_answerable: float,
) -> dict[str, float]:
    """The feature vector of one edge answer, keyed by :data:`FEATURES`."""
    meta: list[dict[str, Any]] = [d.meta or {} for d in documents]
    fused = [float(d.score or 0.0) for d in documents]
    n_terms = max(len(set(sparse.terms(question))), 1)
    spans = [bool(answer) and find_span(answer, d.content or "") is not None for d in documents]
    a_words = normalize_answer(answer).split()
    q_words = set(normalize_answer(question).split())
    return {
        "top_dense": float(meta[0].get("dense_score") or 0.0) if meta else 0.0,
        "top_sparse": float(meta[0].get("sparse_score") or 0.0) / n_terms if meta else 0.0,
        "top_fused": fused[0] if fused else 0.0,
        "margin_fused": fused[0] - fused[1] if len(fused) > 1 else (fused[0] if fused else 0.0),
        "mean_logprob": sum(token_logprobs) / len(token_logprobs) if token_logprobs else 0.0,
        "min_logprob": min(token_logprobs) if token_logprobs else 0.0,
        "p_answerable": float(p_answerable),
        "is_no_answer": 0.0 if answer else 1.0,
        "is_span": 1.0 if any(spans) else 0.0,
        "in_top_passage": 1.0 if spans and spans[0] else 0.0,
        "answer_words": math.log1p(len(a_words)),
        "question_overlap": sum(w in q_words for w in a_words) / len(a_words) if a_words else 0.0,
    }


def logistic(weights: dict[str, float], bias: float, features: dict[str, float],
             mean: dict[str, float] | None = None, scale: dict[str, float] | None = None) -> float:
    """P(y=1) of a fitted logistic regression over standardized features."""
    z = bias
    for name, w in weights.items():
        x = features.get(name, 0.0)
        if mean is not None and scale is not None:
            x = (x - mean.get(name, 0.0)) / (scale.get(name, 1.0) or 1.0)
        z += w * x
    return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))
