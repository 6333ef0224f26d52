"""Fuzz targets for the files a user indexes or evaluates on: the SQuAD v2, JSONL and text loaders
(indexing/loaders.py) and the eval data reader (eval/data.py). What a loader returns must be storable:
hashed into a point id, turned into a BM25 vector, written as a payload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fuzz_helpers import ANY_TEXT, FIELD_TEXT, FILE_BYTES_JUNK, JSON_VALUES, SQUAD_DOC, check_user_error, json_file_bytes, mostly
from hypothesis import event, given
from hypothesis import strategies as st

from edge import sparse
from edge.store import document_id
from eval.data import load_questions
from eval.squad_metrics import score_question
from indexing.loaders import SourceText, load_passages
from pipelines.errors import USER_ERRORS


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-files")


def _check_passages(passages: list[SourceText], path: Path) -> None:
    assert passages, "an empty result must be EmptyCorpusError"
    for p in passages:
        assert isinstance(p.text, str) and p.text.strip() and isinstance(p.title, str)
        document_id(p.title, p.text)  # the point id: a hash of the UTF-8 text
        sparse.document_vector(f"{p.title} {p.text}", 10.0)
        json.dumps({"text": p.text, "title": p.title, "source": p.source, **p.meta}, ensure_ascii=False).encode("utf-8")
        assert p.source == str(path)


def _load(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        passages, sources = load_passages([path], chunk_chars=300, overlap_chars=50)
    except USER_ERRORS as exc:
        event(f"refused: {type(exc).__name__}")
        assert str(path) in check_user_error(exc)  # the message names the file
        return
    event("loaded")
    _check_passages(passages, path)
    assert [s.path for s in sources] == [str(path)] and sources[0].passages == len(passages)
    assert path.read_bytes() == data  # the input is never changed


@given(data=mostly(SQUAD_DOC.map(json_file_bytes), FILE_BYTES_JUNK, in_ten=9))
def test_squad_loader(folder: Path, data: bytes) -> None:
    _load(folder / "data.json", data)


JSONL_RECORD = mostly(st.fixed_dictionaries({"text": mostly(FIELD_TEXT)}, optional={"title": mostly(FIELD_TEXT),
                                                                                     "id": JSON_VALUES}))
JSONL_LINE = mostly(JSONL_RECORD.map(lambda r: json.dumps(r, ensure_ascii=True)),
                    st.one_of(ANY_TEXT.map(lambda t: t.replace("\n", " ")), st.just(""), st.just("   ")))
JSONL_FILE = st.lists(JSONL_LINE, max_size=6).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


@given(data=mostly(JSONL_FILE, FILE_BYTES_JUNK, in_ten=9))
def test_jsonl_loader(folder: Path, data: bytes) -> None:
    _load(folder / "data.jsonl", data)


TEXT_FILE = st.one_of(
    st.text(max_size=2000).map(str.encode),
    st.lists(st.one_of(st.text(max_size=200), st.sampled_from(["# Title", "```", "~~~", "", "# ", "#\tx #"])),
             max_size=20).map(lambda lines: "\n".join(lines).encode()),
    FILE_BYTES_JUNK,
    st.binary(max_size=20).map(lambda b: b"\xef\xbb\xbf" + b),  # a byte-order mark, then anything
)


@given(data=TEXT_FILE, suffix=st.sampled_from([".txt", ".md"]))
def test_text_loader(folder: Path, data: bytes, suffix: str) -> None:
    _load(folder / f"notes{suffix}", data)


@given(data=mostly(SQUAD_DOC.map(json_file_bytes), FILE_BYTES_JUNK, in_ten=9), limit=st.none() | st.integers(1, 5),
       seed=st.none() | st.integers())
def test_eval_data_reader(folder: Path, data: bytes, limit: Any, seed: Any) -> None:
    """`ecqa eval --data` / `ecqa score --data`: questions the harness and the metric can use, or one line."""
    path = folder / "eval.json"
    path.write_bytes(data)
    try:
        questions = load_questions(path, limit=limit, seed=seed)
    except USER_ERRORS as exc:
        event(f"refused: {type(exc).__name__}")
        assert str(path) in check_user_error(exc)
        return
    event("loaded")
    assert questions and (limit is None or len(questions) <= limit)
    for q in questions:
        assert all(isinstance(x, str) for x in (q.id, q.question, q.context, q.title))
        assert q.answers and all(isinstance(a, str) for a in q.answers)
        json.dumps({q.id: q.question, "answers": list(q.answers)}, ensure_ascii=False).encode("utf-8")
        scores = score_question(q, q.answers[0])
        assert scores["f1"] == 1.0 and scores["exact"] == 1.0  # a gold answer scores full marks
