"""Our SQuAD v2 metric against an independent transcription of the official script, on every
dev-a question with predictions of every kind (right, partial, wrong, empty, punctuation/article
variants)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from official_squad_v2 import official_eval

from eval.data import load_questions
from eval.report import accuracy

DEV_A = Path(__file__).resolve().parents[2] / "data" / "squad-v2-dev-a.json"


def _predictions(seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    preds = {}
    for article in json.loads(DEV_A.read_text())["data"]:
        for p in article["paragraphs"]:
            words = p["context"].split()
            for qa in p["qas"]:
                golds = [a["text"] for a in qa["answers"]]
                kind = rng.randrange(6)
                if kind == 0 or not golds and kind < 3:
                    preds[qa["id"]] = ""
                elif kind == 1 and golds:
                    preds[qa["id"]] = "The " + rng.choice(golds).upper() + "!!"  # article, case, punctuation
                elif kind == 2 and golds:
                    g = rng.choice(golds).split()
                    preds[qa["id"]] = " ".join(g[: max(1, len(g) // 2)] + ["extra", "words"])  # partial overlap
                else:
                    start = rng.randrange(max(len(words) - 4, 1))
                    preds[qa["id"]] = " ".join(words[start : start + rng.randint(1, 6)])  # a random span
    return preds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metric_equals_the_official_script_on_all_of_dev_a(seed: int) -> None:
    preds = _predictions(seed)
    official = official_eval(json.loads(DEV_A.read_text())["data"], preds)
    ours = accuracy(load_questions(DEV_A), preds)
    assert official["total"] == 3708
    assert ours["exact"] == pytest.approx(official["exact"], abs=0.01)
    assert ours["f1"] == pytest.approx(official["f1"], abs=0.01)
    assert ours["has_ans_exact"] == pytest.approx(official["HasAns_exact"], abs=0.01)
    assert ours["has_ans_f1"] == pytest.approx(official["HasAns_f1"], abs=0.01)
    assert ours["no_ans_accuracy"] == pytest.approx(official["NoAns_exact"], abs=0.01)
    assert 5 < official["f1"] < 95  # the mix exercises both right and wrong answers


def test_always_no_answer_baseline_on_dev_a() -> None:
    questions = load_questions(DEV_A)
    base = accuracy(questions, {})
    official = official_eval(json.loads(DEV_A.read_text())["data"], {q.id: "" for q in questions})
    assert base["f1"] == pytest.approx(official["f1"], abs=0.01)
    assert 50 <= base["f1"] <= 55  # the trivial baseline the brief quotes
