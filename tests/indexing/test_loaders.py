"""Tests of indexing.loaders.load_passages on the bundled SQuAD files and small files written to tmp_path."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path

import pytest

from indexing.chunking import split_passages
from indexing.errors import (
    EmptyCorpusError,
    IndexingError,
    InputFileError,
    InputFormatError,
)
from indexing.loaders import SourceSummary, SourceText, load_passages

DATA = Path(__file__).resolve().parents[2] / "data"
DEV_A = DATA / "squad-v2-dev-a.json"
EXTRA = DATA / "squad-v2-extra-paragraphs.json"

DEV_A_ARTICLES = {
    "Normans": 39,
    "Computational complexity theory": 48,
    "Huguenot": 44,
    "Steam engine": 46,
    "1973 oil crisis": 24,
    "European Union law": 40,
    "Packet switching": 23,
    "Harvard University": 30,
    "Yuan dynasty": 47,
    "Immune system": 49,
}


def _raises(error: type[IndexingError], path: Path | str, *key_words: str, paths: list[Path] | None = None) -> str:
    """Load ``paths`` (default: ``[path]``), expect exactly ``error``, and check its message; returns it."""
    with pytest.raises(IndexingError) as excinfo:
        load_passages(paths if paths is not None else [Path(path)])
    assert excinfo.type is error
    message = str(excinfo.value)
    assert "\n" not in message, "messages are one line"
    assert str(path) in message, "messages name the file"
    assert " — " in message, "messages say how to fix the problem"
    for word in key_words:
        assert word in message
    return message


def _squad(*articles: dict[str, object]) -> str:
    return json.dumps({"version": "v2.0", "data": list(articles)})


# --- SQuAD v2 -----------------------------------------------------------------------------------


def test_squad_dev_file_gives_one_passage_per_paragraph() -> None:
    passages, summaries = load_passages([DEV_A])

    assert len(passages) == 390
    assert summaries == [SourceSummary(path=str(DEV_A), format="squad", passages=390)]
    assert Counter(p.title for p in passages) == DEV_A_ARTICLES
    assert {p.source for p in passages} == {str(DEV_A)}

    raw = json.loads(DEV_A.read_text(encoding="utf-8"))
    first = raw["data"][0]["paragraphs"][0]["context"]
    assert passages[0] == SourceText(
        text=first, title="Normans", source=str(DEV_A), meta={"article": "Normans", "paragraph_index": 0}
    )
    # Contexts are kept verbatim (answer_start offsets index into them) and in file order.
    contexts = [par["context"] for article in raw["data"] for par in article["paragraphs"]]
    assert [p.text for p in passages] == contexts
    oil = [p for p in passages if p.meta["article"] == "1973_oil_crisis"]
    assert [p.meta["paragraph_index"] for p in oil] == list(range(24))
    assert {p.title for p in oil} == {"1973 oil crisis"}


def test_squad_extra_paragraphs_file_without_questions_loads() -> None:
    passages, summaries = load_passages([EXTRA])

    assert len(passages) == 570
    assert summaries[0].as_dict() == {"path": str(EXTRA), "format": "squad", "passages": 570}
    titles = Counter(p.title for p in passages)
    assert len(titles) == 20
    assert titles["Jacksonville, Florida"] == 21
    assert titles["Sky (United Kingdom)"] == 22
    sky = next(p for p in passages if p.title == "Sky (United Kingdom)")
    assert sky.meta == {"article": "Sky_(United_Kingdom)", "paragraph_index": 0}


def test_both_squad_files_together_keep_the_order_given() -> None:
    passages, summaries = load_passages([EXTRA, DEV_A])
    assert len(passages) == 960
    assert [(s.path, s.passages) for s in summaries] == [(str(EXTRA), 570), (str(DEV_A), 390)]
    assert passages[0].title == "Prime number"
    assert passages[570].title == "Normans"


def test_squad_paragraphs_without_qas_and_a_byte_order_mark_load(tmp_path: Path) -> None:
    path = tmp_path / "mini.json"
    article = {"title": "Tiny_topic", "paragraphs": [{"context": "First."}, {"context": "Second.", "qas": []}]}
    path.write_bytes(b"\xef\xbb\xbf" + _squad(article).encode("utf-8"))

    passages, _ = load_passages([path])

    assert [(p.text, p.title, p.meta) for p in passages] == [
        ("First.", "Tiny topic", {"article": "Tiny_topic", "paragraph_index": 0}),
        ("Second.", "Tiny topic", {"article": "Tiny_topic", "paragraph_index": 1}),
    ]


def test_squad_blank_context_is_skipped_but_indexes_stay_those_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gaps.json"
    path.write_text(_squad({"title": "T", "paragraphs": [{"context": "  "}, {"context": "Real text."}]}))

    passages, summaries = load_passages([path])

    assert [(p.text, p.meta["paragraph_index"]) for p in passages] == [("Real text.", 1)]
    assert summaries[0].passages == 1


# --- text, markdown, JSONL ----------------------------------------------------------------------


def test_txt_file_is_chunked_within_bounds_with_stem_title(tmp_path: Path) -> None:
    path = tmp_path / "field-notes.txt"
    paragraphs = [" ".join(f"Paragraph {p} sentence {s} says something." for s in range(8)) for p in range(6)]
    text = "\n\n".join(paragraphs)
    path.write_text(text, encoding="utf-8")

    passages, summaries = load_passages([path], chunk_chars=300, overlap_chars=80)

    expected = split_passages(text, 300, 80)
    assert len(expected) > 6
    assert [p.text for p in passages] == expected
    assert all(len(p.text) <= 300 for p in passages)
    assert {p.title for p in passages} == {"field-notes"}
    assert [p.meta for p in passages] == [{"chunk_index": i} for i in range(len(expected))]
    assert summaries == [SourceSummary(path=str(path), format="text", passages=len(expected))]
    # Each sentence is 39 characters: 7 fill a 300-char chunk, and 2 (79 chars) fit the 80-char overlap.
    sentence = "Paragraph {} sentence {} says something.".format
    assert passages[0].text == " ".join(sentence(0, s) for s in range(7))
    assert passages[1].text.startswith(" ".join(sentence(0, s) for s in (5, 6, 7)) + "\n\n" + sentence(1, 0))


def test_markdown_title_is_first_level_one_heading_outside_code(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(
        "Intro line before the title.\n\n```bash\n# not a title\n```\n\n## Sub heading\n\n# The Real Guide #\n\nBody text.\n",
        encoding="utf-8",
    )
    plain = tmp_path / "no-heading.md"
    plain.write_text("Just text, #no heading here.\n", encoding="utf-8")

    passages, summaries = load_passages([path, plain])

    assert [p.title for p in passages] == ["The Real Guide", "no-heading"]
    assert passages[0].text.endswith("# The Real Guide #\n\nBody text.")
    assert [s.format for s in summaries] == ["text", "text"]


def test_empty_txt_contributes_zero_passages(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n \t\n", encoding="utf-8")
    full = tmp_path / "full.txt"
    full.write_text("Some content.", encoding="utf-8")

    passages, summaries = load_passages([empty, full])

    assert [p.text for p in passages] == ["Some content."]
    assert [(s.path, s.passages) for s in summaries] == [(str(empty), 0), (str(full), 1)]


def test_jsonl_ids_titles_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    lines = [
        json.dumps({"text": "Reset with the red button.", "title": "Reset", "id": "q-1"}),
        "",
        "   ",
        json.dumps({"text": "No title here.", "id": 7, "extra": "ignored"}),
        json.dumps({"text": "No id either.", "title": None}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    passages, summaries = load_passages([path])

    assert [(p.text, p.title, p.meta) for p in passages] == [
        ("Reset with the red button.", "Reset", {"id": "q-1", "line": 1}),
        ("No title here.", "faq", {"id": 7, "line": 4}),
        ("No id either.", "faq", {"line": 5}),
    ]
    assert summaries == [SourceSummary(path=str(path), format="jsonl", passages=3)]


def test_a_single_path_is_accepted_not_iterated(tmp_path: Path) -> None:
    path = tmp_path / "one.txt"
    path.write_text("One passage.", encoding="utf-8")
    passages, _ = load_passages(path)  # type: ignore[arg-type]
    assert [p.text for p in passages] == ["One passage."]


# --- directories --------------------------------------------------------------------------------


def test_directory_is_searched_recursively_in_sorted_order(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    (root / "b" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("Text A.", encoding="utf-8")
    (root / "b" / "c.jsonl").write_text(json.dumps({"text": "Line C."}) + "\n", encoding="utf-8")
    (root / "b" / "deeper" / "d.md").write_text("# Dee\n\nMarkdown D.", encoding="utf-8")
    (root / "b" / "e.json").write_text(_squad({"title": "E_e", "paragraphs": [{"context": "Squad E."}]}))
    (root / "b" / "notes.csv").write_text("not,loaded\n", encoding="utf-8")
    (root / "README").write_text("no extension, not loaded", encoding="utf-8")
    (root / "f.TXT").write_text("Upper-case suffix.", encoding="utf-8")

    passages, summaries = load_passages([root])

    assert [s.path for s in summaries] == [
        str(root / "a.txt"),
        str(root / "b" / "c.jsonl"),
        str(root / "b" / "deeper" / "d.md"),
        str(root / "b" / "e.json"),
        str(root / "f.TXT"),
    ]
    assert [s.format for s in summaries] == ["text", "jsonl", "text", "squad", "text"]
    assert [(p.text, p.title) for p in passages] == [
        ("Text A.", "a"),
        ("Line C.", "c"),
        ("# Dee\n\nMarkdown D.", "Dee"),
        ("Squad E.", "E e"),
        ("Upper-case suffix.", "f"),
    ]


def test_directory_without_supported_files_is_an_empty_corpus(tmp_path: Path) -> None:
    root = tmp_path / "nothing"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "data.csv").write_text("a,b\n", encoding="utf-8")
    _raises(EmptyCorpusError, root, "no supported file", ".json (SQuAD v2), .jsonl, .txt, .md")


def test_duplicates_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "dup.txt"
    path.write_text("Same text.", encoding="utf-8")
    passages, summaries = load_passages([path, path])
    assert [p.text for p in passages] == ["Same text.", "Same text."]
    assert len(summaries) == 2


# --- errors -------------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    _raises(InputFileError, tmp_path / "nope.json", "no such file or directory", "check the path")


def test_unreadable_special_file(tmp_path: Path) -> None:
    # Opening a Unix socket fails with ENXIO even for root, unlike a chmod 000 file.
    path = tmp_path / "sock.txt"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
        _raises(InputFileError, path, "cannot be read")
    finally:
        server.close()


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("Caf\u00e9 au lait.".encode("latin-1"))
    _raises(InputFileError, path, "is not UTF-8 text", "0xe9", "offset 3", "iconv -f latin1 -t utf-8")


def test_malformed_json_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "version": "v2.0",\n  "data": [,]\n}\n', encoding="utf-8")
    _raises(InputFormatError, path, "not valid JSON", "line 3, column 12")


@pytest.mark.parametrize(
    ("document", "key_words"),
    [
        ([{"text": "a list, not SQuAD"}], ("not SQuAD v2", "no 'data' list")),
        ({"version": "v2.0", "articles": []}, ("not SQuAD v2", "no 'data' list")),
        ({"data": {"title": "x"}}, ("not SQuAD v2", "no 'data' list")),
        ({"data": [{"title": "A", "context": "flat"}]}, ("not SQuAD v2", "article 0", "'paragraphs'")),
        ({"data": [{"title": "A", "paragraphs": []}, "oops"]}, ("not SQuAD v2", "article 1", "'paragraphs'")),
        ({"data": [{"paragraphs": [{"context": "c"}]}]}, ("not SQuAD v2", "article 0", "'title'")),
    ],
)
def test_json_that_is_not_squad(tmp_path: Path, document: object, key_words: tuple[str, ...]) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    message = _raises(InputFormatError, path, *key_words)
    assert "pass a SQuAD v2 file" in message


@pytest.mark.parametrize("paragraph", [{"qas": []}, {"context": 42}, "just a string"])
def test_squad_paragraph_without_string_context(tmp_path: Path, paragraph: object) -> None:
    path = tmp_path / "ctx.json"
    path.write_text(_squad({"title": "Art", "paragraphs": [{"context": "fine"}, paragraph]}), encoding="utf-8")
    _raises(InputFormatError, path, "paragraph 1 of article 'Art'", "'context'")


def test_a_huge_jsonl_record_is_cut_like_any_text(tmp_path: Path) -> None:
    """Issue 22, finding 6: one 50 MB JSONL record became one 50 MB passage (6.4 GB peak RSS at build, all of
    it printed by `ask --json`). A record longer than chunk_chars is cut as a text file is; short ones stay whole."""
    sentence = "The blue house on the hill is owned by Mary, who bought it in 1990. "
    big = sentence * (5_000_000 // len(sentence))
    f = tmp_path / "big.jsonl"
    f.write_text(json.dumps({"id": "big", "title": "Houses", "text": big}) + "\n" + json.dumps({"text": "Short."}) + "\n")
    passages, _ = load_passages([f], chunk_chars=1200, overlap_chars=200)
    *chunks, short = passages
    assert len(chunks) > 4000 and max(len(p.text) for p in chunks) <= 1200
    assert [p.meta["chunk_index"] for p in chunks] == list(range(len(chunks)))
    assert {(p.title, p.meta["id"], p.meta["line"]) for p in chunks} == {("Houses", "big", 1)}
    assert chunks == [SourceText(text=c, title="Houses", source=str(f), meta={"id": "big", "line": 1, "chunk_index": i})
                      for i, c in enumerate(split_passages(big, 1200, 200))]
    assert (short.text, short.meta) == ("Short.", {"line": 2})  # no chunk_index: whole


def test_malformed_jsonl_line_gives_its_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "unterminated\n', encoding="utf-8")
    _raises(InputFormatError, path, "line 3 is not valid JSON", "one JSON object per line")


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "array.jsonl"
    path.write_text('["text", "in a list"]\n', encoding="utf-8")
    _raises(InputFormatError, path, "line 1 is not a JSON object")


@pytest.mark.parametrize("record", [{"title": "no text"}, {"text": ""}, {"text": "   "}, {"text": ["a"]}])
def test_jsonl_line_without_non_empty_text(tmp_path: Path, record: dict[str, object]) -> None:
    path = tmp_path / "notext.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps(record) + "\n", encoding="utf-8")
    _raises(InputFormatError, path, "line 2 has no non-empty string 'text'")


def test_jsonl_title_that_is_not_a_string(tmp_path: Path) -> None:
    path = tmp_path / "title.jsonl"
    path.write_text(json.dumps({"text": "fine", "title": 3}) + "\n", encoding="utf-8")
    _raises(InputFormatError, path, "line 1 has a 'title' that is not a string")


# Defect #12.6: an escaped lone surrogate passes json.loads and crashed the build (UnicodeEncodeError).
LONE = "\\ud800"  # the six characters of the JSON escape, as they are in the file


@pytest.mark.parametrize(("where", "expected"), [
    ("context", "paragraph 1 of article 'Art'"), ("question", "paragraph 1 of article 'Art'"),
    ("title", "the title of article 0"),
])
def test_squad_with_an_escaped_lone_surrogate_is_refused(tmp_path: Path, where: str, expected: str) -> None:
    path = tmp_path / "lone.json"
    bad = {"context": "Rollo's text", "qas": [{"id": "q", "question": "Who?", "answers": []}]}
    text = _squad({"title": "Art", "paragraphs": [{"context": "fine"}, bad]})
    marker = {"context": "Rollo's text", "question": "Who?", "title": "Art"}[where]
    text = text.replace(json.dumps(marker), json.dumps(marker)[:-1] + LONE + '"', 1)
    path.write_text(text, encoding="utf-8")
    _raises(InputFormatError, path, expected, "lone surrogate", "\\ud800")


@pytest.mark.parametrize("line", ['{"text": "a' + LONE + 'b"}', '{"text": "ok", "title": "' + LONE + '"}',
                                  '{"text": "ok", "id": {"k": "' + LONE + '"}}'])
def test_jsonl_with_an_escaped_lone_surrogate_is_refused(tmp_path: Path, line: str) -> None:
    path = tmp_path / "lone.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    _raises(InputFormatError, path, "line 2", "lone surrogate")


def test_a_surrogate_pair_escape_is_one_character_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "pair.jsonl"
    path.write_text('{"text": "smile \\ud83d\\ude00"}\n', encoding="utf-8")
    passages, _ = load_passages([path])
    assert passages[0].text == "smile \U0001F600"


@pytest.mark.parametrize("name", ["table.csv", "paper.pdf", "Makefile"])
def test_unsupported_extension_lists_the_supported_ones(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("whatever", encoding="utf-8")
    _raises(InputFormatError, path, "unsupported extension", ".json (SQuAD v2), .jsonl, .txt, .md")


def test_corpus_without_any_passage(tmp_path: Path) -> None:
    empty_txt = tmp_path / "empty.txt"
    empty_txt.write_text("", encoding="utf-8")
    empty_squad = tmp_path / "empty.json"
    empty_squad.write_text(_squad(), encoding="utf-8")
    blank_jsonl = tmp_path / "blank.jsonl"
    blank_jsonl.write_text("\n\n", encoding="utf-8")

    message = _raises(EmptyCorpusError, empty_txt, "no passages found in", paths=[empty_txt, empty_squad, blank_jsonl])
    assert str(empty_squad) in message and str(blank_jsonl) in message


def test_no_paths_at_all() -> None:
    with pytest.raises(EmptyCorpusError, match="no input paths given"):
        load_passages([])


def test_invalid_chunk_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk_chars"):
        load_passages([DEV_A], chunk_chars=0)
