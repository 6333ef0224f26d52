"""EdgePromptBuilder: the retrieved documents as the passages the edge model reads."""

from __future__ import annotations

import time
from typing import Any

from haystack import Document, component

from reading.prompts import PASSAGE_CHARS, Passage


@component
class EdgePromptBuilder:
    """Cuts each retrieved document to ``passage_chars`` and keeps its title.

    The prompt itself (system, passages, then the question, in the model's own chat template) is
    rendered by the reader: the passages come first so that consecutive questions about the same
    passages share a prompt prefix, which the KV cache reuses.

    :param passage_chars: characters of each passage kept (the `passage_chars` setting).
    """

    def __init__(self, passage_chars: int = PASSAGE_CHARS) -> None:
        self.passage_chars = passage_chars

    @component.output_types(passages=list[Passage], timings=dict[str, float])
    def run(self, documents: list[Document]) -> dict[str, Any]:
        t0 = time.perf_counter()
        passages = [Passage.from_document(d).cut(self.passage_chars) for d in documents]
        return {"passages": passages, "timings": {"prompt": (time.perf_counter() - t0) * 1000.0}}
