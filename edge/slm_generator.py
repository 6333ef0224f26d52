"""SlmGenerator: the edge model reads the passages — each on its own: p(answerable), an answer (of every passage,
or of the best one: the read plan), its check."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from haystack import component

from edge.errors import ModelError
from edge.errors import PromptTooLongError as EdgePromptTooLong
from reading.errors import ReadingError
from reading.kv_store import PassageStateStore
from reading.model_manifest import DEFAULT_EDGE_MODEL
from reading.models import resolve_gguf, spec_for_path
from reading.passages import FULL, PassageReading, ReadPlan
from reading.prompts import Passage
from reading.reader import LlamaReader, PromptTooLongError

logger = logging.getLogger(__name__)


@component
@dataclass(eq=False)
class SlmGenerator:
    """Reads passages with the edge's quantized model through llama.cpp (:class:`reading.reader.LlamaReader`).

    The model reads each passage on its own (:mod:`reading.passages`): a yes/no probe and an answer
    on the passage's stored prefix state, then a check of the answer it chose; its chat template
    renders the prompts (a base model: completion style).

    :param model_path: a manifest model name or a GGUF file; '' = the default edge model.
    :param n_ctx: context window in tokens.
    :param n_threads: CPU threads, 0 = all cores.
    :param max_tokens: most tokens generated.
    :param reading: "each" (every passage on its own, its prefix state restored from ``kv_dir``) or
        "joint" (all passages in one prompt).
    :param kv_dir: the passage KV store's folder; None = no store (prefixes are prefilled).
    :param kv_budget_bytes: the store's byte budget (LRU).
    :param kv_type: the KV cache type, "f16" or "q8_0".
    :param plan: how much of the per-passage reading is done (the calibration's: see
        :func:`pipelines.calibration.read_plan`).
    :param speculative: prompt-lookup speculative decoding (:class:`reading.reader.LlamaReader`).
    """

    model_path: str = ""
    n_ctx: int = 2048
    n_threads: int = 0
    max_tokens: int = 24
    reading: str = "each"
    kv_dir: str | Path | None = None
    kv_budget_bytes: int = 2 * 1024**3
    kv_type: str = "f16"
    plan: ReadPlan = FULL
    speculative: bool = False

    def __post_init__(self) -> None:
        self.store = (PassageStateStore(self.kv_dir, self.kv_budget_bytes)
                      if self.kv_dir is not None and self.reading == "each" else None)

    @cached_property
    def reader(self) -> LlamaReader:
        """The verified, loaded model (loaded on first use, once).

        :raises ModelError: not pulled, not verified, or not loadable.
        """
        try:
            path = resolve_gguf(self.model_path, DEFAULT_EDGE_MODEL)
            spec = spec_for_path(path)
            reader = LlamaReader(str(path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                                 family=spec.prompt_family if spec else "", kv_type=self.kv_type,
                                 model_sha256=spec.sha256 if spec else "", speculative=self.speculative)
            reader.warm_up()
        except ReadingError as exc:
            raise ModelError(f"edge model: {exc}") from None
        return reader

    @property
    def loaded(self) -> bool:
        return "reader" in vars(self)

    def warm_up(self) -> None:
        """Load the model now rather than at the first question (see :attr:`reader`)."""
        _ = self.reader

    @property
    def model_name(self) -> str:
        if self.loaded:
            return self.reader.name
        return Path(self.model_path).name if self.model_path else DEFAULT_EDGE_MODEL

    def prepare(self, passages: list[Passage]) -> list[str]:
        """Store the prefix states of passages ("hit": already stored, "miss": computed now).

        :raises ModelError: no store is configured.
        """
        if self.store is None:
            raise ModelError("no passage KV store: set ECQA_KV_STORE=true and ECQA_SLM_READING=each")
        return self.reader.prepare(passages, self.store)

    @component.output_types(reply=str, answer=str, token_logprobs=list[float], p_answerable=float, reading=PassageReading,
                            usage=dict[str, int], timings=dict[str, float], kv=list[str], chosen=int)
    def run(self, question: str, passages: list[Passage]) -> dict[str, Any]:
        """:raises PromptTooLongError: the passages do not fit the context window (edge.errors')."""
        reader = self.reader
        t0 = time.perf_counter()
        try:
            if self.reading == "each" and passages:
                r = reader.read_each(question, passages, self.max_tokens, self.store, self.plan)
            else:
                r = reader.read(question, passages, self.max_tokens)
        except PromptTooLongError as exc:
            raise EdgePromptTooLong(f"{exc} (edge: lower ECQA_TOP_K or ECQA_PASSAGE_CHARS, or raise ECQA_SLM_N_CTX)") from None
        except ReadingError as exc:
            raise ModelError(f"edge model: {exc}") from None
        usage = {"prompt_tokens": r.prompt_tokens, "prefilled_tokens": r.prefilled_tokens,
                 "cached_prompt_tokens": r.cached_prompt_tokens, "completion_tokens": r.completion_tokens}
        if r.kv:
            usage |= {"kv_hits": sum(k == "hit" for k in r.kv), "kv_misses": sum(k == "miss" for k in r.kv)}
        return {
            "reply": r.reply,
            "answer": r.passages.answer,
            "token_logprobs": list(r.token_logprobs),
            "p_answerable": r.p_answerable,
            "reading": r.passages,
            "usage": usage,
            # "generate" is the whole reading's wall time; the others split it (probe, answer and verify
            # steps all restore, prefill and decode).
            "timings": {**{k: v for k, v in r.timings.items() if k != "read"},
                        "generate": (time.perf_counter() - t0) * 1000.0},
            "kv": list(r.kv),
            "chosen": r.passages.chosen,
        }
