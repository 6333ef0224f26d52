from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.data import load_questions
from indexing.errors import InputFormatError


def test_loads_questions_with_gold_answers(unseen_squad: Path) -> None:
    qs = load_questions(unseen_squad)
    assert [q.id for q in qs] == ["z1", "z2", "z3", "b1", "b2"]
    z1, z2 = qs[0], qs[1]
    assert z1.answers == ("Miret",) and z1.has_answer and z1.title == "Zorvath Island"
    assert z2.answers == ("",) and not z2.has_answer  # plausible answers are not gold
    assert "capital is Miret" in z1.context


def test_limit_and_seeded_sample_are_deterministic(unseen_squad: Path) -> None:
    assert [q.id for q in load_questions(unseen_squad, limit=2)] == ["z1", "z2"]
    a = [q.id for q in load_questions(unseen_squad, limit=3, seed=7)]
    assert a == [q.id for q in load_questions(unseen_squad, limit=3, seed=7)]
    assert sorted(q.id for q in load_questions(unseen_squad, seed=7)) == ["b1", "b2", "z1", "z2", "z3"]


def test_file_without_questions_or_with_broken_qas(tmp_path: Path) -> None:
    no_qs = tmp_path / "extra.json"
    no_qs.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "text"}]}]}))
    with pytest.raises(InputFormatError, match="holds no questions"):
        load_questions(no_qs)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [{"q": 1}]}]}]}))
    with pytest.raises(InputFormatError, match="needs 'id' and 'question'"):
        load_questions(broken)


@pytest.mark.parametrize("answers", ["Rollo", [{"text": 3}], ["Rollo"], {"text": "Rollo"}, 7])
def test_answers_of_the_wrong_shape_name_the_question(tmp_path: Path, answers: object) -> None:
    """Defect #12.7: "answers": "Rollo" was an AttributeError traceback in `ecqa eval` / `ecqa score`."""
    path = tmp_path / "bad.json"
    qas = [{"id": "ok1", "question": "Fine?", "answers": [{"text": "c", "answer_start": 0}]},
           {"id": "q-rollo", "question": "Who?", "answers": answers}]
    path.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": qas}]}]}))
    with pytest.raises(InputFormatError) as exc:
        load_questions(path)
    msg = str(exc.value)
    assert str(path) in msg and "'q-rollo'" in msg and "'answers'" in msg and " — " in msg and "\n" not in msg


@pytest.mark.parametrize(("qas", "fragment"), [(5, "'qas' that is not a list"), ([{"id": {"a": 1}, "question": "Q?"}],
                                                                                  "'id' that is not a string")])
def test_qas_and_ids_of_the_wrong_shape(tmp_path: Path, qas: object, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": qas}]}]}))
    with pytest.raises(InputFormatError, match=fragment):
        load_questions(path)
