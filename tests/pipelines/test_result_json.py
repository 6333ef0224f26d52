"""The answer's JSON contract bounds what it prints of a passage (issue 22, finding 6: a 50 MB passage was
printed whole by `ask --json`)."""

from __future__ import annotations

import json

from pipelines.types import MAX_PASSAGE_OUTPUT_CHARS, AskResult


def result(passages: list[dict]) -> AskResult:
    return AskResult("Who?", "Mary", "edge", 0.9, passages, {"total": 1.0})


def test_a_huge_passage_is_cut_and_says_how_long_it_was() -> None:
    text = "Mary owns the blue house. " * 2_000_000  # 52 MB
    out = result([{"id": "p", "title": "t", "text": text, "answer_span": [0, 4]}]).to_json()
    p = out["passages"][0]
    assert p["text"] == text[:MAX_PASSAGE_OUTPUT_CHARS] and p["text_chars"] == len(text)
    assert len(json.dumps(out)) < 2 * MAX_PASSAGE_OUTPUT_CHARS


def test_the_cut_keeps_the_answer_span_and_short_passages_are_untouched() -> None:
    text = "x " * 30_000 + "Mary" + " y" * 30_000
    start = text.index("Mary")
    p = result([{"id": "p", "text": text, "answer_span": [start, start + 4]}]).to_json()["passages"][0]
    assert p["text"][start:start + 4] == "Mary" and len(p["text"]) == start + 4 + 200 and p["text_chars"] == len(text)
    short = {"id": "q", "text": "Mary owns it.", "answer_span": None}
    assert result([short]).to_json()["passages"] == [short]
