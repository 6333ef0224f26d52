"""EdgeRetriever: top-k passages from the Qdrant index, dense or hybrid (dense + BM25, RRF)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from haystack import Document, component

from edge import sparse
from edge.errors import EmbedderError
from edge.store import CollectionInfo, IndexStore


@component
@dataclass(eq=False)
class EdgeRetriever:
    """Retrieves passages for a question from a collection built by ``ecqa index build``.

    :param store: the document store (embedded folder or server).
    :param collection: collection (alias) name.
    :param top_k: passages returned.
    :param hybrid: fuse BM25 with dense retrieval when the collection has sparse vectors.
    :param fusion: "convex" or "rrf" (see :mod:`edge.fusion`).
    :param dense_weight: alpha of the convex fusion / dense weight of RRF.
    """

    store: IndexStore
    collection: str
    top_k: int = 3
    hybrid: bool = True
    fusion: str = "convex"
    dense_weight: float = 0.6
    _checked_at: float = field(default=0.0, init=False, repr=False)

    @cached_property
    def info(self) -> CollectionInfo:
        """The collection's manifest, read on first use (see :meth:`refresh_if_stale`)."""
        self._checked_at = time.monotonic()
        return self.store.open().info(self.collection)

    def warm_up(self) -> None:
        _ = self.info

    def refresh_if_stale(self, every_s: float = 2.0) -> None:
        """Re-read the collection's manifest at most every ``every_s`` seconds, so a rebuild
        (an alias switch, possibly by another process on a server) is noticed."""
        if "info" in vars(self) and time.monotonic() - self._checked_at < every_s:
            return
        vars(self).pop("info", None)
        self.warm_up()

    @component.output_types(documents=list[Document], timings=dict[str, float])
    def run(self, question: str, embedding: list[float], top_k: int | None = None) -> dict[str, Any]:
        """:raises EmbedderError: the question embedding does not fit the collection."""
        t0 = time.perf_counter()
        info = self.info
        if len(embedding) != info.dimension:
            raise EmbedderError(
                f"collection {self.collection!r} was built with {info.model or 'another model'} "
                f"({info.dimension}-d vectors) but the embedder gives {len(embedding)}-d — use the same "
                "ECQA_EMBEDDER_MODEL, or rebuild with `ecqa index build … --recreate`"
            )
        query_sparse = sparse.query_vector(question) if (self.hybrid and info.hybrid) else None
        hits = self.store.search(
            self.collection, embedding, query_sparse, top_k or self.top_k, self.fusion, self.dense_weight
        )
        docs = [
            Document(
                id=h.id,
                content=str(h.payload.get("text", "")),
                score=h.score,
                meta={
                    **{k: v for k, v in h.payload.items() if k != "text"},
                    "dense_score": h.dense_score,
                    "sparse_score": h.sparse_score,
                },
            )
            for h in hits
        ]
        return {"documents": docs, "timings": {"retrieve": (time.perf_counter() - t0) * 1000.0}}
