"""The read plan (reading/passages.py): how much of the per-passage reading a tier does — every passage
answered and the answer checked, or only the best one answered and passages far under the best retrieval
score not read — and that a lean reading derived from a full one (`under_plan`, which `make calibrate`
fits on) is the reading the lean plan does itself."""

from __future__ import annotations

import random

import pytest
from reading_helpers import Scripted

from reading.passages import FULL, NO_VERIFY, PassageReading, PassageSignals, ReadPlan, read_each, under_plan
from reading.prompts import Passage, logit
from reading.signals import READING_SIGNALS, PassageScore, reading_signals

Q = "Who was Rollo?"
LEAN = ReadPlan("best", verify=False)


def passages(scores: list[float]) -> list[Passage]:
    return [Passage(f"T{i}", f"Passage {i} says something about Rollo and item{i}.", f"p{i}", s)
            for i, s in enumerate(scores)]


def scripted(p_yes: list[float], answers: list[str]) -> Scripted:
    """The scripted model, each passage with its own no-answer probability (0.05, 0.15, …)."""
    return Scripted(p_yes, answers, no_answer=[0.05 + 0.1 * i for i in range(len(answers))])


def test_a_lean_reading_probes_every_passage_then_answers_only_the_best() -> None:
    model = scripted([0.4, 0.9, 0.6], ["item0", "item1", "item2"])
    r = read_each(model, Q, passages([0.9, 0.88, 0.87]), 8, LEAN)
    assert model.asked == [(2, "probe"), (1, "probe"), (0, "probe"), (1, "answer")]  # no check either
    assert (r.chosen, r.answer, r.p_verify) == (1, "item1", NO_VERIFY)
    assert [s.asked for s in r.passages] == [False, True, False]
    assert [s.p_yes for s in r.passages] == pytest.approx([0.4, 0.9, 0.6])
    # the full plan is the reading before: every passage probed and answered, the chosen answer checked
    model = scripted([0.4, 0.9, 0.6], ["item0", "item1", "item2"])
    read_each(model, Q, passages([0.9, 0.88, 0.87]), 8, FULL)
    assert len(model.asked) == 7 and model.asked[-1] == (1, "verify")


def test_passages_far_under_the_best_retrieval_score_are_not_read() -> None:
    model = scripted([0.4, 0.9, 0.6], ["item0", "item1", "item2"])
    r = read_each(model, Q, passages([0.9, 0.86, 0.5]), 8, ReadPlan("best", verify=False, gap=0.05))
    assert len(r.passages) == 2 and {i for i, _ in model.asked} == {0, 1}
    assert ReadPlan(gap=0.05).kept([0.9, 0.2, 0.88]) == 1  # ranked: the first far one ends the read
    assert ReadPlan(gap=0.0).kept([0.5, 0.5, 0.4]) == 2 and ReadPlan(gap=0.3).kept([]) == 0
    assert ReadPlan(gap=None).kept([0.9, 0.0]) == 2


def test_a_lean_reading_whose_best_passage_says_no_answer_says_no_answer() -> None:
    model = scripted([0.4, 0.9, 0.6], ["item0", "unanswerable", "item2"])
    r = read_each(model, Q, passages([0.9, 0.9, 0.9]), 8, LEAN)
    assert (r.chosen, r.answer) == (1, "") and model.asked[-1] == (1, "answer")


@pytest.mark.parametrize("seed", range(40))
def test_the_lean_reading_derived_from_a_full_one_is_the_lean_reading_itself(seed: int) -> None:
    """`make calibrate` fits the lean plan's models on readings derived from recorded full ones: they must be
    what the lean plan reads, passage for passage (same prompts, so the same replies)."""
    rng = random.Random(seed)
    k = rng.randint(1, 4)
    p = [round(rng.uniform(0.05, 0.95), 2) for _ in range(k)]
    answers = [rng.choice(["item0", "item1", "unanswerable", "item3", "I don't know"]) for _ in range(k)]
    scores = sorted((round(rng.uniform(0.2, 1.0), 3) for _ in range(k)), reverse=True)
    plan = ReadPlan("best", verify=False, gap=rng.choice([None, 0.02, 0.1, 0.3]))
    full = read_each(scripted(p, answers), Q, passages(scores), 8, FULL)
    lean = read_each(scripted(p, answers), Q, passages(scores), 8, plan)
    derived = under_plan(full, plan, scores)
    assert derived.passages == lean.passages and (derived.chosen, derived.p_verify) == (lean.chosen, lean.p_verify)
    assert under_plan(full, FULL, scores).passages == full.passages


def test_under_plan_refuses_what_it_cannot_derive() -> None:
    full = read_each(scripted([0.9, 0.95], ["unanswerable", "item1"]), Q, passages([0.9, 0.5]), 8, FULL)
    with pytest.raises(ValueError, match="full reading"):
        under_plan(full, LEAN, [0.9])
    lean = read_each(scripted([0.9, 0.95], ["item0", "item1"]), Q, passages([0.9, 0.5]), 8, LEAN)
    with pytest.raises(ValueError, match="full reading"):
        under_plan(lean, LEAN, [0.9, 0.5])
    # the full reading checked passage 1's answer; a plan that reads passage 0 only would check another
    with pytest.raises(ValueError, match="did not check"):
        under_plan(read_each(scripted([0.9, 0.95], ["item0", "item1"]), Q, passages([0.9, 0.5]), 8, FULL),
                   ReadPlan("all", verify=True, gap=0.1), [0.9, 0.5])


def test_the_signals_of_a_lean_reading_count_the_answers_asked_for() -> None:
    scores = [PassageScore(0.9, 0.7, 0.5), PassageScore(0.88, 0.5, 0.2), PassageScore(0.87, 0.3, 0.1)]
    lean = read_each(scripted([0.4, 0.9, 0.6], ["item0", "item1", "item2"]), Q, passages([0.9, 0.88, 0.87]), 8, LEAN)
    s = reading_signals(Q, lean, scores)
    assert set(s) == set(READING_SIGNALS)
    assert s["no_answer_min"] == s["no_answer_chosen"] == pytest.approx(logit(0.15), abs=1e-5)  # passage 1's only
    assert (s["answered_share"], s["agree"], s["rank_chosen"], s["dense_chosen"]) == (1.0, 0.0, 1.0, 0.5)
    assert s["p_yes_second"] == pytest.approx(logit(0.6))
    # a reading of the first passages only: their scores are the first ones
    short = read_each(scripted([0.4, 0.9], ["item0", "item1"]), Q, passages([0.9, 0.88]), 8, LEAN)
    assert reading_signals(Q, short, scores)["fused_chosen"] == 0.88
    with pytest.raises(ValueError, match="3 passages with 2 retrieval scores"):
        reading_signals(Q, lean, scores[:2])


def test_a_plan_and_a_lean_reading_travel_as_json_and_bad_ones_are_refused() -> None:
    for plan in (FULL, LEAN, ReadPlan("best", False, 0.05)):
        assert ReadPlan.from_json(plan.to_json()) == plan
    for bad in ({"answer": "some", "verify": True, "gap": None}, {"answer": "all", "verify": "yes", "gap": None},
                {"answer": "all", "verify": True, "gap": -1}, {"answer": "all", "verify": True, "gap": "wide"},
                {"answer": "all", "verify": True, "gap": float("nan")}, [], None):
        with pytest.raises(ValueError):
            ReadPlan.from_json(bad)
    lean = read_each(scripted([0.4, 0.9], ["item0", "item1"]), Q, passages([0.9, 0.88]), 8, LEAN)
    again = PassageReading.from_json(lean.to_json())
    assert again.passages == lean.passages and not again.passages[0].asked
    assert "asked" not in lean.to_json()["passages"][1]  # a full passage's JSON is as before
    with pytest.raises(ValueError):
        PassageSignals.from_json({**lean.to_json()["passages"][0], "asked": "no"})


def test_a_prompt_lookup_draft_continues_the_reply_where_the_prompt_has_it() -> None:
    from reading.reader import draft

    prompt = [5, 6, 7, 8, 9, 1, 6, 7, 2, 3]
    assert draft(prompt, [6, 7], 3) == [2, 3]  # the latest occurrence of the reply's last tokens
    assert draft(prompt, [4, 8], 4) == [9, 1, 6, 7]  # the last token alone when the pair is not in the prompt
    assert draft(prompt, [4, 8], 4, min_ngram=2) == []  # ... unless single tokens may not start a draft
    assert draft(prompt, [11], 4) == [] and draft(prompt, [], 4) == [] and draft(prompt, [6, 7], 0) == []
    assert draft(prompt, [3], 4) == []  # at the prompt's end: nothing follows
