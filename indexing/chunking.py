"""Split plain text into passages of bounded size, with whole-sentence overlap between neighbours."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A sentence ends at . ! or ? (optionally followed by a closing quote or bracket), then whitespace,
# then something that starts a sentence. Two lookbehinds because `re` wants each one fixed-width.
_SENTENCE_BREAK = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]]))\s+(?=[\"'“‘(\[A-Z0-9])")
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n\s*")


@dataclass(frozen=True, slots=True)
class _Unit:
    """One sentence (or a piece of an over-long one) and the paragraph it belongs to."""

    text: str
    paragraph: int
    # Pieces of a hard-split sentence are not whole sentences, so they never go into an overlap.
    whole: bool


def split_passages(text: str, max_chars: int = 1200, overlap_chars: int = 200) -> list[str]:
    """Split ``text`` into passages of at most ``max_chars`` characters, keeping paragraphs whole where they fit.

    Paragraphs (separated by blank lines) are packed into passages in order; a paragraph longer than
    ``max_chars`` is split on sentence boundaries, and a sentence longer than ``max_chars`` at word
    boundaries. Each passage after the first begins with the trailing whole sentences of the previous
    one, at most ``overlap_chars`` characters of them, and that overlap counts towards ``max_chars``.
    Whitespace within a paragraph is collapsed to single spaces; paragraphs are joined with a blank line.

    :param text: the document text.
    :param max_chars: hard upper bound on the length of every passage.
    :param overlap_chars: budget of repeated trailing sentences; 0 disables overlap.
    :returns: the passages, in document order, none of them empty.
    :raises ValueError: if ``max_chars`` < 1 or ``overlap_chars`` < 0.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    if overlap_chars < 0:
        raise ValueError(f"overlap_chars must be 0 or more, got {overlap_chars}")

    passages: list[str] = []
    current: list[_Unit] = []
    # True once `current` holds a unit not yet emitted; a passage made only of overlap is never emitted.
    fresh = False

    def make_room(units: list[_Unit], needed: int) -> None:
        """Emit the current passage if ``units`` do not fit after it, then trim the overlap until they do."""
        nonlocal current, fresh
        if not current or _joined_length(current + units) <= needed:
            return
        if fresh:
            passages.append(_render(current))
            current = _overlap(current, overlap_chars)
            fresh = False
        # The overlap is optional: drop its oldest sentences rather than exceed the bound.
        while current and _joined_length(current + units) > needed:
            current.pop(0)

    for index, paragraph in enumerate(_paragraphs(text)):
        units = _units(paragraph, index, max_chars)
        if len(paragraph) <= max_chars:
            # A paragraph that fits in a passage is never cut: it moves to the next passage whole.
            make_room(units, max_chars)
            current.extend(units)
            fresh = True
        else:
            for unit in units:
                make_room([unit], max_chars)
                current.append(unit)
                fresh = True
    if fresh:
        passages.append(_render(current))
    return passages


def _paragraphs(text: str) -> list[str]:
    """Paragraphs of ``text`` with whitespace collapsed, empty ones dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    normalized = (" ".join(block.split()) for block in _BLANK_LINE.split(text))
    return [paragraph for paragraph in normalized if paragraph]


def _units(paragraph: str, index: int, max_chars: int) -> list[_Unit]:
    """Sentences of ``paragraph``, with any sentence longer than ``max_chars`` cut into pieces."""
    units: list[_Unit] = []
    for sentence in _SENTENCE_BREAK.split(paragraph):
        if len(sentence) <= max_chars:
            units.append(_Unit(sentence, index, whole=True))
        else:
            units.extend(_Unit(piece, index, whole=False) for piece in _hard_split(sentence, max_chars))
    return units


def _hard_split(sentence: str, max_chars: int) -> list[str]:
    """Cut ``sentence`` at word boundaries into pieces of at most ``max_chars``; cut over-long words too."""
    pieces: list[str] = []
    piece = ""
    for word in sentence.split(" "):
        # A single word longer than the bound (a URL, a base64 blob) has no boundary left but characters.
        while len(word) > max_chars:
            if piece:
                pieces.append(piece)
                piece = ""
            pieces.append(word[:max_chars])
            word = word[max_chars:]
        if not word:
            continue
        if piece and len(piece) + 1 + len(word) <= max_chars:
            piece = f"{piece} {word}"
        else:
            if piece:
                pieces.append(piece)
            piece = word
    if piece:
        pieces.append(piece)
    return pieces


def _overlap(units: list[_Unit], overlap_chars: int) -> list[_Unit]:
    """The trailing whole sentences of ``units`` whose joined length is at most ``overlap_chars``."""
    tail: list[_Unit] = []
    for unit in reversed(units):
        if not unit.whole or _joined_length([unit, *tail]) > overlap_chars:
            break
        tail.insert(0, unit)
    return tail


def _joined_length(units: list[_Unit]) -> int:
    """Length of ``_render(units)``, without building the string."""
    length = sum(len(unit.text) for unit in units)
    for before, after in zip(units, units[1:]):
        length += 1 if before.paragraph == after.paragraph else 2
    return length


def _render(units: list[_Unit]) -> str:
    """Join sentences with a space within a paragraph and paragraphs with a blank line."""
    paragraphs: list[list[str]] = []
    last: int | None = None
    for unit in units:
        if unit.paragraph != last:
            paragraphs.append([])
            last = unit.paragraph
        paragraphs[-1].append(unit.text)
    return "\n\n".join(" ".join(sentences) for sentences in paragraphs)
