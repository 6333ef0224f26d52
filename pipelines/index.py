"""The front door of indexing for app/ and eval/: load files, embed and build a collection (atomically),
store the edge's passage KV states, read SQuAD v2 files — each with the settings that govern it.

The CLI, the UI and the evaluation used to wire the loaders, the embedder and the builder
themselves with the same five settings fields; they call these functions instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from haystack import Document

from edge.embedder import SentenceEmbedder
from edge.store import IndexStore, document_id
from edge.store_edge import pull_snapshot, write_snapshot
from indexing.build import BuildReport, build_index
from indexing.errors import InputFormatError
from indexing.loaders import SourceSummary, SourceText, load_passages, read_squad
from pipelines.edge_pipeline import edge_reader_for
from pipelines.settings import Settings

__all__ = ["Indexed", "InputFormatError", "Loaded", "document_id", "embedder_for", "index_files", "load_files",
           "prepare_kv_states", "pull_index", "read_squad", "snapshot_index", "stored_passages"]

KV_BATCH = 16  # passages per progress step when storing KV states


@dataclass(frozen=True)
class Loaded:
    """Passages read from files, and a summary of each file."""

    passages: list[SourceText]
    sources: list[SourceSummary]


def load_files(settings: Settings, paths: Sequence[Path]) -> Loaded:
    """Read and chunk ``paths`` as the settings say.

    :raises IndexingError: a missing, unreadable or malformed file, or no passage at all.
    """
    passages, sources = load_passages(list(paths), chunk_chars=settings.chunk_chars,
                                      overlap_chars=settings.chunk_overlap_chars)
    return Loaded(passages, sources)


@dataclass(frozen=True)
class Indexed:
    """A build's report and the passages it read (the KV states are stored from them)."""

    report: BuildReport
    passages: list[SourceText]


def embedder_for(settings: Settings) -> SentenceEmbedder:
    """The passage embedder of the settings, not loaded yet.

    :raises EmbedderError: the model directory is not a sentence-transformers model (checked now,
        before any input is read).
    """
    return SentenceEmbedder(settings.embedder_model)


def index_files(settings: Settings, store: IndexStore, paths: Sequence[Path] | Loaded, collection: str | None = None,
                embedder: SentenceEmbedder | None = None, recreate: bool = False,
                progress: Callable[[int, int], None] | None = None) -> Indexed:
    """Load ``paths`` (or take what :func:`load_files` read), embed them and build ``collection`` (default:
    the settings'), atomically.

    :param embedder: one already made (the UI's question embedder: one MiniLM in memory).
    :param progress: called with (passages embedded, passages to embed).
    :raises IndexingError: a missing, unreadable or malformed file, or no passage at all.
    :raises EdgeError: an embedder that does not fit an existing collection.
    """
    embedder = embedder or embedder_for(settings)
    loaded = paths if isinstance(paths, Loaded) else load_files(settings, paths)
    embedder.load()
    report = build_index(store, embedder, loaded.passages, loaded.sources, collection or settings.collection, recreate=recreate,
                         batch_size=settings.embed_batch_size, embed_titles=settings.embed_titles,
                         hybrid=settings.hybrid, progress=progress)
    return Indexed(report, loaded.passages)


def prepare_kv_states(settings: Settings, passages: Sequence[SourceText],
                      progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Store the edge model's prefix state of every passage, as the edge will read it.

    :returns: counts ("computed", "already_stored"), the store's size and folder, write errors, seconds.
    :raises ModelError: the edge model does not load.
    """
    reader = edge_reader_for(settings.model_copy(update={"slm_reading": "each", "kv_store": True}))
    generator, builder = reader.generator, reader.prompt_builder
    generator.warm_up()
    docs = [Document(content=p.text, meta={"title": p.title}) for p in passages]
    counts = {"hit": 0, "miss": 0}
    t0 = time.perf_counter()
    for i in range(0, len(docs), KV_BATCH):
        chunk = builder.run(documents=docs[i:i + KV_BATCH])["passages"]
        for state in generator.prepare(chunk):
            counts[state] = counts.get(state, 0) + 1
        if progress is not None:
            progress(min(i + KV_BATCH, len(docs)), len(docs))
    store = generator.store
    assert store is not None
    return {"computed": counts["miss"], "already_stored": counts["hit"], "bytes": store.size_bytes(),
            "dir": str(store.folder), "kv_type": settings.kv_type, "errors": store.stats.errors,
            "seconds": round(time.perf_counter() - t0, 2)}


def snapshot_index(store: IndexStore, collection: str, out: Path) -> dict[str, Any]:
    """Write ``collection`` as a Qdrant Edge shard snapshot to ``out`` (from any store): a central build, many edges.

    :returns: the snapshot's manifest, with its size in bytes.
    :raises StoreError: no such collection, or ``out`` is not writable.
    """
    manifest = write_snapshot(store, collection, out)
    return manifest | {"snapshot": str(out), "bytes": out.stat().st_size}


def pull_index(store: IndexStore, snapshot: Path, collection: str) -> dict[str, Any]:
    """Make ``snapshot`` the collection ``collection``: the old version serves until the new one is loaded.

    :returns: the collection's new version, its document count and where the snapshot was built.
    :raises StoreError: not an ecqa snapshot, or one the engine cannot restore (nothing stored is changed).
    """
    backing, manifest = pull_snapshot(store, snapshot, collection)
    return {"collection": collection, "backing_collection": backing, "documents": store.info(collection).documents,
            "model": manifest.get("model", ""), "built_at": manifest.get("built_at", ""), "snapshot": str(snapshot)}


def stored_passages(store: IndexStore, collection: str) -> list[SourceText]:
    """Every passage ``collection`` holds, as it was indexed (for the KV states of a pulled index)."""
    backing = store.resolve(collection)
    return [SourceText(text=str(r[3].get("text", "")), title=str(r[3].get("title", "")), source=str(r[3].get("source", "")))
            for batch in store.points(backing) for r in batch]
