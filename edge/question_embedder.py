"""QuestionEmbedder: the question's dense embedding, for the retriever."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from haystack import component

from edge.embedder import SentenceEmbedder


@component
@dataclass(eq=False)
class QuestionEmbedder:
    """Embeds a question with the same sentence-transformers model that built the index.

    :param model: sentence-transformers model directory ('' = bundled all-MiniLM-L6-v2).
    """

    model: str = ""

    @cached_property
    def embedder(self) -> SentenceEmbedder:
        """The loaded model (loaded on first use, once)."""
        return SentenceEmbedder(self.model).load()

    @property
    def loaded(self) -> bool:
        return "embedder" in vars(self)

    def warm_up(self) -> None:
        _ = self.embedder

    @component.output_types(embedding=list[float], timings=dict[str, float])
    def run(self, question: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        vec = self.embedder.encode([question], batch_size=1)[0]
        return {"embedding": vec, "timings": {"embed": (time.perf_counter() - t0) * 1000.0}}
