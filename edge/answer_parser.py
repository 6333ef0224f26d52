"""AnswerParser: the SLM reply -> answer ('' = no answer), confidence, passages with answer spans."""

from __future__ import annotations

import math
import re
import time
from typing import Any

from haystack import Document, component

from edge.text import extract_answer_span, find_span

# Replies that mean "the passages do not say" (checked on the lower-cased reply).
_NO_ANSWER = re.compile(
    r"^(unanswerable|no answer|none|n/?a|unknown|i (do not|don't) know|not (mentioned|stated|given|provided|specified))\b"
    r"|\b(unanswerable|cannot be answered|can't be answered|does not (say|mention|contain|provide)|"
    r"is not (mentioned|stated|provided|given)|no information)\b"
)
# A reply that is not a span of any passage is less likely right (SQuAD answers are spans).
_NOT_A_SPAN_FACTOR = 0.5


def clean_reply(reply: str) -> str:
    """First line of the reply without wrapping quotes, 'Answer:' prefixes or a final period."""
    text = reply.strip().splitlines()[0].strip() if reply.strip() else ""
    text = re.sub(r"^(answer|a)\s*:\s*", "", text, flags=re.IGNORECASE)
    text = text.strip().strip("\"'`").strip()
    if text.endswith(".") and not re.search(r"\b[A-Z]\.$|\d\.$", text):
        text = text[:-1].rstrip()
    return text


def is_no_answer(text: str) -> bool:
    return not text or bool(_NO_ANSWER.search(text.lower()))


@component
class AnswerParser:
    """Maps a model reply to the answer contract and locates the answer inside the passages."""

    @component.output_types(
        answer=str, confidence=float, passages=list[dict[str, Any]], timings=dict[str, float]
    )
    def run(
        self,
        reply: str,
        documents: list[Document],
        token_logprobs: list[float] | None = None,
        question: str = "",
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        text = clean_reply(reply)
        answer = "" if is_no_answer(text) else text
        texts = [doc.content or "" for doc in documents]
        if answer:
            # A sentence-style reply ("The capital of X is Miret"), or a span that echoes the
            # question: keep the passage span that carries what the question lacks.
            answer = extract_answer_span(answer, question, texts) or answer
        passages: list[dict[str, Any]] = []
        found = False
        for doc, content in zip(documents, texts):
            span = find_span(answer, content) if answer else None
            found = found or span is not None
            passages.append(
                {
                    "id": doc.id,
                    "title": doc.meta.get("title", ""),
                    "text": content,
                    "score": round(float(doc.score or 0.0), 6),
                    "source": doc.meta.get("source", ""),
                    "answer_span": list(span) if span else None,
                }
            )
        # Heuristic until the cascade calibrates one: the reply's geometric-mean token
        # probability, discounted when an answer is not a span of any passage.
        lps = token_logprobs or []
        confidence = math.exp(sum(lps) / len(lps)) if lps else 0.0
        if answer and not found:
            confidence *= _NOT_A_SPAN_FACTOR
        return {
            "answer": answer,
            "confidence": round(min(max(confidence, 0.0), 1.0), 4),
            "passages": passages,
            "timings": {"parse": (time.perf_counter() - t0) * 1000.0},
        }
