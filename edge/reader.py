"""EdgeReader: the edge model reads retrieved passages — prompt, SLM, parse, features — in one call.

The in-process edge (:class:`pipelines.edge_pipeline.EdgeQA`) and an edge worker process
(:mod:`edge.worker`) read through this one class, so a question read by a worker is answered
exactly as one read in the UI's own process.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from haystack import Document

from edge.answer_parser import AnswerParser
from edge.features import edge_features, passage_scores
from edge.prompt_builder import EdgePromptBuilder
from edge.slm_generator import SlmGenerator
from reading.passages import PassageReading
from reading.signals import PassageScore


@dataclass(frozen=True)
class EdgeAnswer:
    """The SLM's parsed answer with the features the routing models read (JSON-able: a worker sends it)."""

    answer: str
    confidence: float
    passages: list[dict[str, Any]]
    features: dict[str, float]
    timings: dict[str, float]
    usage: dict[str, int]
    reading: PassageReading
    scores: tuple[PassageScore, ...]  # the passages' retrieval scores, in the reading's order

    def to_json(self) -> dict[str, Any]:
        return {"answer": self.answer, "confidence": self.confidence, "passages": self.passages,
                "features": self.features, "timings": self.timings, "usage": self.usage,
                "reading": self.reading.to_json(), "scores": [asdict(s) for s in self.scores]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EdgeAnswer:
        """:raises ValueError, KeyError, TypeError, AttributeError: not the shape :meth:`to_json` writes."""
        passages = list(data["passages"])
        if not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in passages):
            raise ValueError("every passage must be an object with a text")
        confidence = float(data["confidence"])
        if not 0.0 <= confidence <= 1.0:
            raise ValueError("the confidence must lie in [0, 1]")
        return cls(str(data["answer"]), confidence, passages,
                   {str(k): float(v) for k, v in data["features"].items()},
                   {str(k): float(v) for k, v in data["timings"].items()},
                   {str(k): int(v) for k, v in data["usage"].items()},
                   PassageReading.from_json(data["reading"]),
                   tuple(PassageScore(float(s["fused"]), float(s["dense"]), float(s["sparse"])) for s in data["scores"]))


class EdgeReader:
    """Prompt builder, SLM generator and parser of one edge model.

    :param prompt_builder: cuts the documents to passages.
    :param generator: the edge model (loaded on first use).
    :param parser: maps the reply to the answer contract.
    """

    def __init__(self, prompt_builder: EdgePromptBuilder, generator: SlmGenerator, parser: AnswerParser) -> None:
        self.prompt_builder = prompt_builder
        self.generator = generator
        self.parser = parser

    def warm_up(self) -> EdgeReader:
        self.generator.warm_up()
        return self

    def read(self, question: str, documents: list[Document]) -> EdgeAnswer:
        """The SLM's answer from ``documents``, with its confidence features.

        :raises ModelError: the prompt does not fit the context window, or the model does not load.
        """
        prompt = self.prompt_builder.run(documents=documents)
        gen = self.generator.run(question=question, passages=prompt["passages"])
        parsed = self.parser.run(reply=gen["reply"], documents=documents, token_logprobs=gen["token_logprobs"],
                                 question=question, answer=gen["answer"])
        passages = [h.to_json() for h in parsed["hits"]]
        for i, passage in enumerate(passages):  # per-passage reading: where its prefix state came from
            if i < len(gen["kv"]):
                passage["kv"] = gen["kv"][i]
                passage["read"] = i == gen["chosen"]
        scores = passage_scores(question, documents)
        features = edge_features(question, scores, gen["reading"])
        timings = {**prompt["timings"], **gen["timings"], **parsed["timings"]}
        return EdgeAnswer(parsed["answer"], parsed["confidence"], passages, features, timings, gen["usage"],
                          gen["reading"], tuple(scores))


def documents_to_json(documents: list[Document]) -> list[dict[str, Any]]:
    """Documents as a worker request carries them: id, text, title, source and score (no embedding)."""
    return [{"id": str(d.id), "content": d.content or "", "score": float(d.score or 0.0),
             "meta": {k: v for k, v in d.meta.items() if isinstance(v, (str, int, float, bool))}} for d in documents]


def documents_from_json(items: Any) -> list[Document]:
    """The documents of a worker request.

    :raises ValueError: not a list of {id, content, meta, score} objects.
    """
    if not isinstance(items, list) or len(items) > 64:
        raise ValueError("documents must be a list of at most 64 objects")
    out = []
    for it in items:
        if not isinstance(it, dict) or not isinstance(it.get("content"), str) or not isinstance(it.get("id"), str):
            raise ValueError("each document needs a string 'id' and 'content'")
        meta = it.get("meta") or {}
        if not isinstance(meta, dict):
            raise ValueError("a document's 'meta' must be an object")
        score = it.get("score") or 0.0
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError("a document's 'score' must be a finite number")
        out.append(Document(id=it["id"], content=it["content"], meta=meta, score=float(score)))
    return out
