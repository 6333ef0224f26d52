"""Fuzz targets for settings (flags, ECQA_* env vars, the TOML file) and collection names, down to a
real embedded Qdrant folder: a name the settings accept can be built, served and dropped there, a name
they refuse is refused by the store too, and `index drop` of any name never loses another collection."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fuzz_helpers import ANY_TEXT, JSON_VALUES, NUMBERS, check_user_error, mostly, strict_json
from hypothesis import event, given
from hypothesis import strategies as st

from edge.errors import CollectionNotFoundError, StoreError
from edge.store import MAX_COLLECTION_NAME_BYTES, DocumentStore, collection_name_problem, document_id
from edge.store_edge import EdgeShardStore
from pipelines.errors import USER_ERRORS, ConfigError
from pipelines.settings import Settings, load_settings

FIELDS = sorted(Settings.model_fields)


def _check_settings(s: Settings) -> None:
    data = s.redacted()
    strict_json({k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()})  # no NaN or Infinity
    for value in data.values():
        if isinstance(value, float):
            assert math.isfinite(value)
    assert collection_name_problem(s.collection) is None


def _load_and_check() -> None:
    """Settings from the environment as it stands: refused in one line, or accepted and well-formed."""
    try:
        s = load_settings()
    except USER_ERRORS as exc:
        check_user_error(exc)
        event("refused")
        return
    event("accepted")
    _check_settings(s)


@given(field=st.sampled_from(FIELDS), value=st.one_of(JSON_VALUES, NUMBERS, ANY_TEXT))
def test_settings_from_flags(field: str, value: Any) -> None:
    try:
        s = load_settings(**{field: value})
    except USER_ERRORS as exc:
        assert isinstance(exc, ConfigError)
        check_user_error(exc)
        event("refused")
        return
    event("accepted")
    _check_settings(s)


ENV_TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=40)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@given(field=st.sampled_from(FIELDS), value=st.one_of(ENV_TEXT, NUMBERS.map(str),
                                                      st.sampled_from(["nan", "inf", "-inf", "1e999", "true", "[]", "{}"])))
def test_settings_from_env(field: str, value: str) -> None:
    with _env(**{f"ECQA_{field.upper()}": value}):
        _load_and_check()


TOML_VALUE = st.one_of(
    st.integers().map(str), st.floats(allow_nan=False, allow_infinity=False).map(repr), st.sampled_from(
        ["nan", "inf", "-inf", "true", "false", '""', "[]", "{}", "'x'", '"squad"', "1979-05-27"]),
    ANY_TEXT.map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
)
TOML_LINE = st.one_of(st.tuples(st.sampled_from(FIELDS), TOML_VALUE).map(lambda kv: f"{kv[0]} = {kv[1]}"),
                      ANY_TEXT.map(lambda t: t.replace("\n", " ")),
                      st.tuples(ANY_TEXT, TOML_VALUE).map(lambda kv: f"{json.dumps(kv[0])} = {kv[1]}"))
TOML_FILE = st.one_of(st.lists(TOML_LINE, max_size=4).map("\n".join), st.binary(max_size=100).map(
    lambda b: b.decode("latin-1")))


@given(text=TOML_FILE)
def test_settings_from_toml_file(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-ecqa.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    with _env(ECQA_CONFIG=str(path)):
        _load_and_check()


NAMES = st.one_of(
    ANY_TEXT,
    st.text(st.sampled_from("ab-_é漢0Z٣ⅷ"), min_size=1, max_size=MAX_COLLECTION_NAME_BYTES // 2 + 5),
    st.integers(MAX_COLLECTION_NAME_BYTES - 3, MAX_COLLECTION_NAME_BYTES + 3).map(lambda n: "a" * n),
    st.sampled_from(["good", "good__v1", "squad", "-", "_", ".", "..", "a/b", "a b", "ß", "İ", "\u00e9" * 116,
                     "e\u0301", "ǅ", "𝟘"]),
)


@pytest.fixture(scope="module")
def local_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocumentStore]:
    """An embedded Qdrant folder (folder names are where the byte limits bite) with collection 'good'."""
    store = DocumentStore(path=tmp_path_factory.mktemp("fuzz-names") / "qdrant").open()
    backing = store.create_version("good", 3, hybrid=False)
    store.upsert(backing, [document_id("t", "x")], [[1.0, 0.0, 0.0]], None, [{"text": "x", "title": "t"}])
    store.publish("good", backing, {"model": "m", "dimension": 3})
    yield store
    store.close()


def _state(store: DocumentStore) -> tuple[list[str], dict[str, str], int]:
    return sorted(store._collections()), store._aliases(), store.info("good").documents


@given(name=NAMES)
def test_collection_names(local_store: DocumentStore, name: str) -> None:
    """A name the settings accept is built, served and dropped in a real embedded Qdrant folder; one they
    refuse is refused by the store too, and nothing stored changes."""
    before = _state(local_store)
    try:
        load_settings(collection=name)
    except USER_ERRORS as exc:
        check_user_error(exc)
        event("refused")
        with pytest.raises(StoreError, match="collection name"):
            local_store.create_version(name, 3, hybrid=False)
        assert _state(local_store) == before
        return
    event("accepted")
    if name == "good":
        return
    backing = local_store.create_version(name, 3, hybrid=False)
    local_store.publish(name, backing, {"model": "m", "dimension": 3})
    assert local_store.info(name).documents == 0 and local_store.resolve(name) == backing
    assert local_store.drop(name) == backing
    assert _state(local_store) == before


@given(name=mostly(NAMES, st.sampled_from(["good__v", "good__v0"]), in_ten=8), use_backing=st.booleans())
def test_index_drop(local_store: DocumentStore, name: str, use_backing: bool) -> None:
    """`ecqa index drop NAME` for any name but 'good' (a missing one, or the version behind 'good'): a
    one-line error, and 'good' keeps serving all its documents."""
    if use_backing:
        name = local_store.resolve("good")
    if name == "good":
        return
    before = _state(local_store)
    with pytest.raises(USER_ERRORS) as info:
        local_store.drop(name)
    check_user_error(info.value)
    assert isinstance(info.value, (CollectionNotFoundError, StoreError))
    assert _state(local_store) == before


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index folder of the default store (Qdrant Edge), closed (the CLI opens it), holding collection 'good'."""
    folder = tmp_path_factory.mktemp("fuzz-cli") / "qdrant"
    with EdgeShardStore(path=folder) as store:
        backing = store.create_version("good", 3, hybrid=False)
        store.upsert(backing, [document_id("t", "x")], [[1.0, 0.0, 0.0]], None, [{"text": "x", "title": "t"}])
        store.publish("good", backing, {"model": "m", "dimension": 3})
    return folder


PATH_TEXT = st.one_of(ANY_TEXT, st.sampled_from(["x[/bold].json", "[red]a.jsonl", "a\\[/].txt", "a.pdf", "", "-",
                                                 "\udcff.json", "a\nb.md"]))


@given(command=st.sampled_from(["build", "drop", "stats"]), arg=st.one_of(NAMES, PATH_TEXT))
def test_ecqa_index_commands_argv(cli_index: Path, command: str, arg: str) -> None:
    """`ecqa index build PATH` / `index drop NAME` / `index stats -c NAME` with any argument: one red line
    (or typer's usage error), exit 2 — paths and names in messages are text, never rich markup — and
    'good' keeps all it holds."""
    from typer.testing import CliRunner

    from app.cli import app

    if arg == "good":
        return
    before = _files(cli_index)
    args = {"build": ["index", "build", arg, "-c", "fuzzed"], "drop": ["index", "drop", arg],
            "stats": ["index", "stats", "-c", arg]}[command]
    result = CliRunner().invoke(app, [*args, "--qdrant-path", str(cli_index)])
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    if lines and lines[0].startswith("error: "):
        assert len(lines) == 1 and " — " in lines[0], result.stderr
    else:
        assert "Usage:" in result.stderr or "Error" in result.stderr, result.stderr
    assert _files(cli_index) == before  # nothing stored changed (reading the index folder changes no file)


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}
