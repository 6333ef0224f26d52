"""QuestionEmbedder: the question's dense embedding, for the retriever."""

from __future__ import annotations

import time
from typing import Any

from haystack import component

from edge.embedder import SentenceEmbedder


@component
class QuestionEmbedder:
    """Embeds a question with the same sentence-transformers model that built the index.

    :param model: sentence-transformers model directory ('' = bundled all-MiniLM-L6-v2).
    """

    def __init__(self, model: str = "") -> None:
        self.model = model
        self._embedder: SentenceEmbedder | None = None

    def warm_up(self) -> None:
        if self._embedder is None:
            self._embedder = SentenceEmbedder(self.model).load()

    @property
    def embedder(self) -> SentenceEmbedder:
        self.warm_up()
        assert self._embedder is not None
        return self._embedder

    @component.output_types(embedding=list[float], timings=dict[str, float])
    def run(self, question: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        vec = self.embedder.encode([question], batch_size=1)[0]
        return {"embedding": vec, "timings": {"embed": (time.perf_counter() - t0) * 1000.0}}
