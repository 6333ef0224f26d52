"""`ecqa index build … --snapshot FILE` on a central machine and `ecqa index pull FILE` on an edge, run the way an
operator runs them, and what a bad snapshot does (one line, exit 2, the served index untouched)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from cli_helpers import one_error_line
from typer.testing import CliRunner

from app.cli import app
from edge import sparse
from edge.store_edge import EdgeShardStore

runner = CliRunner()


def ecqa(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def _questions(*paths: Path) -> list[str]:
    return [qa["question"] for p in paths for art in json.loads(p.read_text())["data"]
            for par in art["paragraphs"] for qa in par["qas"]]


def _top3(folder: Path, embedder, questions: list[str], store: str = "edge") -> list[list[str]]:  # type: ignore[no-untyped-def]
    from pipelines.settings import load_settings, open_store

    with open_store(load_settings(qdrant_path=folder, store=store)) as s:
        return [[h.id for h in s.search("docs", list(v), sparse.query_vector(q), top_k=3)]
                for q, v in zip(questions, embedder.encode(questions), strict=True)]


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory, tiny_squad: Path, unseen_squad: Path) -> tuple[Path, Path]:
    """A central build of the SQuAD files with its snapshot: (index folder, snapshot)."""
    root = tmp_path_factory.mktemp("central")
    snap = root / "docs.snapshot"
    built = ecqa("index", "build", str(tiny_squad), str(unseen_squad), "-c", "docs", "--qdrant-path", str(root / "qdrant"),
                 "--snapshot", str(snap), "--json")
    assert built.exit_code == 0, built.stderr
    report = json.loads(built.stdout)
    assert report["documents"] == 9 and report["snapshot"]["path"] == str(snap) and report["snapshot"]["bytes"] > 0
    return root / "qdrant", snap


@pytest.mark.parametrize("store", ["edge", "local"])
def test_pull_on_another_folder_gives_identical_top3(central: tuple[Path, Path], embedder, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                     tiny_squad: Path, unseen_squad: Path, store: str) -> None:
    folder, snap = central
    edge_folder = tmp_path / "edge"
    pulled = ecqa("index", "pull", str(snap), "-c", "docs", "--qdrant-path", str(edge_folder), "--store", store)
    assert pulled.exit_code == 0, pulled.stderr
    assert "now serves 9 passages" in " ".join(pulled.stdout.split())
    stats = json.loads(ecqa("index", "stats", "-c", "docs", "--qdrant-path", str(edge_folder), "--store", store,
                            "--json").stdout)
    assert (stats["documents"], stats["model"], stats["hybrid"]) == (9, "all-MiniLM-L6-v2", True)
    questions = _questions(tiny_squad, unseen_squad)
    assert _top3(edge_folder, embedder, questions, store) == _top3(folder, embedder, questions)


def test_a_bad_snapshot_is_one_line_and_the_served_index_stays(central: tuple[Path, Path], tmp_path: Path,
                                                              tiny_squad: Path) -> None:
    _, snap = central
    edge_folder = tmp_path / "edge"
    assert ecqa("index", "pull", str(snap), "-c", "docs", "--qdrant-path", str(edge_folder)).exit_code == 0
    with EdgeShardStore(edge_folder) as store:
        before = store.info("docs").as_dict()
    garbage = tmp_path / "garbage.snapshot"
    garbage.write_bytes(b"\x00garbage" * 100)
    assert "is not an index snapshot" in one_error_line(ecqa("index", "pull", str(garbage), "-c", "docs",
                                                             "--qdrant-path", str(edge_folder)))
    line = one_error_line(ecqa("index", "pull", str(tmp_path / "missing.snapshot"), "--qdrant-path", str(edge_folder)))
    assert "does not exist" in line
    foreign = tmp_path / "foreign.snapshot"  # a tar, but no ecqa manifest (e.g. some other archive)
    with tarfile.open(foreign, "w") as tar:
        tar.add(tiny_squad, arcname="x.json")
    assert "not made by ecqa" in one_error_line(ecqa("index", "pull", str(foreign), "-c", "docs",
                                                     "--qdrant-path", str(edge_folder)))
    with EdgeShardStore(edge_folder) as store:
        assert store.info("docs").as_dict() == before
        assert [p.name for p in edge_folder.iterdir() if p.is_dir()] == [before["backing_collection"]]


def test_snapshot_into_a_missing_folder_fails_before_building(tiny_squad: Path, tmp_path: Path) -> None:
    line = one_error_line(ecqa("index", "build", str(tiny_squad), "--qdrant-path", str(tmp_path / "q"),
                               "--snapshot", str(tmp_path / "no-such-dir" / "x.snapshot")))
    assert "--snapshot" in line and "does not exist" in line
    assert not (tmp_path / "q").exists() or not any((tmp_path / "q").iterdir())


@pytest.mark.slow
def test_pull_kv_stores_the_state_of_every_pulled_passage(central: tuple[Path, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECQA_KV_DIR", str(tmp_path / "kv"))  # an edge device with no KV state yet
    _, snap = central
    pulled = ecqa("index", "pull", str(snap), "-c", "docs", "--qdrant-path", str(tmp_path / "edge"), "--kv", "--json")
    assert pulled.exit_code == 0, pulled.stderr
    report = json.loads(pulled.stdout)
    assert report["documents"] == 9 and (report["kv"]["computed"], report["kv"]["already_stored"]) == (9, 0)
    assert len(list((tmp_path / "kv").glob("*.kv"))) == 9
