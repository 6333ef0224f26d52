from __future__ import annotations

from pathlib import Path

import pytest

from edge.embedder import SentenceEmbedder
from edge.store import DocumentStore
from indexing.build import build_index
from indexing.errors import EmptyCorpusError, IndexingError
from indexing.loaders import load_passages


class FailingEmbedder(SentenceEmbedder):
    """The real embedder with a fault injected after ``ok_batches`` batches."""

    def __init__(self, real: SentenceEmbedder, ok_batches: int, exc: BaseException) -> None:
        self.__dict__.update(real.__dict__)
        self.left = ok_batches
        self.exc = exc

    def encode(self, texts, batch_size=64):  # type: ignore[no-untyped-def]
        if self.left == 0:
            raise self.exc
        self.left -= 1
        return super().encode(texts, batch_size)


def test_build_then_rebuild_adds_nothing(memory_store: DocumentStore, embedder: SentenceEmbedder, tiny_squad: Path) -> None:
    passages, sources = load_passages([tiny_squad])
    first = build_index(memory_store, embedder, passages, sources, "docs", batch_size=4)
    assert (first.documents, first.added, first.already_indexed) == (6, 6, 0)
    info = memory_store.info("docs")
    assert (info.documents, info.dimension, info.model, info.hybrid) == (6, 384, "all-MiniLM-L6-v2", True)
    assert info.sources[0]["path"] == str(tiny_squad) and info.sources[0]["passages"] == 6
    again = build_index(memory_store, embedder, passages, sources, "docs")
    assert (again.added, again.already_indexed, again.documents) == (0, 6, 6)
    assert memory_store.info("docs").backing == first.backing  # no new version written


def test_incremental_add_and_recreate(memory_store: DocumentStore, embedder: SentenceEmbedder,
                                      tiny_squad: Path, unseen_squad: Path) -> None:
    p1, s1 = load_passages([tiny_squad])
    p2, s2 = load_passages([unseen_squad])
    build_index(memory_store, embedder, p1, s1, "docs")
    added = build_index(memory_store, embedder, p1[:2] + p2, s2, "docs")
    assert (added.added, added.already_indexed, added.documents) == (3, 2, 9)
    assert len(memory_store.info("docs").sources) == 2
    fresh = build_index(memory_store, embedder, p2, s2, "docs", recreate=True)
    assert fresh.documents == 3 and memory_store.info("docs").documents == 3


def test_duplicates_are_indexed_once(memory_store: DocumentStore, embedder: SentenceEmbedder, tiny_squad: Path) -> None:
    passages, sources = load_passages([tiny_squad, tiny_squad])
    report = build_index(memory_store, embedder, passages, sources, "docs")
    assert (report.documents, report.duplicates) == (6, 6)


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_build_leaves_previous_index_serving(memory_store: DocumentStore, embedder: SentenceEmbedder,
                                                    tiny_squad: Path, unseen_squad: Path, exc: BaseException) -> None:
    p1, s1 = load_passages([tiny_squad])
    before = build_index(memory_store, embedder, p1, s1, "docs")
    p2, s2 = load_passages([unseen_squad])
    with pytest.raises(type(exc)):
        build_index(memory_store, FailingEmbedder(embedder, 1, exc), p2, s2, "docs", recreate=True, batch_size=1)
    info = memory_store.info("docs")
    assert (info.backing, info.documents) == (before.backing, 6)
    assert [c for c in memory_store._collections() if c.startswith("docs__v")] == [before.backing]


def test_empty_corpus_and_model_mismatch(memory_store: DocumentStore, embedder: SentenceEmbedder, tiny_squad: Path) -> None:
    with pytest.raises(EmptyCorpusError):
        build_index(memory_store, embedder, [], [], "docs")
    passages, sources = load_passages([tiny_squad])
    backing = memory_store.create_version("docs", 8, hybrid=False)
    memory_store.publish("docs", backing, {"model": "other-model", "dimension": 8})
    with pytest.raises(IndexingError, match="--recreate"):
        build_index(memory_store, embedder, passages, sources, "docs")
    assert memory_store.info("docs").model == "other-model"


def test_hybrid_retrieval_finds_gold_paragraph(memory_store: DocumentStore, embedder: SentenceEmbedder,
                                               tiny_squad: Path, unseen_squad: Path) -> None:
    from edge import sparse

    passages, sources = load_passages([tiny_squad, unseen_squad])
    build_index(memory_store, embedder, passages, sources, "docs")
    question = "Which river is fed by meltwater from the Kelvane glacier?"
    hits = memory_store.search("docs", embedder.encode([question])[0], sparse.query_vector(question), top_k=3)
    assert "Tarrow River" in hits[0].payload["text"]
    assert hits[0].dense_score is not None and hits[0].sparse_score is not None
    assert hits[0].score >= hits[1].score >= hits[2].score
