"""EdgePromptBuilder: chat messages asking the SLM for a short extractive answer from passages."""

from __future__ import annotations

import time
from typing import Any

from haystack import Document, component

# Instruction measured best of the variants tried on SmolLM2-135M (BENCHMARKS.md, edge answer
# quality): few-shot examples made it abstain on most answerable questions.
DEFAULT_SYSTEM = (
    "Answer the question with a short phrase copied from the passages. "
    "If the passages do not contain the answer, reply: unanswerable"
)


@component
class EdgePromptBuilder:
    """Builds ``[system, user]`` messages: passages first, then the question.

    Passages come before the question so that consecutive questions about the same passages
    share a prompt prefix, which the generator's KV cache reuses.

    :param system_prompt: instruction for the model.
    :param passage_chars: characters of each passage kept (prefill time grows with prompt length).
    """

    def __init__(self, system_prompt: str = DEFAULT_SYSTEM, passage_chars: int = 900) -> None:
        self.system_prompt = system_prompt
        self.passage_chars = passage_chars

    @component.output_types(messages=list[dict[str, str]], timings=dict[str, float])
    def run(self, question: str, documents: list[Document]) -> dict[str, Any]:
        t0 = time.perf_counter()
        parts = []
        for i, doc in enumerate(documents, 1):
            text = (doc.content or "")[: self.passage_chars]
            title = doc.meta.get("title") or ""
            parts.append(f"Passage {i}" + (f" ({title})" if title else "") + f": {text}")
        user = "\n\n".join(parts) + f"\n\nQuestion: {question.strip()}"
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]
        return {"messages": messages, "timings": {"prompt": (time.perf_counter() - t0) * 1000.0}}
