"""Fuzz targets for the question text where it enters: the check every entry point shares, `ecqa ask`
(argv), `ecqa shell` (stdin bytes) and the web UI's Ask handler (its API may send anything)."""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path
from typing import Any

import pytest
from fuzz_helpers import ANY_TEXT, ESCAPED_BYTES, NUMBERS, check_user_error, mostly, strict_json
from hypothesis import event, given
from hypothesis import strategies as st
from typer.testing import CliRunner

from app.cli import app, shell_line
from pipelines.answer import POLICIES
from pipelines.edge_pipeline import check_question
from pipelines.errors import USER_ERRORS
from reading.prompts import MAX_QUESTION_CHARS

QUESTIONS = st.one_of(
    ANY_TEXT,
    ESCAPED_BYTES,
    st.text(max_size=1500),
    st.sampled_from(["", " ", "\n", "?", "\x00", "Who founded the Normans \udcff\udcfe?", "\ud800", "a" * 1000,
                     "a" * 1001, " " * 2000 + "q", "What is the capital of Zorvath Island?"]),
)


def _index_unchanged(store: Any) -> tuple[str, int]:
    info = store.info("docs")
    return info.backing, info.documents


@given(QUESTIONS)
def test_check_question(question: str) -> None:
    try:
        q = check_question(question)
    except USER_ERRORS as exc:
        check_user_error(exc)
        return
    assert q == q.strip() and 0 < len(q) <= MAX_QUESTION_CHARS
    q.encode("utf-8")  # tokenizers, JSON and terminals can take it


OPTION_VALUES = st.one_of(ANY_TEXT, NUMBERS.map(str), st.sampled_from(["nan", "inf", "-1", "0", "1", "2", "1e309", ""]))
OPTIONS = st.lists(st.tuples(st.sampled_from(["--threshold", "--top-k", "--budget-ms", "--policy", "--collection",
                                              "--network"]), OPTION_VALUES), max_size=3)


@pytest.fixture(scope="module")
def empty_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-ask") / "qdrant"


@given(question=QUESTIONS, options=OPTIONS, as_json=st.booleans())
def test_ecqa_ask_argv(empty_index: Path, question: str, options: list[tuple[str, str]], as_json: bool) -> None:
    """`ecqa ask` as a user types it, over an index folder with no collection: whatever the argv, it is a
    usage error or one red line, exit 2 (valid input ends at "collection not found", before any model)."""
    args = ["ask", question, "--qdrant-path", str(empty_index)] + [x for pair in options for x in pair]
    result = CliRunner().invoke(app, args + (["--json"] if as_json else []))
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    if lines and lines[0].startswith("error: "):
        assert len(lines) == 1 and " — " in lines[0], result.stderr
    else:  # typer's own usage error (a malformed flag value): exit 2, no traceback
        assert "Usage:" in result.stderr or "Error" in result.stderr, result.stderr
    assert not (empty_index / "collection").exists() or not any((empty_index / "collection").iterdir())


STDIN_LINES = st.one_of(st.binary(max_size=200), ANY_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))


@given(raw=STDIN_LINES)
def test_ecqa_shell_line(fuzz_cascade: Any, fuzz_store: Any, raw: bytes) -> None:
    """A line of `ecqa shell`, from the bytes on its stdin (read as the shell reads them): an answer, or
    one red line — the session goes on."""
    line = io.TextIOWrapper(io.BytesIO(raw + b"\n"), encoding="utf-8", errors="surrogateescape").readline()
    if not line.strip():
        return  # the shell ends on an empty line
    before = _index_unchanged(fuzz_store)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        shell_line(fuzz_cascade, "cloud", line)
    errors = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    if errors:
        assert len(errors) == 1 and errors[0].startswith("error: ") and " — " in errors[0], err.getvalue()
    else:
        assert re.search(r"^(cloud|cache) · confidence", out.getvalue(), re.MULTILINE), out.getvalue()
    assert _index_unchanged(fuzz_store) == before


# Mostly what the page sends (nothing, or a value in range), else anything the API may receive.
JUNK = st.one_of(NUMBERS, ANY_TEXT, st.booleans())
# Mostly what the page sends (nothing, or a value in range), else anything the API may receive.
THRESHOLDS = mostly(st.one_of(st.none(), st.floats(0, 1)), JUNK)
TOP_KS = mostly(st.one_of(st.none(), st.integers(1, 50)), JUNK)
# Tmax: out of range or not a number, else long enough for the cloud to answer (a budget that runs out
# degrades to the edge model, which a fuzz target does not load).
BUDGETS = mostly(st.one_of(st.none(), st.floats(min_value=5000, max_value=1e9)),
                 st.one_of(ANY_TEXT, st.sampled_from([math.nan, math.inf, -math.inf, 0, -1.0, True]), st.floats(max_value=0)))
POLICY_NAMES = mostly(st.just("cloud"), st.one_of(st.sampled_from(POLICIES), ANY_TEXT), in_ten=7)


def _valid(question: str, threshold: Any, budget_ms: Any, top_k: Any) -> bool:
    from pipelines.ask import check_ask_options

    try:
        check_ask_options(threshold, budget_ms, top_k)
        check_question(question)
    except USER_ERRORS:
        return False
    return True


@given(question=QUESTIONS, policy=POLICY_NAMES,
       threshold=THRESHOLDS, budget_ms=BUDGETS, top_k=TOP_KS, use_cache=st.booleans())
def test_ui_ask_handler(fuzz_cascade: Any, fuzz_store: Any, fuzz_cloud: dict[str, Any], question: str, policy: str,
                        threshold: Any, budget_ms: Any, top_k: Any, use_cache: bool) -> None:
    """The Ask tab's handler (UiService.ask) with whatever its API receives: an answer whose JSON is
    strict, or one line. Policies that run the edge model are checked on refused input only."""
    from app.ui_service import UiService

    if policy in POLICIES and policy != "cloud" and _valid(question, threshold, budget_ms, top_k):
        event("not run: valid input for a policy that runs the edge model")
        return
    service = UiService(fuzz_cascade.edge.settings, fuzz_store, fuzz_cascade)
    before = _index_unchanged(fuzz_store)
    calls = len(fuzz_cloud["fake"].calls)
    try:
        answered = service.ask(question, policy, threshold=threshold, budget_ms=budget_ms, top_k=top_k,
                               use_cache=use_cache)
    except USER_ERRORS as exc:
        event(f"refused: {type(exc).__name__}")
        check_user_error(exc)
        assert len(fuzz_cloud["fake"].calls) == calls  # a refused question never left the device
    else:
        event(f"answered: {answered.result['tier']}")
        data = answered.result
        strict_json(data)  # what --json and the page show is JSON
        assert data["tier"] in ("cloud", "cache") and math.isfinite(data["timings_ms"]["total"])
        assert data["question"] == check_question(question)
    assert _index_unchanged(fuzz_store) == before
