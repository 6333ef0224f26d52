"""Reading a reply (reading/text.py): an answer that is already a span of its passage is kept whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.data import load_questions
from eval.squad_metrics import score_question
from reading.text import ground_answer, parse_answer

DEV_A = Path(__file__).resolve().parents[2] / "data" / "squad-v2-dev-a.json"


@pytest.mark.parametrize(("reply", "question", "passage"), [
    ("A Turing machine", "What is a model of computation?", "A Turing machine is a mathematical model."),
    ("William II", "Who was king after William?", "His son William II ruled England."),
    ("Computational complexity theory", "What theory classifies problems?",
     "Computational complexity theory is a branch of the theory of computation."),
    ("T(n) = O(n2)", "What is the running time?", "Its running time is T(n) = O(n2) in the worst case."),
])
def test_a_verbatim_span_of_its_passage_is_the_answer_as_it_is(reply: str, question: str, passage: str) -> None:
    """Finding 3: words the question contains and function words were stripped from replies that were
    already spans ("A Turing machine" -> "Turing", "T(n) = O(n2)" -> "O(n2")."""
    assert parse_answer(reply, question, [passage]) == reply
    assert ground_answer(reply, question, [passage]) == reply


def test_a_sentence_reply_is_still_cut_to_the_span_that_answers() -> None:
    passage = "Zorvath Island is a volcanic island. Its capital is Miret, a harbour town."
    assert parse_answer("The capital of Zorvath Island is Miret.", "What is the capital of Zorvath Island?",
                        [passage]) == "Miret"
    assert parse_answer("unanswerable", "Who?", [passage]) == ""
    assert ground_answer("Paris", "What is the capital?", [passage]) is None  # grounded in no passage
    assert parse_answer("steam", "What powers it?", ["Steam power. It runs on steam."]) == "steam"  # same case first


def test_the_gold_answers_of_dev_a_come_out_as_they_went_in() -> None:
    """Fed every gold answer of dev-a as a reply, the parser changed 12.9% of them (the ceiling HasAns F1
    fell to 96.8). Now only "None" changes: that reply means "no answer"."""
    questions = [q for q in load_questions(DEV_A) if q.has_answer]
    changed = [(q.answers[0], out) for q in questions if (out := parse_answer(q.answers[0], q.question, [q.context]))
               != q.answers[0]]
    assert changed == [("None", "")]
    ceiling = 100 * sum(score_question(q, parse_answer(q.answers[0], q.question, [q.context]))["f1"]
                        for q in questions) / len(questions)
    assert ceiling > 99.9
