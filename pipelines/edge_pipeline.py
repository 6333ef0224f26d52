"""The edge answer path: embed -> retrieve -> prompt -> SLM -> parse.

The components are composed into a Haystack :class:`~haystack.Pipeline` (``pipeline()``) for
inspection and serialization, but the hot path calls them directly: the cascade needs the
intermediate results (the embedding for the answer cache, the passages before the SLM runs,
the generator's logprobs for the features), and ``Pipeline.run`` adds 3.6 ms p50 per question
for embed + retrieve alone (`make bench-edge`, "pipeline overhead").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from haystack import Document, Pipeline

from edge.answer_parser import AnswerParser
from edge.features import answer_features
from edge.prompt_builder import EdgePromptBuilder
from edge.question_embedder import QuestionEmbedder
from edge.retriever import EdgeRetriever
from edge.slm_generator import SlmGenerator
from edge.store import DocumentStore
from pipelines.errors import PipelineError
from pipelines.settings import Settings
from pipelines.types import AskResult

MAX_QUESTION_CHARS = 1000


@dataclass(frozen=True)
class Retrieved:
    """The question's embedding and its retrieved passages."""

    embedding: list[float]
    documents: list[Document]
    timings: dict[str, float]

    @property
    def ids(self) -> list[str]:
        return [str(d.id) for d in self.documents]


@dataclass(frozen=True)
class EdgeAnswer:
    """The SLM's parsed answer with the features the routing models read."""

    answer: str
    confidence: float
    passages: list[dict[str, Any]]
    features: dict[str, float]
    timings: dict[str, float]
    usage: dict[str, int]


def check_question(question: str) -> str:
    """The stripped question, or a clear error for an empty or oversized one."""
    q = question.strip()
    if not q:
        raise PipelineError("the question is empty — type a question")
    if len(q) > MAX_QUESTION_CHARS:
        raise PipelineError(f"the question has {len(q)} characters, over {MAX_QUESTION_CHARS} — shorten it")
    return q


class EdgeQA:
    """Edge question answering over one collection, models loaded once.

    :param settings: the entry point's settings.
    :param store: an open document store (the caller owns it).
    """

    def __init__(self, settings: Settings, store: DocumentStore) -> None:
        self.settings = settings
        self.store = store
        self.embedder = QuestionEmbedder(model=settings.embedder_model)
        self.retriever = EdgeRetriever(
            store,
            settings.collection,
            top_k=settings.top_k,
            hybrid=settings.hybrid,
            fusion=settings.fusion,
            dense_weight=settings.dense_weight,
        )
        self.prompt_builder = EdgePromptBuilder(passage_chars=settings.slm_passage_chars)
        self.generator = SlmGenerator(
            model_path=settings.slm_model_path,
            n_ctx=settings.slm_n_ctx,
            n_threads=settings.slm_threads,
            max_tokens=settings.slm_max_tokens,
        )
        self.parser = AnswerParser()

    def for_collection(self, collection: str) -> EdgeQA:
        """The same models (loaded once, not again) over another collection of the same store."""
        other = EdgeQA(self.settings.model_copy(update={"collection": collection}), self.store)
        other.embedder, other.generator = self.embedder, self.generator
        return other

    def warm_up(self) -> EdgeQA:
        self.retriever.warm_up()  # first: a missing collection fails before models load
        self.embedder.warm_up()
        self.generator.warm_up()
        return self

    def retrieve(self, question: str, top_k: int | None = None) -> Retrieved:
        """Embed and retrieve (the part every route needs).

        :raises EdgeError: missing collection or embedder mismatch.
        """
        self.warm_up()
        emb = self.embedder.run(question=question)
        ret = self.retriever.run(question=question, embedding=emb["embedding"], top_k=top_k)
        return Retrieved(emb["embedding"], ret["documents"], {**emb["timings"], **ret["timings"]})

    def generate(self, question: str, retrieved: Retrieved) -> EdgeAnswer:
        """The SLM's answer from retrieved passages, with its confidence features.

        :raises ModelError: the prompt does not fit the context window.
        """
        docs = retrieved.documents
        prompt = self.prompt_builder.run(question=question, documents=docs)
        gen = self.generator.run(messages=prompt["messages"])
        parsed = self.parser.run(
            reply=gen["reply"], documents=docs, token_logprobs=gen["token_logprobs"], question=question
        )
        features = answer_features(question, parsed["answer"], docs, gen["token_logprobs"], gen["no_answer_logprob"])
        timings = {**prompt["timings"], **gen["timings"], **parsed["timings"]}
        return EdgeAnswer(parsed["answer"], parsed["confidence"], parsed["passages"], features, timings, gen["usage"])

    def answer(self, question: str, top_k: int | None = None) -> AskResult:
        """Answer one question on the edge.

        :raises PipelineError: empty or oversized question.
        :raises EdgeError: missing collection, embedder mismatch, prompt over the context window.
        """
        q = check_question(question)
        t0 = time.perf_counter()
        retrieved = self.retrieve(q, top_k)
        edge = self.generate(q, retrieved)
        timings = {**retrieved.timings, **edge.timings, "total": (time.perf_counter() - t0) * 1000.0}
        return AskResult(
            question=q,
            answer=edge.answer,
            tier="edge",
            confidence=edge.confidence,
            passages=edge.passages,
            timings_ms=timings,
            usage=dict(edge.usage),
            collection=self.settings.collection,
            models=self.models(),
        )

    def models(self) -> dict[str, str]:
        return {"embedder": self.embedder.embedder.name, "slm": self.generator.model_name}

    def pipeline(self) -> Pipeline:
        """The same stages as a Haystack Pipeline (inputs: ``embedder.question``,
        ``retriever.question``, ``prompt_builder.question``, ``parser.question``)."""
        pipe = Pipeline()
        pipe.add_component("embedder", self.embedder)
        pipe.add_component("retriever", self.retriever)
        pipe.add_component("prompt_builder", self.prompt_builder)
        pipe.add_component("generator", self.generator)
        pipe.add_component("parser", self.parser)
        pipe.connect("embedder.embedding", "retriever.embedding")
        pipe.connect("retriever.documents", "prompt_builder.documents")
        pipe.connect("retriever.documents", "parser.documents")
        pipe.connect("prompt_builder.messages", "generator.messages")
        pipe.connect("generator.reply", "parser.reply")
        pipe.connect("generator.token_logprobs", "parser.token_logprobs")
        return pipe

    def run_pipeline(self, question: str) -> dict[str, Any]:
        q = check_question(question)
        return self.pipeline().run(
            {
                "embedder": {"question": q},
                "retriever": {"question": q},
                "prompt_builder": {"question": q},
                "parser": {"question": q},
            }
        )
