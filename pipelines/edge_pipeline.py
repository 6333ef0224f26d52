"""The edge answer path: embed -> retrieve -> prompt -> SLM -> parse.

The components are composed into a Haystack :class:`~haystack.Pipeline` (``pipeline()``) for
inspection and serialization, but :meth:`EdgeQA.answer` calls them directly: ``Pipeline.run``
deep-copies its inputs and costs ~40 ms per question here with a 384-float embedding
(measured by `make bench-edge`, "pipeline overhead"), more than retrieval itself.
"""

from __future__ import annotations

import time
from typing import Any

from haystack import Pipeline

from edge.answer_parser import AnswerParser
from edge.prompt_builder import EdgePromptBuilder
from edge.question_embedder import QuestionEmbedder
from edge.retriever import EdgeRetriever
from edge.slm_generator import SlmGenerator
from edge.store import DocumentStore
from pipelines.errors import PipelineError
from pipelines.settings import Settings
from pipelines.types import AskResult

MAX_QUESTION_CHARS = 1000


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

    def warm_up(self) -> EdgeQA:
        self.retriever.warm_up()  # first: a missing collection fails before models load
        self.embedder.warm_up()
        self.generator.warm_up()
        return self

    def answer(self, question: str, top_k: int | None = None) -> AskResult:
        """Answer one question on the edge.

        :raises PipelineError: empty or oversized question.
        :raises EdgeError: missing collection, embedder mismatch, prompt over the context window.
        """
        q = check_question(question)
        self.warm_up()
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        emb = self.embedder.run(question=q)
        ret = self.retriever.run(question=q, embedding=emb["embedding"], top_k=top_k)
        docs = ret["documents"]
        prompt = self.prompt_builder.run(question=q, documents=docs)
        gen = self.generator.run(messages=prompt["messages"])
        parsed = self.parser.run(
            reply=gen["reply"], documents=docs, token_logprobs=gen["token_logprobs"], question=q
        )
        for part in (emb, ret, prompt, gen, parsed):
            timings.update(part["timings"])
        timings["total"] = (time.perf_counter() - t0) * 1000.0
        usage = dict(gen["usage"])
        return AskResult(
            question=q,
            answer=parsed["answer"],
            tier="edge",
            confidence=parsed["confidence"],
            passages=parsed["passages"],
            timings_ms=timings,
            usage=usage,
            collection=self.settings.collection,
            models={"embedder": self.embedder.embedder.name, "slm": self.generator.model_name},
        )

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
