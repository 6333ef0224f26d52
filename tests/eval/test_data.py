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
