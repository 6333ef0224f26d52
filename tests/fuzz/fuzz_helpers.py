"""Strategies and the one property every fuzz target checks: a result, or the project's own error
with a one-line message — never another exception (RELIABILITY.md lists the targets)."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import strategies as st

from pipelines.errors import USER_ERRORS

# Any code point, unpaired surrogates included (about one character in four): they are what argv and
# stdin make of bytes that are not UTF-8, and what JSON makes of an escape like "\ud800".
ANY_CHAR = st.one_of(st.characters(), st.characters(), st.characters(), st.characters(categories=["Cs"]))
ANY_TEXT = st.text(ANY_CHAR, max_size=80)
# Text a well-behaved sender produces (no surrogates), sometimes long.
CLEAN_TEXT = st.one_of(st.text(max_size=80), st.text(max_size=3000))
# What argv and a terminal deliver from arbitrary bytes.
ESCAPED_BYTES = st.binary(max_size=120).map(lambda b: b.decode("utf-8", "surrogateescape"))
NUMBERS = st.one_of(st.integers(), st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 0, 1, -1, 0.5, 2, 1e308]))

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), ANY_TEXT)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(ANY_TEXT, inner, max_size=4)),
    max_leaves=12,
)


def mostly(good: st.SearchStrategy[Any], junk: st.SearchStrategy[Any] = JSON_VALUES, in_ten: int = 8) -> st.SearchStrategy[Any]:
    """``good`` ``in_ten`` times in ten, else ``junk`` (by default anything JSON can hold: the shape a file
    may have instead). Not ``st.one_of``, which flattens nested choices and would weigh by their count."""
    return st.integers(0, 9).flatmap(lambda i: good if i < in_ten else junk)


# Text fields of a file: mostly clean, sometimes with lone surrogates (escaped in the JSON).
FIELD_TEXT = mostly(st.text(max_size=80), ANY_TEXT, in_ten=9)
# SQuAD v2 documents: the right shape most of the time, any JSON value in any field otherwise.
ANSWER = mostly(st.fixed_dictionaries({"text": mostly(FIELD_TEXT), "answer_start": mostly(st.integers())}), in_ten=9)
QA = mostly(st.fixed_dictionaries(
    {"id": mostly(FIELD_TEXT, in_ten=9), "question": mostly(FIELD_TEXT, in_ten=9)},
    optional={"answers": mostly(st.lists(ANSWER, max_size=3), in_ten=9), "is_impossible": mostly(st.booleans()),
              "plausible_answers": mostly(st.lists(ANSWER, max_size=2))},
), in_ten=9)
PARAGRAPH = mostly(st.fixed_dictionaries({"context": mostly(FIELD_TEXT, in_ten=9)},
                                         optional={"qas": mostly(st.lists(QA, min_size=1, max_size=3), in_ten=9)}), in_ten=9)
ARTICLE = mostly(st.fixed_dictionaries({"title": mostly(FIELD_TEXT, in_ten=9),
                                        "paragraphs": mostly(st.lists(PARAGRAPH, min_size=1, max_size=3), in_ten=9)}), in_ten=9)
SQUAD_DOC = mostly(st.fixed_dictionaries({"data": mostly(st.lists(ARTICLE, min_size=1, max_size=3), in_ten=9)},
                                         optional={"version": ANY_TEXT}), in_ten=9)


def json_file_bytes(value: Any) -> bytes:
    """``value`` as a JSON file: ASCII, so a lone surrogate is written as its escape ("\\udc80")."""
    return json.dumps(value, ensure_ascii=True).encode("ascii")


FILE_BYTES_JUNK = st.one_of(st.binary(max_size=300), ANY_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))


def check_user_error(exc: BaseException, *, how_to_fix: bool = True) -> str:
    """``exc`` is one of the project's user errors with a one-line message (that says how to fix it)."""
    assert isinstance(exc, USER_ERRORS), f"not the project's error type: {type(exc).__name__}: {exc!r}"
    message = str(exc)
    assert message.strip(), f"{type(exc).__name__} without a message"
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    if how_to_fix:
        assert " — " in message, f"does not say how to fix it: {message!r}"
    message.encode("utf-8")  # printable: no lone surrogate in what the user sees
    return message


def strict_json(value: Any) -> str:
    """JSON as a strict parser reads it: no NaN or Infinity (what --json must print)."""
    return json.dumps(value, allow_nan=False, ensure_ascii=False)
