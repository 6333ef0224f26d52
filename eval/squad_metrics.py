"""SQuAD v2 metrics exactly as the official evaluation script defines them.

normalize: lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace; a
question's score is the max over its gold answers; an unanswerable question's only gold answer
is the empty string; all scores on a 0-100 scale.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def get_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def compute_exact(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def compute_prf(gold: str, pred: str) -> tuple[float, float, float]:
    """Token precision, recall and F1 of one prediction against one gold answer (0-1)."""
    gold_toks, pred_toks = get_tokens(gold), get_tokens(pred)
    if not gold_toks or not pred_toks:
        # If either is no-answer, all three are 1 when both are, else 0.
        same = float(gold_toks == pred_toks)
        return same, same, same
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0, 0.0, 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return precision, recall, 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Question:
    """One SQuAD v2 question with its gold answers ([''] when unanswerable)."""

    id: str
    question: str
    context: str
    title: str
    answers: tuple[str, ...]

    @property
    def has_answer(self) -> bool:
        return self.answers != ("",)


def gold_answers(qa: Mapping[str, Any]) -> tuple[str, ...]:
    """Gold answer texts of a SQuAD v2 question; ('',) when it is unanswerable."""
    texts = [str(a["text"]) for a in qa.get("answers") or [] if normalize_answer(str(a.get("text", "")))]
    return tuple(texts) if texts else ("",)


def score_question(q: Question, pred: str) -> dict[str, float]:
    """exact, f1, precision, recall (0-1) of ``pred``: max over gold answers (by F1 for P/R)."""
    exact = max(compute_exact(g, pred) for g in q.answers)
    prf = max((compute_prf(g, pred) for g in q.answers), key=lambda t: t[2])
    return {"exact": float(exact), "precision": prf[0], "recall": prf[1], "f1": prf[2]}


def evaluate(questions: Sequence[Question], preds: Mapping[str, str]) -> dict[str, float]:
    """Official-style totals on a 0-100 scale; a question missing from ``preds`` counts as ''."""
    rows = [(q, score_question(q, preds.get(q.id, ""))) for q in questions]

    def mean(key: str, subset: list[tuple[Question, dict[str, float]]]) -> float:
        return 100.0 * sum(s[key] for _, s in subset) / len(subset) if subset else 0.0

    has = [r for r in rows if r[0].has_answer]
    no = [r for r in rows if not r[0].has_answer]
    return {
        "n": float(len(rows)),
        "exact": mean("exact", rows),
        "f1": mean("f1", rows),
        "precision": mean("precision", rows),
        "recall": mean("recall", rows),
        "has_ans_n": float(len(has)),
        "has_ans_exact": mean("exact", has),
        "has_ans_f1": mean("f1", has),
        "no_ans_n": float(len(no)),
        "no_ans_accuracy": mean("exact", no),
    }
