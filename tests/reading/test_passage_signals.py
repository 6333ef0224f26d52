"""The one reading both tiers do (reading/passages.py) and the signals read off it (reading/signals.py),
with a scripted model: what is asked of each passage, in which order, which passage is answered from,
and which numbers the routing models get."""

from __future__ import annotations

import math

import pytest
from reading_helpers import Scripted

from reading.passages import (
    NO_VERIFY,
    PassageReading,
    PassageSignals,
    choose,
    read_each,
)
from reading.prompts import Passage, logit
from reading.signals import (
    READING_SIGNALS,
    RETRIEVAL_SIGNALS,
    PassageScore,
    agreement,
    reading_signals,
    retrieval_signals,
)

PASSAGES = [Passage("A", "Rollo was a Viking leader."), Passage("B", "Normandy is in France."),
            Passage("C", "The Seine flows through Paris.")]
Q = "Who was Rollo?"


def test_every_passage_is_probed_and_answered_then_the_best_answer_checked() -> None:
    model = Scripted([0.9, 0.3, 0.6], ["a Viking leader", "France", "Paris"])
    r = read_each(model, Q, PASSAGES, 8)
    # last-ranked first, each passage's probe then its answer (they share its prefix); the check last
    assert model.asked == [(2, "probe"), (2, "answer"), (1, "probe"), (1, "answer"), (0, "probe"), (0, "answer"),
                           (0, "verify")]
    assert [s.p_yes for s in r.passages] == pytest.approx([0.9, 0.3, 0.6])
    assert (r.chosen, r.answer, r.p_verify) == (0, "a Viking leader", pytest.approx(0.7))
    assert r.passages[0].is_span and r.passages[1].is_span  # "France" is in passage B
    assert r.passages[2].no_answer_logit == pytest.approx(logit(0.1), abs=1e-5)  # rounded to 5 places
    assert (r.prompt_tokens, r.prefilled_tokens, r.completion_tokens) == (3 * 61 + 40, 3 * 15 + 15, 3 * 3 + 1)
    assert r.timings == {"prefill": pytest.approx(3 * 1.5 + 1.0), "decode": pytest.approx(6.0)}
    assert r.p_answerable == pytest.approx(0.9)


def test_the_answer_comes_from_the_best_passage_that_gave_one() -> None:
    model = Scripted([0.9, 0.8, 0.2], ["unanswerable", "France", "Paris"])
    r = read_each(model, Q, PASSAGES, 8)
    assert (r.chosen, r.answer) == (1, "France") and r.passages[0].answer == ""
    assert (1, "verify") in model.asked
    # no passage gave an answer: the highest p(yes), and nothing to check
    model = Scripted([0.2, 0.8, 0.2], ["unanswerable", "I don't know", "none"])
    r = read_each(model, Q, PASSAGES, 8)
    assert (r.chosen, r.answer, r.p_verify) == (1, "", NO_VERIFY) and all(k != "verify" for _, k in model.asked)


def test_ties_go_to_the_better_ranked_passage() -> None:
    signals = [PassageSignals(0.5, "x", "x", (), 0.0, False) for _ in range(3)]
    assert choose(signals) == 0 and choose([]) == -1


def test_a_reading_travels_as_json_and_a_malformed_one_is_refused() -> None:
    r = read_each(Scripted([0.9, 0.3, 0.6], ["a Viking leader", "France", "Paris"]), Q, PASSAGES, 8)
    again = PassageReading.from_json(r.to_json())
    assert again.passages == r.passages and (again.chosen, again.p_verify) == (r.chosen, r.p_verify)
    good = r.to_json()
    for bad in ({**good, "chosen": 3}, {**good, "chosen": True}, {**good, "p_verify": float("nan")},
                {**good, "passages": [{**good["passages"][0], "p_yes": 1.5}]},
                {**good, "passages": [{**good["passages"][0], "is_span": "yes"}]}, {"chosen": 0}, []):
        with pytest.raises(ValueError):
            PassageReading.from_json(bad)


SCORES = [PassageScore(0.9, 0.7, 0.5), PassageScore(0.6, 0.5, 0.2), PassageScore(0.4, 0.3, 0.1)]


def test_the_signals_describe_the_passage_answered_from_not_the_first() -> None:
    """Finding 6: the edge features described passage 0, not the passage the edge answered from."""
    model = Scripted([0.3, 0.4, 0.95], ["Normandy", "France", "Paris"], verify_p=0.8)
    r = read_each(model, "Where does the Seine flow?", PASSAGES, 8)
    s = reading_signals("Where does the Seine flow?", r, SCORES)
    assert set(s) == set(READING_SIGNALS)
    assert (s["rank_chosen"], s["fused_chosen"], s["dense_chosen"], s["sparse_chosen"]) == (2.0, 0.4, 0.3, 0.1)
    assert s["p_yes_max"] == pytest.approx(logit(0.95)) and s["p_yes_second"] == pytest.approx(logit(0.4))
    assert s["p_yes_chosen"] == pytest.approx(logit(0.95)) and s["p_verify"] == pytest.approx(logit(0.8))
    assert (s["has_answer"], s["is_span"], s["answered_share"], s["agree"]) == (1.0, 1.0, 1.0, 0.0)
    assert s["lp_first"] == pytest.approx(-0.2) and s["lp_min"] == pytest.approx(-0.4)
    assert s["lp_mean"] == pytest.approx(-0.3)
    assert s["answer_words"] == pytest.approx(math.log(2))
    assert retrieval_signals(SCORES) == {"top_fused": 0.9, "margin_fused": pytest.approx(0.3), "top_dense": 0.7,
                                         "top_sparse": 0.5}
    assert set(retrieval_signals([])) == set(RETRIEVAL_SIGNALS)


def test_agreement_is_token_f1_and_two_silences_agree() -> None:
    assert agreement("the Seine river", "Seine River") == 1.0
    assert agreement("", "") == 1.0 and agreement("", "Paris") == 0.0
    assert agreement("Paris France", "Paris") == pytest.approx(2 / 3)


def test_a_reading_of_other_passages_than_the_scores_is_refused() -> None:
    r = read_each(Scripted([0.9, 0.3, 0.6], ["a", "b", "c"]), Q, PASSAGES, 8)
    with pytest.raises(ValueError, match="3 passages with 2 retrieval scores"):
        reading_signals(Q, r, SCORES[:2])
