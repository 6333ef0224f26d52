"""Index building: passages -> embeddings (+ BM25 vectors) -> a fresh Qdrant collection -> alias switch.

Every build writes a new backing collection and switches the alias only when it is complete;
an error or Ctrl-C discards the unfinished version and the previous one keeps serving.
Point ids are content hashes, so the same input built twice adds nothing (and is not embedded
again). Without ``recreate`` a build adds to what the collection already holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge import sparse
from edge.embedder import SentenceEmbedder
from edge.store import IndexStore, document_id, utc_now
from indexing.errors import EmptyCorpusError, IndexingError
from indexing.loaders import SourceSummary, SourceText

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class BuildReport:
    """What a build did."""

    collection: str
    backing: str
    documents: int
    added: int
    already_indexed: int
    duplicates: int
    seconds: float
    embed_seconds: float
    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passages_per_s(self) -> float:
        return self.added / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "backing_collection": self.backing,
            "documents": self.documents,
            "added": self.added,
            "already_indexed": self.already_indexed,
            "duplicates": self.duplicates,
            "seconds": round(self.seconds, 3),
            "passages_per_s": round(self.passages_per_s, 1),
            "sources": self.sources,
        }


def embedded_text(title: str, text: str, with_title: bool) -> str:
    """What the dense model sees: 'title: text' helps it place a passage (BENCHMARKS.md)."""
    return f"{title}: {text}" if with_title and title else text


def build_index(
    store: IndexStore,
    embedder: SentenceEmbedder,
    passages: Sequence[SourceText],
    sources: Sequence[SourceSummary],
    collection: str,
    *,
    recreate: bool = False,
    batch_size: int = 64,
    embed_titles: bool = True,
    hybrid: bool = True,
    progress: Progress | None = None,
) -> BuildReport:
    """Index ``passages`` into ``collection``.

    :param progress: called with (passages embedded so far, passages to embed).
    :raises EmptyCorpusError: no passage to index.
    :raises IndexingError: the existing collection was built with another embedder.
    """
    t0 = time.perf_counter()
    if not passages:
        raise EmptyCorpusError("no passages to index — give SQuAD v2 .json, .jsonl, .txt or .md files with text")
    unique: dict[str, SourceText] = {}
    for p in passages:
        unique.setdefault(document_id(p.title, p.text), p)
    duplicates = len(passages) - len(unique)

    previous = store.info(collection) if store.exists(collection) else None
    if previous is not None and not recreate:
        if previous.dimension != embedder.dimension or (previous.model and previous.model != embedder.name):
            raise IndexingError(
                f"collection {collection!r} was built with {previous.model} ({previous.dimension}-d); "
                f"the embedder now is {embedder.name} ({embedder.dimension}-d) — add --recreate to rebuild it"
            )
        embed_titles, hybrid = previous.embed_titles, previous.hybrid
    incremental = previous is not None and not recreate
    known = store.existing_ids(previous.backing, list(unique)) if incremental and previous else set()
    todo = [(pid, p) for pid, p in unique.items() if pid not in known]
    source_dicts = [s.as_dict() | {"added_at": utc_now()} for s in sources]

    if incremental and previous and not todo:
        logger.info("collection %s already holds all %d passages", collection, len(unique))
        return BuildReport(collection, previous.backing, previous.documents, 0, len(known), duplicates,
                           time.perf_counter() - t0, 0.0, previous.sources)

    dimension = embedder.dimension
    backing = store.create_version(collection, dimension, hybrid)
    try:
        copied = store.copy_points(previous.backing, backing) if incremental and previous else 0
        avg_len = (
            previous.sparse_avg_len
            if incremental and previous and previous.sparse_avg_len
            else sparse.average_length([p.text for _, p in todo])
        )
        t_embed = time.perf_counter()
        done = 0
        if progress:
            progress(0, len(todo))
        # Longest texts first, as SentenceTransformer.encode orders one big call: each batch then
        # holds texts of similar length and pads little. Encoding batch by batch in input order
        # kept only 0.85x of raw encode speed; sorted, build_index keeps >= 0.9x (BENCHMARKS.md).
        # Writing on a separate thread made it worse (0.54x): encode already uses every core.
        todo.sort(key=lambda item: -len(embedded_text(item[1].title, item[1].text, embed_titles)))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            texts = [embedded_text(p.title, p.text, embed_titles) for _, p in batch]
            vectors = embedder.encode(texts, batch_size=batch_size)
            sparse_vecs = [sparse.document_vector(f"{p.title} {p.text}", avg_len) for _, p in batch] if hybrid else None
            payloads = [{"text": p.text, "title": p.title, "source": p.source, **p.meta} for _, p in batch]
            store.upsert(backing, [pid for pid, _ in batch], vectors, sparse_vecs, payloads)
            done += len(batch)
            if progress:
                progress(done, len(todo))
        embed_seconds = time.perf_counter() - t_embed
        all_sources = (previous.sources if incremental and previous else []) + source_dicts
        metadata = {
            "model": embedder.name,
            "dimension": dimension,
            "built_at": utc_now(),
            "sources": all_sources,
            "hybrid": hybrid,
            "embed_titles": embed_titles,
            "sparse_avg_len": avg_len,
        }
        store.publish(collection, backing, metadata)
    except BaseException:
        # Error or Ctrl-C: the alias still points at the previous version.
        store.discard(backing)
        raise
    return BuildReport(collection, backing, copied + len(todo), len(todo), len(known), duplicates,
                       time.perf_counter() - t0, embed_seconds, all_sources)
