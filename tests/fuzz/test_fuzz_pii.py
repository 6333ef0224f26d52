"""Fuzz targets for the redaction before the cloud hop (edge/pii.py): any text, entities that overlap, Unicode
confusables, values split across a line break, and passages up to 100 KB get a result (or the project's own
one-line error), never a traceback; the question always comes back whole from its placeholders, and a planted
value that the recognizers take is never left in what would be sent."""

from __future__ import annotations

import re
import unicodedata

import pytest
from fuzz_helpers import ANY_TEXT, CLEAN_TEXT, check_user_error
from hypothesis import event, given, settings
from hypothesis import strategies as st

from edge.pii import Redactor
from pipelines.errors import USER_ERRORS
from reading.prompts import Passage

EMAILS = st.sampled_from(["jane.roe@example.org", "a.b-c@mail.example.co.uk", "x@y.io"])
CARDS = st.sampled_from(["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009"])
PHONES = st.sampled_from(["+44 20 7946 0958", "(212) 555-0199", "+49 30 901820"])
NAMES = st.sampled_from(["Jane Roe", "Marcus Whitfield", "Dr. Okafor", "Anna K. van Dijk"])
URLS = st.sampled_from(["https://bob:s3cret@files.example.com/q.csv", "ftp://u:p@10.0.0.7/x"])
VALUES = st.one_of(EMAILS, CARDS, PHONES, NAMES, URLS, st.sampled_from(["GB82 WEST 1234 5698 7654 32", "10.0.0.7"]))
# What makes a value hard to see: a look-alike letter or digit, a zero-width or bidi mark, a line break.
TWISTS = st.sampled_from(["\u0430", "\uff14", "\u200b", "\u202e", "\u00a0", "\n", "\r\n", "\t", "\ufeff", "\u0301"])


def _twisted(draw: st.DrawFn, value: str) -> str:
    if not draw(st.booleans()):
        return value
    at = draw(st.integers(0, len(value)))
    return value[:at] + draw(TWISTS) + value[at:]


@st.composite
def texts(draw: st.DrawFn) -> tuple[str, list[str]]:
    """Text with values planted in it (some twisted, some overlapping one another); the plain ones planted."""
    pieces: list[str] = []
    plain: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        pieces.append(draw(st.one_of(CLEAN_TEXT, ANY_TEXT)) if draw(st.booleans()) else " ")
        value = draw(VALUES)
        twisted = _twisted(draw, value)
        if draw(st.integers(0, 4)) == 0:  # overlapping: a value inside another one
            other = draw(VALUES)
            twisted = other[: len(other) // 2] + twisted + other[len(other) // 2:]
        elif twisted == value:
            plain.append(value)
        pieces.append(twisted)
    pieces.append(draw(st.one_of(CLEAN_TEXT, ANY_TEXT)))
    return " ".join(pieces), plain


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


def _skeleton(text: str) -> str:
    return re.sub(r"[\W_]", "", unicodedata.normalize("NFKC", text).casefold())


def _redact(redactor: Redactor, question: str, passages: list[Passage]) -> None:
    try:
        red = redactor.redact(question, passages)
    except USER_ERRORS as exc:
        check_user_error(exc)
        return
    # The map back is whole: one value written two ways ("4111 1111…", "4111-1111…") is one placeholder, and
    # comes back in the way first seen, so texts are compared by their letters and digits.
    assert _skeleton(red.restore(red.question)) == _skeleton(question)
    for p, sent in zip(passages, red.passages, strict=True):
        assert _skeleton(red.restore(sent.text)) == _skeleton(p.text)
    event(f"redacted kinds: {len(red.counts)}")


@given(question=texts(), passage=texts())
def test_redact_any_text(redactor: Redactor, question: tuple[str, list[str]], passage: tuple[str, list[str]]) -> None:
    _redact(redactor, question[0], [Passage("T", passage[0])])


@given(question=texts())
def test_a_planted_value_the_recognizers_take_never_survives(redactor: Redactor, question: tuple[str, list[str]]) -> None:
    text, plain = question
    red = redactor.redact(text, [])
    for value in plain:
        if red.counts and value in red.values.values():
            assert value not in red.question


@settings(max_examples=5)
@given(seed=texts(), size=st.sampled_from([50_000, 100_000]))
def test_a_100_kb_passage(redactor: Redactor, seed: tuple[str, list[str]], size: int) -> None:
    body = (seed[0] + " Jane Roe wrote to jane.roe@example.org. ") * (size // max(len(seed[0]) + 40, 1) + 1)
    _redact(redactor, "Who wrote?", [Passage("Long", body[:size])])
