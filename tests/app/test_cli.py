"""The ``ecqa`` CLI run the way a user runs it: typer's CliRunner in-process, and the installed
console script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import one_error_line
from typer.testing import CliRunner

from app.cli import app
from edge.store import DocumentStore
from edge.store_edge import EdgeShardStore

runner = CliRunner()
ECQA = str(Path(sys.executable).parent / "ecqa")


def ecqa(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), input=input)




@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_squad: Path) -> Path:
    """A Qdrant folder holding collection 'docs' (the tiny SQuAD corpus)."""
    folder = tmp_path_factory.mktemp("served") / "qdrant"
    result = runner.invoke(app, ["index", "build", str(tiny_squad), "-c", "docs", "--qdrant-path", str(folder)])
    assert result.exit_code == 0, result.stderr
    return folder


def stats(folder: Path) -> dict:
    result = ecqa("index", "stats", "-c", "docs", "--qdrant-path", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_build_stats_list_rebuild_drop(tiny_squad: Path, unseen_squad: Path) -> None:
    built = ecqa("index", "build", str(tiny_squad), "--collection", "docs")
    assert built.exit_code == 0, built.stderr
    assert "indexed 6 passages into docs (6 new" in " ".join(built.stdout.split())
    info = json.loads(ecqa("index", "stats", "--collection", "docs", "--json").stdout)
    assert {"collection", "documents", "dimension", "model", "built_at", "sources"} <= set(info)
    assert (info["collection"], info["documents"], info["dimension"], info["model"]) == ("docs", 6, 384, "all-MiniLM-L6-v2")
    assert info["sources"][0]["format"] == "squad" and info["built_at"].startswith("20")
    again = ecqa("index", "build", str(tiny_squad), "--collection", "docs")
    assert again.exit_code == 0 and "nothing added" in again.stdout
    assert json.loads(ecqa("index", "stats", "-c", "docs", "--json").stdout)["backing_collection"] == info["backing_collection"]
    more = json.loads(ecqa("index", "build", str(unseen_squad), "-c", "docs", "--json").stdout)
    assert (more["added"], more["documents"]) == (3, 9)
    listed = json.loads(ecqa("index", "list", "--json").stdout)
    assert [c["collection"] for c in listed] == ["docs"] and listed[0]["documents"] == 9
    table = ecqa("index", "list")
    assert "docs" in table.stdout and "384" in table.stdout
    dropped = ecqa("index", "drop", "docs")
    assert dropped.exit_code == 0 and "dropped" in dropped.stdout
    assert json.loads(ecqa("index", "list", "--json").stdout) == []


def test_recreate_replaces_collection(tiny_squad: Path, unseen_squad: Path) -> None:
    assert ecqa("index", "build", str(tiny_squad), "-c", "docs").exit_code == 0
    result = ecqa("index", "build", str(unseen_squad), "-c", "docs", "--recreate", "--json")
    assert json.loads(result.stdout)["documents"] == 3


def test_text_and_jsonl_inputs(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# Kettles\n\nA kettle boils water.\n\nIt whistles when done.\n")
    (tmp_path / "facts.jsonl").write_text('{"text": "Copper conducts heat.", "title": "Metals", "id": "m1"}\n')
    result = ecqa("index", "build", str(tmp_path / "notes.md"), str(tmp_path / "facts.jsonl"), "-c", "misc", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["documents"] == 2
    assert sorted(s["format"] for s in report["sources"]) == ["jsonl", "text"]


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "broken.json").write_text('{"data": [')
    (tmp / "other.json").write_text('{"rows": [1, 2]}')
    (tmp / "empty.txt").write_text("   \n")
    (tmp / "latin.txt").write_bytes("Caf\xe9".encode("latin-1"))
    (tmp / "doc.pdf").write_bytes(b"%PDF-1.4")
    (tmp / "not-a-model").mkdir(exist_ok=True)
    (tmp / "good.jsonl").write_text('{"text": "Copper conducts heat."}\n')
    return {
        "missing file": ([str(tmp / "missing.json")], "no such file"),
        "malformed JSON": ([str(tmp / "broken.json")], "not valid JSON"),
        "JSON that is not SQuAD v2": ([str(tmp / "other.json")], "not SQuAD v2"),
        "empty corpus": ([str(tmp / "empty.txt")], "no passages"),
        "undecodable text": ([str(tmp / "latin.txt")], "not UTF-8"),
        "unsupported extension": ([str(tmp / "doc.pdf")], "unsupported extension"),
        "model dir that is not sentence-transformers": (
            [str(tmp / "good.jsonl"), "--embedder-model", str(tmp / "not-a-model")], "not a sentence-transformers model"),
        "model path that does not exist": (
            [str(tmp / "good.jsonl"), "--embedder-model", str(tmp / "nope")], "not a directory"),
        "bad batch size": ([str(tmp / "good.jsonl"), "--batch-size", "0"], "embed_batch_size"),
    }


BAD_BUILD_CASES = [
    "missing file", "malformed JSON", "JSON that is not SQuAD v2", "empty corpus", "undecodable text",
    "unsupported extension", "model dir that is not sentence-transformers", "model path that does not exist",
    "bad batch size",
]


@pytest.mark.parametrize("case", BAD_BUILD_CASES)
def test_bad_build_input_is_one_line_exit_2_and_keeps_index(case: str, served: Path, tmp_path: Path) -> None:
    before = stats(served)
    cases = _bad_inputs(tmp_path)
    assert sorted(cases) == sorted(BAD_BUILD_CASES)
    args, expected = cases[case]
    line = one_error_line(ecqa("index", "build", *args, "-c", "docs", "--qdrant-path", str(served)))
    assert expected in line
    assert stats(served) == before  # nothing already stored is lost or changed


def test_bad_ask_and_stats_inputs(served: Path) -> None:
    assert "empty" in one_error_line(ecqa("ask", "  ", "--qdrant-path", str(served)))
    assert "choose one of: edge, cloud, cascade, latency, learned" in one_error_line(
        ecqa("ask", "Who?", "--policy", "oracle", "--qdrant-path", str(served)))
    no_cloud = one_error_line(ecqa("ask", "Who?", "--policy", "cascade", "-c", "docs", "--qdrant-path", str(served)))
    assert "no gateway is configured" in no_cloud and "--cloud-url" in no_cloud
    assert "unknown link profile" in one_error_line(ecqa("ask", "Who?", "--policy", "cloud", "--network", "dialup",
                                                         "--cloud-url", "https://127.0.0.1:9", "--qdrant-path", str(served)))
    missing = one_error_line(ecqa("ask", "Who?", "-c", "nope", "--qdrant-path", str(served)))
    assert "collection 'nope' not found" in missing and "ecqa index build" in missing
    assert "not found" in one_error_line(ecqa("index", "stats", "-c", "nope", "--qdrant-path", str(served)))
    assert "not found" in one_error_line(ecqa("index", "drop", "nope", "--qdrant-path", str(served)))
    assert "collection" in one_error_line(ecqa("index", "stats", "-c", "bad name", "--qdrant-path", str(served)))


@pytest.mark.parametrize("bad", ["nan", "2", "-1", "inf"])
def test_ask_refuses_a_threshold_outside_0_1(served: Path, bad: str) -> None:
    """Defect #12.8: these ran, and --json printed "threshold": NaN (not JSON)."""
    line = one_error_line(ecqa("ask", "Who?", "--threshold", bad, "-c", "docs", "--qdrant-path", str(served), "--json"))
    assert "threshold" in line and "from 0 to 1" in line


@pytest.mark.parametrize(("name", "fragment"), [("a" * 233, "233 bytes"), ("é" * 120, "240 bytes")])
def test_build_refuses_a_collection_name_qdrant_cannot_hold(tmp_path: Path, name: str, fragment: str) -> None:
    """Defect #12.6: these were a ValueError / OSError (file name too long) traceback."""
    (tmp_path / "a.jsonl").write_text('{"text": "Copper conducts heat."}\n')
    line = one_error_line(ecqa("index", "build", str(tmp_path / "a.jsonl"), "-c", name))
    assert fragment in line and "collection" in line


def test_build_refuses_a_lone_surrogate_naming_file_and_line(tmp_path: Path) -> None:
    """Defect #12.6: an escaped lone surrogate in JSONL was a UnicodeEncodeError traceback."""
    path = tmp_path / "lone.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "bad \\ud800 text"}\n')
    line = one_error_line(ecqa("index", "build", str(path), "-c", "docs"))
    assert str(path) in line and "line 2" in line and "lone surrogate" in line


def test_drop_refuses_the_version_behind_an_alias(served: Path) -> None:
    """Defect #12.10: `index drop docs__v…` removed the live data behind `docs`."""
    before = stats(served)
    line = one_error_line(ecqa("index", "drop", before["backing_collection"], "--qdrant-path", str(served)))
    assert "'docs'" in line and "ecqa index drop docs" in line
    assert stats(served) == before


@pytest.mark.parametrize(("name", "shown"), [("x[/bold].json", "x[/bold].json"), ("[red]a.jsonl", "[red]a.jsonl"),
                                             ("a\nb.json", "a\\nb.json")])
def test_paths_in_messages_are_text_not_markup_or_line_breaks(tmp_path: Path, name: str, shown: str) -> None:
    """Found by the fuzz harness: a path holding "[/bold]" was a rich MarkupError traceback, one holding a
    line break made the error two lines."""
    line = one_error_line(ecqa("index", "build", str(tmp_path / name), "-c", "docs"))
    assert f"{tmp_path}/{shown}: no such file or directory — check the path" in line


def test_locked_index_folder(served: Path, tmp_path: Path) -> None:
    with EdgeShardStore(path=served) as store:  # the default store: a version is open in one place at a time
        assert store.info("docs").documents == 6
        line = one_error_line(ecqa("index", "list", "--qdrant-path", str(served)))
    assert "open in another ecqa process" in line
    local = tmp_path / "local"
    with DocumentStore(path=local):  # local mode locks the whole folder
        line = one_error_line(ecqa("index", "list", "--qdrant-path", str(local), "--store", "local"))
    assert "open in another ecqa process" in line


def test_unreachable_qdrant_url() -> None:
    line = one_error_line(ecqa("index", "list", "--qdrant-url", "http://127.0.0.1:9"))
    assert "did not answer" in line


def test_config_show_redacts_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ECQA_QDRANT_API_KEY", "hunter2-secret")
    monkeypatch.setenv("ECQA_TOP_K", "4")
    result = ecqa("config", "show", "--json")
    data = json.loads(result.stdout)
    assert data["top_k"] == 4 and data["qdrant_api_key"] == "**********"
    assert data["qdrant_path"] == str(tmp_path / "qdrant")
    table = ecqa("config", "show")
    assert "hunter2" not in table.stdout and "ECQA_TOP_K" in table.stdout
    monkeypatch.delenv("ECQA_TOP_K")
    cfg = tmp_path / "bad.toml"
    cfg.write_text("top_k = 'many'\n")
    monkeypatch.setenv("ECQA_CONFIG", "")  # --config sets it in-process; monkeypatch undoes that
    assert "top_k" in one_error_line(ecqa("--config", str(cfg), "config", "show"))


@pytest.mark.slow
def test_ask_json_contract_on_unseen_squad_file(unseen_squad: Path, answering_calibration: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECQA_CALIBRATION_PATH", str(answering_calibration))  # the edge answers: a contract test
    assert ecqa("index", "build", str(unseen_squad)).exit_code == 0  # default collection
    result = ecqa("ask", "What is the capital of Zorvath Island?", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"answer", "tier", "confidence", "passages", "timings_ms"} <= set(data)
    assert data["tier"] == "edge" and "total" in data["timings_ms"]
    assert data["answer"] == "Miret"
    assert "capital is Miret" in data["passages"][0]["text"]
    assert 0.0 <= data["confidence"] <= 1.0
    plain = ecqa("ask", "Who founded the Brindlewick Orchestra?", "--top-k", "1")
    assert plain.exit_code == 0 and "Amara Velt" in plain.stdout and "Brindlewick Orchestra" in plain.stdout


@pytest.mark.slow
def test_shell_answers_until_empty_line(served: Path) -> None:
    result = ecqa("shell", "-c", "docs", "--qdrant-path", str(served), input="In what country is Normandy located?\n\n")
    assert result.exit_code == 0, result.stderr
    assert "collection docs (6 passages)" in " ".join(result.stdout.split())
    assert "confidence" in result.stdout and "Normans" in result.stdout


@pytest.mark.slow
def test_console_script_end_to_end(tmp_path: Path, unseen_squad: Path) -> None:
    env = {**os.environ, "ECQA_QDRANT_PATH": str(tmp_path / "q")}
    bad = subprocess.run([ECQA, "index", "build", str(tmp_path / "nope.json")], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    build = subprocess.run([ECQA, "index", "build", str(unseen_squad), "-c", "unseen"], capture_output=True, text=True, env=env)
    assert build.returncode == 0, build.stderr
    ask = subprocess.run([ECQA, "ask", "Which river is fed by meltwater from the Kelvane glacier?", "-c", "unseen", "--json"],
                         capture_output=True, text=True, env=env)
    assert ask.returncode == 0, ask.stderr
    data = json.loads(ask.stdout)
    assert "Tarrow River" in data["passages"][0]["text"]


@pytest.mark.slow
def test_index_build_kv_stores_each_passage_state_once(tiny_squad: Path, tmp_path: Path) -> None:
    first = ecqa("index", "build", str(tiny_squad), "-c", "docs", "--qdrant-path", str(tmp_path / "q"), "--kv", "--json")
    assert first.exit_code == 0, first.stderr
    report = json.loads(first.stdout)["kv"]
    assert (report["computed"], report["already_stored"], report["kv_type"]) == (6, 0, "q8_0")
    assert report["dir"] == str(Path(os.environ["XDG_DATA_HOME"]) / "ecqa" / "kv") and report["bytes"] > 6 * 100_000
    assert len(list(Path(report["dir"]).glob("*.kv"))) == 6
    again = ecqa("index", "build", str(tiny_squad), "-c", "docs", "--qdrant-path", str(tmp_path / "q"), "--kv")
    assert again.exit_code == 0 and "KV states: 0 computed, 6 already stored" in " ".join(again.stdout.split())


def test_index_build_kv_without_per_passage_reading_is_one_line(tiny_squad: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECQA_SLM_READING", "joint")
    line = one_error_line(ecqa("index", "build", str(tiny_squad), "--qdrant-path", str(tmp_path / "q"), "--kv"))
    assert "--kv needs the per-passage reading" in line and "ECQA_SLM_READING" in line
    assert not (tmp_path / "q").exists()  # refused before anything was indexed
