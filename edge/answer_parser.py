"""AnswerParser: the SLM reply -> answer ('' = no answer), confidence, and each passage with the answer's span."""

from __future__ import annotations

import time
from typing import Any

from haystack import Document, component

from reading.prompts import Passage, PassageHit
from reading.text import find_span, parse_answer, reply_confidence


@component
class AnswerParser:
    """Maps a model reply to the answer contract and locates the answer inside the passages."""

    @component.output_types(
        answer=str, confidence=float, hits=list[PassageHit], timings=dict[str, float]
    )
    def run(
        self,
        reply: str,
        documents: list[Document],
        token_logprobs: list[float] | None = None,
        question: str = "",
        answer: str | None = None,
    ) -> dict[str, Any]:
        """:param answer: the answer the reader already parsed from ``reply`` (against the passage it
            read); None = parse ``reply`` here against every passage."""
        t0 = time.perf_counter()
        texts = [doc.content or "" for doc in documents]
        answer = parse_answer(reply, question, texts) if answer is None else answer
        hits = [PassageHit(Passage.from_document(doc), find_span(answer, content) if answer else None)
                for doc, content in zip(documents, texts, strict=True)]
        found = any(h.span is not None for h in hits)
        return {
            "answer": answer,
            "confidence": reply_confidence(token_logprobs or [], found, bool(answer)),
            "hits": hits,
            "timings": {"parse": (time.perf_counter() - t0) * 1000.0},
        }
