from __future__ import annotations

import pytest

from eval.squad_metrics import (
    Question,
    compute_exact,
    compute_prf,
    evaluate,
    normalize_answer,
    score_question,
)


def q(qid: str, *answers: str) -> Question:
    return Question(qid, "?", "ctx", "t", tuple(answers) if answers else ("",))


def test_normalization_matches_official_rules() -> None:
    assert normalize_answer("The Eiffel  Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"


def test_exact_and_f1_by_hand() -> None:
    assert compute_exact("the Normans", "Normans.") == 1
    p, r, f = compute_prf("10th and 11th centuries", "in the 10th century")
    # gold tokens: 10th and 11th centuries (4); pred: in 10th century (3); common: 10th
    assert (p, r) == pytest.approx((1 / 3, 1 / 4))
    assert f == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))


def test_unanswerable_scores_one_only_for_empty_prediction() -> None:
    assert score_question(q("x"), "") == {"exact": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert score_question(q("x"), "France")["f1"] == 0.0
    assert score_question(q("y", "France"), "")["f1"] == 0.0


def test_max_over_multiple_gold_answers() -> None:
    s = score_question(q("x", "Denmark, Iceland and Norway", "Norway"), "Norway")
    assert s["exact"] == 1.0 and s["f1"] == 1.0


def test_evaluate_totals_on_0_100_scale() -> None:
    qs = [q("a", "France"), q("b", "Rollo"), q("c"), q("d")]
    res = evaluate(qs, {"a": "France", "b": "Rollo the Viking", "c": "", "d": "Paris"})
    f1_b = 2 * (1 / 2) * 1 / (1 / 2 + 1)  # pred tokens: rollo, viking ('the' dropped)
    assert res["n"] == 4
    assert res["exact"] == pytest.approx(50.0)
    assert res["f1"] == pytest.approx(100 * (1 + f1_b + 1 + 0) / 4)
    assert res["has_ans_f1"] == pytest.approx(100 * (1 + f1_b) / 2)
    assert res["no_ans_accuracy"] == pytest.approx(50.0)


def test_always_no_answer_baseline_equals_noans_share() -> None:
    qs = [q("a", "France"), q("c"), q("d")]
    assert evaluate(qs, {})["f1"] == pytest.approx(200 / 3)
