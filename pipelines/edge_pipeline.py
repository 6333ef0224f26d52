"""The edge answer path: embed -> retrieve -> prompt -> SLM -> parse.

The components are composed into a Haystack :class:`~haystack.Pipeline` (``pipeline()``) to show
and check how they connect; it is not serialized (``to_dict`` cannot carry the retriever's open
document store, so there is no such claim to keep). The hot path calls them directly: the cascade needs the
intermediate results (the embedding for the answer cache, the passages before the SLM runs,
the generator's logprobs for the features), and ``Pipeline.run`` adds 3.6 ms p50 per question
for embed + retrieve alone (`make bench-edge`, "pipeline overhead").
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from haystack import Document, Pipeline

from edge.answer_parser import AnswerParser
from edge.errors import ModelError
from edge.prompt_builder import EdgePromptBuilder
from edge.question_embedder import QuestionEmbedder
from edge.reader import EdgeAnswer, EdgeReader
from edge.retriever import EdgeRetriever
from edge.slm_generator import SlmGenerator
from edge.store import IndexStore
from pipelines.calibration import read_plan
from pipelines.errors import PipelineError
from pipelines.settings import Settings
from pipelines.types import AskResult
from reading.prompts import MAX_QUESTION_CHARS, Passage


@dataclass(frozen=True)
class Retrieved:
    """The question's embedding and its retrieved passages."""

    embedding: list[float]
    documents: list[Document]
    timings: dict[str, float]

    @property
    def ids(self) -> list[str]:
        return [str(d.id) for d in self.documents]

    @property
    def passages(self) -> list[Passage]:
        """The retrieved documents as both tiers' readers take them (uncut: each reader cuts its own)."""
        return [Passage.from_document(d) for d in self.documents]


# An unpaired UTF-16 surrogate is no character: argv and stdin turn bytes that are not UTF-8 into
# U+DC80..U+DCFF ("surrogateescape"), and JSON may escape one ("\ud800"). Tokenizers, JSON and the
# terminal cannot take them.
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_question(question: str) -> str:
    """The stripped question, or a clear error for an empty or oversized one.

    Bytes that were not UTF-8 (or lone surrogates) become U+FFFD, the replacement character: the rest
    of the question is still answered.
    """
    if not isinstance(question, str):
        raise PipelineError(f"the question is a {type(question).__name__}, not text — type a question")
    q = _SURROGATE.sub("\ufffd", question).strip()
    if not q:
        raise PipelineError("the question is empty — type a question")
    if len(q) > MAX_QUESTION_CHARS:
        raise PipelineError(f"the question has {len(q)} characters, over {MAX_QUESTION_CHARS} — shorten it")
    return q


def edge_reader_for(settings: Settings, n_threads: int | None = None) -> EdgeReader:
    """The edge model's reader as the settings describe it (not loaded yet): the in-process edge, each
    slot of an edge worker and the KV-state build all read through one. It reads as the calibration's
    models were fitted (its read plan).

    :raises ConfigError: the calibration file is missing or malformed.

    :param n_threads: threads of the model (default: ``settings.slm_threads``).
    """
    generator = SlmGenerator(
        model_path=settings.slm_model_path,
        n_ctx=settings.slm_n_ctx,
        n_threads=settings.slm_threads if n_threads is None else n_threads,
        max_tokens=settings.slm_max_tokens,
        reading=settings.slm_reading,
        kv_dir=settings.effective_kv_dir() if settings.kv_store else None,
        kv_budget_bytes=settings.kv_budget_mb * 1024 * 1024,
        kv_type=settings.kv_type,
        plan=read_plan(settings.calibration_path),
        speculative=settings.speculative,
    )
    return EdgeReader(EdgePromptBuilder(passage_chars=settings.passage_chars), generator, AnswerParser())


class EdgeQA:
    """Edge question answering over one collection, models loaded once.

    :param settings: the entry point's settings.
    :param store: an open document store (the caller owns it).
    """

    def __init__(self, settings: Settings, store: IndexStore) -> None:
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
        # The edge model's reading (prompt, SLM, parse, features), as an edge worker does it too.
        self.reader = edge_reader_for(settings)

    @property
    def prompt_builder(self) -> EdgePromptBuilder:
        return self.reader.prompt_builder

    @property
    def generator(self) -> SlmGenerator:
        return self.reader.generator

    @property
    def parser(self) -> AnswerParser:
        return self.reader.parser

    def for_collection(self, collection: str) -> EdgeQA:
        """The same models (loaded once, not again) over another collection of the same store."""
        other = EdgeQA(self.settings.model_copy(update={"collection": collection}), self.store)
        other.embedder, other.reader = self.embedder, self.reader
        return other

    def warm_up_retrieval(self) -> EdgeQA:
        """Load what every route needs: the collection's manifest, then the embedder. Idempotent.

        :raises EdgeError: missing collection (before any model loads), embedder not loadable.
        """
        self.retriever.warm_up()  # first: a missing collection fails before models load
        self.embedder.warm_up()
        return self

    def warm_up_generator(self) -> EdgeQA:
        """Load the edge SLM, which only routes that answer on the edge need. Idempotent.

        :raises ModelError: the GGUF file is missing or does not load.
        """
        self.generator.warm_up()
        return self

    def warm_up(self) -> EdgeQA:
        """Load everything (the collection's manifest, the embedder, the SLM)."""
        return self.warm_up_retrieval().warm_up_generator()

    def retrieve(self, question: str, top_k: int | None = None) -> Retrieved:
        """Embed and retrieve (the part every route needs). Loads no SLM: the cloud policy never uses it.

        :raises EdgeError: missing collection or embedder mismatch.
        """
        self.warm_up_retrieval()
        emb = self.embedder.run(question=question)
        ret = self.retriever.run(question=question, embedding=emb["embedding"], top_k=top_k)
        return Retrieved(emb["embedding"], ret["documents"], {**emb["timings"], **ret["timings"]})

    def generate(self, question: str, retrieved: Retrieved) -> EdgeAnswer:
        """The SLM's answer from retrieved passages, with its confidence features.

        :raises ModelError: the prompt does not fit the context window.
        """
        return self.reader.read(question, retrieved.documents)

    def prepare_kv(self, documents: list[Document]) -> list[str]:
        """Store the edge model's prefix state of each document's passage ("hit": already stored,
        "miss": computed now), as the edge will read it.

        :raises ModelError: no store configured, or the edge model does not load.
        """
        passages = self.prompt_builder.run(documents=documents)["passages"]
        return self.generator.prepare(passages)

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
        """The models' names; no "slm" when no edge model is installed (the cloud policy never needs one)."""
        names = {"embedder": self.embedder.embedder.name}
        try:
            names["slm"] = self.generator.model_name
        except ModelError:
            pass
        return names

    def pipeline(self) -> Pipeline:
        """The same stages as a Haystack Pipeline (inputs: ``embedder.question``,
        ``retriever.question``, ``generator.question``, ``parser.question``)."""
        pipe = Pipeline()
        pipe.add_component("embedder", self.embedder)
        pipe.add_component("retriever", self.retriever)
        pipe.add_component("prompt_builder", self.prompt_builder)
        pipe.add_component("generator", self.generator)
        pipe.add_component("parser", self.parser)
        pipe.connect("embedder.embedding", "retriever.embedding")
        pipe.connect("retriever.documents", "prompt_builder.documents")
        pipe.connect("retriever.documents", "parser.documents")
        pipe.connect("prompt_builder.passages", "generator.passages")
        pipe.connect("generator.reply", "parser.reply")
        pipe.connect("generator.answer", "parser.answer")
        pipe.connect("generator.token_logprobs", "parser.token_logprobs")
        return pipe

    def run_pipeline(self, question: str) -> dict[str, Any]:
        q = check_question(question)
        return self.pipeline().run(
            {
                "embedder": {"question": q},
                "retriever": {"question": q},
                "generator": {"question": q},
                "parser": {"question": q},
            }
        )
