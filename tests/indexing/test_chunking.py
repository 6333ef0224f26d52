"""Tests of indexing.chunking.split_passages: bounds, paragraph packing, sentence overlap, normalisation."""

from __future__ import annotations

import random

import pytest

from indexing.chunking import split_passages

NINE_SENTENCES = " ".join(f"Sent no {i}." for i in range(1, 10))  # each sentence is 10 characters


def test_short_text_is_one_passage_with_whitespace_normalised() -> None:
    text = "  Hello   there,\n  world.\tSecond  sentence.\n\n\n   Next\r\nparagraph here.  \n"
    assert split_passages(text) == ["Hello there, world. Second sentence.\n\nNext paragraph here."]


@pytest.mark.parametrize("text", ["", "   ", "\n\n\n", " \t\r\n \n"])
def test_blank_text_gives_no_passage(text: str) -> None:
    assert split_passages(text) == []


def test_paragraphs_are_packed_up_to_max_chars() -> None:
    text = "Alpha one.\n\nBeta two.\n\nGamma three."
    # 10 + 2 + 9 = 21 fits in 25; adding 2 + 12 would make 35.
    assert split_passages(text, max_chars=25, overlap_chars=0) == ["Alpha one.\n\nBeta two.", "Gamma three."]


def test_paragraph_that_fits_is_moved_whole_not_split() -> None:
    text = "Aa aa. Bb bb.\n\nCc cc. Dd dd."
    # Sentence-level packing would give "Aa aa. Bb bb.\n\nCc cc." (20 chars); the paragraph stays whole instead.
    assert split_passages(text, max_chars=20, overlap_chars=0) == ["Aa aa. Bb bb.", "Cc cc. Dd dd."]


def test_long_paragraph_is_split_on_sentence_boundaries() -> None:
    text = "One two three. Four five six. Seven eight nine."
    assert split_passages(text, max_chars=30, overlap_chars=0) == ["One two three. Four five six.", "Seven eight nine."]


def test_overlap_repeats_trailing_whole_sentences() -> None:
    text = "One two three. Four five six. Seven eight nine."
    assert split_passages(text, max_chars=32, overlap_chars=15) == [
        "One two three. Four five six.",
        "Four five six. Seven eight nine.",
    ]


def test_overlap_takes_as_many_sentences_as_the_budget_allows() -> None:
    assert split_passages(NINE_SENTENCES, max_chars=43, overlap_chars=21) == [
        "Sent no 1. Sent no 2. Sent no 3. Sent no 4.",
        "Sent no 3. Sent no 4. Sent no 5. Sent no 6.",
        "Sent no 5. Sent no 6. Sent no 7. Sent no 8.",
        "Sent no 7. Sent no 8. Sent no 9.",
    ]
    # One character less of budget leaves room for only one sentence of overlap.
    assert split_passages(NINE_SENTENCES, max_chars=43, overlap_chars=20)[1] == "Sent no 4. Sent no 5. Sent no 6. Sent no 7."


def test_overlap_counts_inside_max_chars_and_is_dropped_when_it_does_not_fit() -> None:
    text = "One two three. Four five six. Seven eight nine."
    # Overlap "Four five six." + " Seven eight nine." would be 32 > 31, so the overlap goes.
    assert split_passages(text, max_chars=31, overlap_chars=15) == ["One two three. Four five six.", "Seven eight nine."]


def test_overlap_keeps_the_paragraph_break() -> None:
    text = "First one. Second one.\n\nThird paragraph is here."
    assert split_passages(text, max_chars=40, overlap_chars=12) == [
        "First one. Second one.",
        "Second one.\n\nThird paragraph is here.",
    ]


def test_sentence_longer_than_overlap_budget_is_not_repeated() -> None:
    text = "One two three. Four five six. Seven eight nine."
    assert split_passages(text, max_chars=32, overlap_chars=13) == ["One two three. Four five six.", "Seven eight nine."]


def test_overlap_zero_repeats_nothing() -> None:
    passages = split_passages(NINE_SENTENCES, max_chars=43, overlap_chars=0)
    assert passages == [
        "Sent no 1. Sent no 2. Sent no 3. Sent no 4.",
        "Sent no 5. Sent no 6. Sent no 7. Sent no 8.",
        "Sent no 9.",
    ]
    assert " ".join(passages) == NINE_SENTENCES


def test_sentence_boundaries_respect_quotes_abbreviations_and_numbers() -> None:
    text = 'He said "Stop." Then he left. It was e.g. late. 3 cats came.'
    assert split_passages(text, max_chars=17, overlap_chars=0) == [
        'He said "Stop."',
        "Then he left.",
        "It was e.g. late.",
        "3 cats came.",
    ]


def test_sentence_longer_than_max_chars_is_split_at_words_and_pieces_never_overlap() -> None:
    text = "aaa bbb ccc ddd eee"
    assert split_passages(text, max_chars=8, overlap_chars=0) == ["aaa bbb", "ccc ddd", "eee"]
    # Pieces of a cut sentence are not whole sentences, so a large overlap budget changes nothing.
    assert split_passages(text, max_chars=8, overlap_chars=100) == ["aaa bbb", "ccc ddd", "eee"]


def test_word_longer_than_max_chars_is_cut_into_characters() -> None:
    assert split_passages("x" * 25 + " yy", max_chars=10, overlap_chars=0) == ["x" * 10, "x" * 10, "xxxxx yy"]


def test_overlap_larger_than_max_chars_still_respects_the_bound() -> None:
    passages = split_passages(NINE_SENTENCES, max_chars=21, overlap_chars=500)
    assert passages == [
        "Sent no 1. Sent no 2.",
        "Sent no 2. Sent no 3.",
        "Sent no 3. Sent no 4.",
        "Sent no 4. Sent no 5.",
        "Sent no 5. Sent no 6.",
        "Sent no 6. Sent no 7.",
        "Sent no 7. Sent no 8.",
        "Sent no 8. Sent no 9.",
    ]


@pytest.mark.parametrize(("max_chars", "overlap_chars"), [(0, 0), (-5, 0), (100, -1)])
def test_invalid_sizes_raise_value_error(max_chars: int, overlap_chars: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        split_passages("Some text.", max_chars=max_chars, overlap_chars=overlap_chars)


def _random_text(rng: random.Random) -> str:
    """A document of random paragraphs of random sentences, some over-long and unpunctuated."""
    vocabulary = ["alpha", "Beta", "gamma", "delta", "x", "ab", "Zebra", "2024", "quixotic", "e.g.", "—", "naïve"]
    paragraphs = []
    for _ in range(rng.randint(0, 12)):
        sentences = []
        for _ in range(rng.randint(1, 8)):
            words = [rng.choice(vocabulary) + str(rng.randint(0, 99)) for _ in range(rng.randint(1, 40))]
            words[0] = words[0].capitalize()
            end = rng.choice([".", "!", "?", ".", "", '."'])
            sentences.append(" ".join(words) + end)
        gap = rng.choice([" ", "  ", "\n", " \t "])
        paragraphs.append(gap.join(sentences))
    return "".join(p + rng.choice(["\n\n", "\n \n\n", "\r\n\r\n"]) for p in paragraphs)


def _placements(words: list[str], passages: list[str]) -> list[tuple[int, int]]:
    """Where each passage's words lie in ``words``, checking order, contiguity and coverage."""
    spans: list[tuple[int, int]] = []
    start, end = -1, 0
    for passage in passages:
        found = passage.split()
        # A passage starts after the previous one started, no later than where it ended, and adds words.
        candidates = [
            s
            for s in range(start + 1, end + 1)
            if words[s : s + len(found)] == found and s + len(found) > end
        ]
        assert candidates, f"passage not a contiguous, in-order slice of the input: {passage!r}"
        start = candidates[-1]
        end = start + len(found)
        spans.append((start, end))
    assert end == len(words), "the passages do not reach the end of the input"
    return spans


def test_random_texts_stay_bounded_cover_every_word_and_keep_order() -> None:
    rng = random.Random(0)
    for _ in range(150):
        text = _random_text(rng)
        max_chars = rng.randint(20, 600)
        overlap_chars = rng.choice([0, rng.randint(0, max_chars), rng.randint(0, 2 * max_chars)])
        passages = split_passages(text, max_chars=max_chars, overlap_chars=overlap_chars)

        assert all(0 < len(p) <= max_chars for p in passages)
        assert all(p == p.strip() for p in passages)
        words = text.split()
        assert (passages == []) == (words == [])
        spans = _placements(words, passages)
        for (_, prev_end), (start, _), passage in zip(spans, spans[1:], passages[1:]):
            repeated = prev_end - start
            assert len(" ".join(passage.split()[:repeated])) <= overlap_chars
        if overlap_chars == 0:
            assert [w for p in passages for w in p.split()] == words
        # Paragraphs that fit in a passage are never cut.
        for block in text.replace("\r\n", "\n").split("\n\n"):
            paragraph = " ".join(block.split())
            if paragraph and len(paragraph) <= max_chars:
                assert any(paragraph in p for p in passages)
        assert split_passages(text, max_chars=max_chars, overlap_chars=overlap_chars) == passages
