"""The signals a routing decision reads, from a tier's passage reading and the retrieval scores.

Every signal is a plain float with a fixed name, so the fitted answer/abstain models (logistic
regressions, `make calibrate`) are evaluated with a dot product on the edge, and the same function
turns a live reading and a recorded one into the same numbers. Probabilities enter as log-odds.

- :func:`retrieval_signals` — the retrieved passages' scores (known before any model reads).
- :func:`reading_signals` — one tier's reading: p(yes) per passage, the chosen answer's no-answer
  log-odds, token logprobs, verification, shape, and where it came from.
- :func:`agreement` — how far two answers agree (the edge's and the cloud's).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from reading.passages import PassageReading
from reading.prompts import logit
from reading.text import normalize_answer


@dataclass(frozen=True)
class PassageScore:
    """One retrieved passage's scores: fused, dense cosine, BM25 per query term (0 when not hybrid)."""

    fused: float
    dense: float
    sparse: float


RETRIEVAL_SIGNALS: tuple[str, ...] = (
    "top_fused",  # fused score of the best-ranked passage
    "margin_fused",  # best minus second fused score
    "top_dense",  # cosine of the best-ranked passage
    "top_sparse",  # its BM25 per query term
)

READING_SIGNALS: tuple[str, ...] = (
    "p_yes_max",  # log-odds of the highest per-passage p(yes)
    "p_yes_second",  # ... of the second highest (the top one against the rest)
    "p_yes_chosen",  # ... of the passage answered from
    "no_answer_chosen",  # log-odds of "unanswerable" at the chosen answer's first step
    "no_answer_min",  # the lowest of those over the passages (the most willing one)
    "lp_first",  # the chosen reply's first token logprob
    "lp_mean",  # ... mean token logprob
    "lp_min",  # ... lowest token logprob
    "has_answer",  # the chosen passage gave an answer
    "is_span",  # ... that occurs verbatim in it
    "p_verify",  # log-odds of "yes, the passage states that X answers the question"
    "answer_words",  # log1p of the answer's words
    "question_overlap",  # share of the answer's words already in the question
    "agree",  # share of the other passages whose answer matches it (F1 >= 0.5)
    "answered_share",  # share of passages that gave an answer
    "rank_chosen",  # retrieval rank of the passage answered from (0 = best)
    "fused_chosen",  # its fused score
    "dense_chosen",  # its dense cosine
    "sparse_chosen",  # its BM25 per query term
)


def retrieval_signals(scores: Sequence[PassageScore]) -> dict[str, float]:
    """The :data:`RETRIEVAL_SIGNALS` of a ranked list (zeros when nothing was retrieved)."""
    if not scores:
        return dict.fromkeys(RETRIEVAL_SIGNALS, 0.0)
    top = scores[0]
    return {"top_fused": top.fused, "margin_fused": top.fused - (scores[1].fused if len(scores) > 1 else 0.0),
            "top_dense": top.dense, "top_sparse": top.sparse}


def token_f1(a: str, b: str) -> float:
    """SQuAD's token F1 between two answers; two empty answers agree (1.0)."""
    x, y = normalize_answer(a).split(), normalize_answer(b).split()
    if not x or not y:
        return float(x == y)
    common = sum((Counter(x) & Counter(y)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(x), common / len(y)
    return 2 * precision * recall / (precision + recall)


def agreement(a: str, b: str) -> float:
    """How far two answers agree: token F1 (1.0 when both say "no answer")."""
    return token_f1(a, b)


def reading_signals(question: str, reading: PassageReading, scores: Sequence[PassageScore]) -> dict[str, float]:
    """The :data:`READING_SIGNALS` of one tier's reading; ``scores`` are the retrieved passages' retrieval
    scores, in the reading's order (a reading may hold only the first few: a lean plan skips passages far
    under the best one).

    Signals of answers (the no-answer log-odds, agreement, the share answered) count the passages that
    were asked for one: a lean reading answers only its best passage.

    :raises ValueError: the reading holds more passages than were retrieved.
    """
    sigs = reading.passages
    joint = len(sigs) == 1  # the joint reading (and a reading of no passage at all) is one entry
    if len(sigs) > len(scores) and not joint:
        raise ValueError(f"a reading of {len(sigs)} passages with {len(scores)} retrieval scores")
    scores = scores or [PassageScore(0.0, 0.0, 0.0)]
    if not sigs:
        return {**dict.fromkeys(READING_SIGNALS, 0.0), "p_yes_max": logit(0.0), "p_yes_second": logit(0.0),
                "p_yes_chosen": logit(0.0), "p_verify": logit(reading.p_verify)}
    c = max(reading.chosen, 0)
    chosen = sigs[c]
    p = sorted((s.p_yes for s in sigs), reverse=True)
    lps = [x for x in chosen.token_logprobs if math.isfinite(x)]
    words = normalize_answer(chosen.answer).split()
    q_words = set(normalize_answer(question).split())
    asked = [s for s in sigs if s.asked] or [chosen]
    others = [s for i, s in enumerate(sigs) if i != c and s.asked]
    score = scores[c] if c < len(scores) else scores[0]
    return {
        "p_yes_max": logit(p[0]),
        "p_yes_second": logit(p[1] if len(p) > 1 else 0.0),
        "p_yes_chosen": logit(chosen.p_yes),
        "no_answer_chosen": chosen.no_answer_logit,
        "no_answer_min": min(s.no_answer_logit for s in asked),
        "lp_first": lps[0] if lps else 0.0,
        "lp_mean": sum(lps) / len(lps) if lps else 0.0,
        "lp_min": min(lps) if lps else 0.0,
        "has_answer": float(bool(chosen.answer)),
        "is_span": float(chosen.is_span),
        "p_verify": logit(reading.p_verify),
        "answer_words": math.log1p(len(words)),
        "question_overlap": sum(w in q_words for w in words) / len(words) if words else 0.0,
        "agree": (sum(token_f1(chosen.answer, s.answer) >= 0.5 for s in others if s.answer) / len(others)
                  if others and chosen.answer else 0.0),
        "answered_share": sum(bool(s.answer) for s in asked) / len(asked),
        "rank_chosen": float(c),
        "fused_chosen": score.fused,
        "dense_chosen": score.dense,
        "sparse_chosen": score.sparse,
    }
