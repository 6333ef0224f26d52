"""An independent transcription of the official SQuAD 2.0 evaluation (evaluate-v2.0.py), kept
apart from eval/squad_metrics.py so that the tests compare two implementations, not one with itself.

Works on the raw dataset JSON and a complete predictions dict, as the official script does
(without the no-answer-probability threshold, i.e. na_prob = 0 for every question).
"""

from __future__ import annotations

import collections
import re
import string
from typing import Any


def normalize_answer(s: str) -> str:
    def remove_articles(text: str) -> str:
        return re.sub(re.compile(r"\b(a|an|the)\b", re.UNICODE), " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def get_tokens(s: str) -> list[str]:
    if not s:
        return []
    return normalize_answer(s).split()


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    gold_toks = get_tokens(a_gold)
    pred_toks = get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def official_eval(dataset: list[dict[str, Any]], preds: dict[str, str]) -> dict[str, float]:
    exact_scores: dict[str, int] = {}
    f1_scores: dict[str, float] = {}
    has_ans: dict[str, bool] = {}
    for article in dataset:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                qid = qa["id"]
                has_ans[qid] = bool(qa["answers"])
                gold_answers = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])]
                if not gold_answers:
                    gold_answers = [""]
                a_pred = preds[qid]
                exact_scores[qid] = max(compute_exact(a, a_pred) for a in gold_answers)
                f1_scores[qid] = max(compute_f1(a, a_pred) for a in gold_answers)
    total = len(exact_scores)
    out = {"exact": 100.0 * sum(exact_scores.values()) / total, "f1": 100.0 * sum(f1_scores.values()) / total,
           "total": total}
    has = [k for k, v in has_ans.items() if v]
    no = [k for k, v in has_ans.items() if not v]
    if has:
        out["HasAns_exact"] = 100.0 * sum(exact_scores[k] for k in has) / len(has)
        out["HasAns_f1"] = 100.0 * sum(f1_scores[k] for k in has) / len(has)
    if no:
        out["NoAns_exact"] = 100.0 * sum(exact_scores[k] for k in no) / len(no)
    return out
