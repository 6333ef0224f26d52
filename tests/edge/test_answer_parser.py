from __future__ import annotations

import math

import pytest
from haystack import Document

from edge.answer_parser import AnswerParser
from reading.text import clean_reply, is_no_answer

DOCS = [
    Document(id="d1", content="Normandy is a region in France.", score=0.8, meta={"title": "Normans"}),
    Document(id="d2", content="Rollo was a Viking leader.", score=0.5, meta={"title": "Normans"}),
]


@pytest.mark.parametrize(
    ("reply", "cleaned"),
    [("France.", "France"), ('"Rollo"', "Rollo"), ("Answer: France\nmore text", "France"), ("U.S.", "U.S."), ("", "")],
)
def test_clean_reply(reply: str, cleaned: str) -> None:
    assert clean_reply(reply) == cleaned


@pytest.mark.parametrize(
    "reply",
    ["unanswerable", "Unanswerable.", "No answer", "The passage does not mention it", "I don't know", "None", ""],
)
def test_no_answer_replies_map_to_empty(reply: str) -> None:
    assert is_no_answer(clean_reply(reply))
    out = AnswerParser().run(reply=reply, documents=DOCS, token_logprobs=[-0.1])
    assert out["answer"] == ""
    assert all(h.span is None for h in out["hits"])


def test_answer_span_found_in_its_passage() -> None:
    out = AnswerParser().run(reply="Rollo.", documents=DOCS, token_logprobs=[-0.2, -0.4])
    assert out["answer"] == "Rollo"
    assert [h.span for h in out["hits"]] == [None, (0, 5)]  # typed hits: the passage and the span in it
    assert [h.passage.id for h in out["hits"]] == [d.id for d in DOCS]
    assert out["confidence"] == pytest.approx(math.exp(-0.3), abs=1e-4)
    shown = out["hits"][1].to_json()  # the answer's JSON, built from the hit
    assert set(shown) == {"id", "title", "text", "score", "source", "answer_span"} and shown["answer_span"] == [0, 5]
    assert set(out) == {"answer", "confidence", "hits", "timings"}


def test_answer_not_in_any_passage_is_discounted() -> None:
    inside = AnswerParser().run(reply="France", documents=DOCS, token_logprobs=[-0.1])
    outside = AnswerParser().run(reply="Germany", documents=DOCS, token_logprobs=[-0.1])
    assert outside["confidence"] == pytest.approx(inside["confidence"] * 0.5, abs=1e-4)
    assert 0.0 <= outside["confidence"] <= 1.0
