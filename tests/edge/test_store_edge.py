"""The Qdrant Edge store: the same answers as local mode, atomic rebuilds that survive SIGKILL, snapshots that
seed another folder, and pulls that switch only when the new version is loaded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge import sparse
from edge.errors import StoreError, StoreLockedError
from edge.store import DocumentStore, IndexStore, document_id
from edge.store_edge import EdgeShardStore, pull_snapshot, snapshot_manifest, write_snapshot
from indexing.build import build_index
from indexing.loaders import load_passages

ROOT = Path(__file__).resolve().parents[2]


def _top3(store: IndexStore, embedder, questions: list[str], name: str = "docs") -> list[list[str]]:  # type: ignore[no-untyped-def]
    vectors = embedder.encode(questions)
    return [[h.id for h in store.search(name, list(v), sparse.query_vector(q), top_k=3)]
            for q, v in zip(questions, vectors, strict=True)]


def _questions(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    return [qa["question"] for art in data["data"] for par in art["paragraphs"] for qa in par["qas"]]


def test_edge_and_local_mode_rank_the_same(embedder, tiny_squad: Path, unseen_squad: Path) -> None:  # type: ignore[no-untyped-def]
    passages, sources = load_passages([tiny_squad, unseen_squad])
    questions = _questions(tiny_squad) + _questions(unseen_squad)
    with EdgeShardStore() as edge, DocumentStore() as local:
        build_index(edge, embedder, passages, sources, "docs")
        build_index(local, embedder, passages, sources, "docs")
        same = ("documents", "dimension", "model", "hybrid", "embed_titles")
        assert [edge.info("docs").as_dict()[k] for k in same] == [local.info("docs").as_dict()[k] for k in same]
        hits_edge = [edge.search("docs", [0.1] * 384, sparse.query_vector(q), top_k=3) for q in questions[:3]]
        hits_local = [local.search("docs", [0.1] * 384, sparse.query_vector(q), top_k=3) for q in questions[:3]]
        # the same fused scores, cosine and BM25 (IDF applied by each engine)
        for a, b in zip(hits_edge, hits_local, strict=True):
            assert [h.id for h in a] == [h.id for h in b]
            assert [h.sparse_score or -1.0 for h in a] == pytest.approx([h.sparse_score or -1.0 for h in b], rel=1e-4)
            assert [h.dense_score or -1.0 for h in a] == pytest.approx([h.dense_score or -1.0 for h in b], rel=1e-4)
        assert len(questions) >= 9 and _top3(edge, embedder, questions) == _top3(local, embedder, questions)


def _build_child(folder: Path, data: Path, hold: bool) -> subprocess.Popen[str]:
    """A real build_index in another process; with ``hold`` it stops after its first batch and waits to be killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from edge.embedder import SentenceEmbedder
        from edge.store_edge import EdgeShardStore
        from indexing.build import build_index
        from indexing.loaders import load_passages

        def progress(done, total):
            if {hold!r} and done:
                print("halfway", done, total, flush=True)
                time.sleep(600)

        passages, sources = load_passages([Path({str(data)!r})])
        with EdgeShardStore(Path({str(folder)!r})) as store:
            build_index(store, SentenceEmbedder().load(), passages, sources, "docs", recreate=True, batch_size=2,
                        progress=progress)
        print("built", flush=True)
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_rebuild_killed_by_sigkill_leaves_the_old_index_serving(embedder, tmp_path: Path, tiny_squad: Path,  # type: ignore[no-untyped-def]
                                                                   unseen_squad: Path) -> None:
    folder = tmp_path / "qdrant"
    first = _build_child(folder, tiny_squad, hold=False)
    assert first.communicate(timeout=300)[0].strip().endswith("built")
    with EdgeShardStore(folder) as store:
        before = store.info("docs")
        answers = _top3(store, embedder, _questions(tiny_squad))
    child = _build_child(folder, unseen_squad, hold=True)
    assert child.stdout is not None and child.stdout.readline().startswith("halfway")  # a new version half written
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    leftovers = [p.name for p in folder.iterdir() if p.is_dir() and p.name != before.backing]
    assert len(leftovers) == 1  # the killed build's version, never published
    with EdgeShardStore(folder) as store:
        assert store.info("docs").as_dict() == before.as_dict()
        assert _top3(store, embedder, _questions(tiny_squad)) == answers
        # The next build publishes and clears what the killed one left.
        passages, sources = load_passages([unseen_squad])
        build_index(store, embedder, passages, sources, "docs", recreate=True)
        assert store.info("docs").documents == 3
    assert [p.name for p in folder.iterdir() if p.is_dir()] == [EdgeShardStore(folder).open().resolve("docs")]


def test_snapshot_seeds_another_folder_with_identical_results(embedder, tmp_path: Path, tiny_squad: Path,  # type: ignore[no-untyped-def]
                                                              unseen_squad: Path) -> None:
    passages, sources = load_passages([tiny_squad, unseen_squad])
    questions = _questions(tiny_squad) + _questions(unseen_squad)
    out = tmp_path / "docs.snapshot"
    for make in (lambda: EdgeShardStore(tmp_path / "central"), lambda: DocumentStore()):  # from either store
        with make() as central:
            build_index(central, embedder, passages, sources, "docs")
            expected = _top3(central, embedder, questions)
            manifest = write_snapshot(central, "docs", out)
        assert snapshot_manifest(out)["model"] == manifest["model"] == "all-MiniLM-L6-v2"
        assert out.stat().st_size < 2_000_000  # sparse members: the shard's preallocated holes are not written
        for target in (EdgeShardStore(tmp_path / f"edge-{id(make)}"), DocumentStore()):
            with target:
                pull_snapshot(target, out, "docs")
                assert target.info("docs").documents == 9 and target.info("docs").model == "all-MiniLM-L6-v2"
                assert _top3(target, embedder, questions) == expected


def test_pull_switches_a_serving_store_only_when_the_new_version_is_loaded(tmp_path: Path) -> None:
    def snapshot_of(texts: list[str], out: Path) -> Path:
        with EdgeShardStore() as scratch:
            backing = scratch.create_version("docs", 3, hybrid=False)
            scratch.upsert(backing, [document_id("t", t) for t in texts], [[1.0, float(i), 0.0] for i in range(len(texts))],
                           None, [{"text": t, "title": "t"} for t in texts])
            scratch.publish("docs", backing, {"model": "m", "dimension": 3})
            write_snapshot(scratch, "docs", out)
        return out

    old, new = snapshot_of(["one", "two"], tmp_path / "old.snapshot"), snapshot_of(["three"], tmp_path / "new.snapshot")
    folder = tmp_path / "edge"
    with EdgeShardStore(folder) as serving:
        pull_snapshot(serving, old, "docs")
        assert [h.payload["text"] for h in serving.search("docs", [1.0, 0.0, 0.0], None, 3)] == ["one", "two"]
        first = serving.resolve("docs")
        with EdgeShardStore(folder) as puller:  # another puller, while `serving` has the old version open
            with pytest.raises(StoreError, match="not an ecqa index snapshot|not an index snapshot"):
                bad = tmp_path / "bad.snapshot"
                bad.write_bytes(b"not a tar at all")
                pull_snapshot(puller, bad, "docs")
            assert serving.search("docs", [1.0, 0.0, 0.0], None, 3)[0].payload["text"] == "one"  # nothing changed
            pull_snapshot(puller, new, "docs")
        assert (folder / first).is_dir()  # still open in `serving`: left for later, not pulled from under it
        assert [h.payload["text"] for h in serving.search("docs", [1.0, 0.0, 0.0], None, 3)] == ["three"]
    with EdgeShardStore(folder) as later:
        pull_snapshot(later, old, "docs")
        assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [later.resolve("docs")]


def test_a_version_open_in_another_process_is_one_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "edge"
    with EdgeShardStore(folder) as store:
        backing = store.create_version("docs", 3, hybrid=False)
        store.upsert(backing, [document_id("t", "x")], [[1.0, 0.0, 0.0]], None, [{"text": "x", "title": "t"}])
        store.publish("docs", backing, {})
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from edge.store_edge import EdgeShardStore;"
         f"s = EdgeShardStore(Path({str(folder)!r})).open(); print(s.info('docs').documents, flush=True); time.sleep(600)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "1"
        with EdgeShardStore(folder) as store, pytest.raises(StoreLockedError) as exc:
            store.info("docs")
        assert "open in another ecqa process" in str(exc.value) and " — " in str(exc.value)
    finally:
        holder.kill()
        holder.wait()
    with EdgeShardStore(folder) as store:  # the holder's lock went with it
        assert store.info("docs").documents == 1
