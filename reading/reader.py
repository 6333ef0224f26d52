"""The llama.cpp decode loop both tiers use: prompts by the model's own chat template, greedy
decoding with each token's logprob (and the top alternatives where asked), and the longest
common prefix of consecutive prompts kept in the KV cache.

Why a loop over ``Llama.eval`` and not ``create_completion``: token logprobs there need
``logits_all=True``, which keeps n_ctx x vocabulary floats (1.2 GiB for Qwen's 152k vocabulary at
n_ctx 2048); here only the last row is read (``_ctx.get_logits_ith(-1)``).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reading.errors import ReadingError
from reading.kv_store import PassageStateStore, state_key
from reading.llama_runtime import load_backends
from reading.models import model_sha256
from reading.prompts import (
    BASE_STOP,
    PROBE_TOP_LOGPROBS,
    Passage,
    answer_messages,
    base_answer_prompt,
    base_probe_prompt,
    one_line,
    p_yes,
    probe_messages,
)

logger = logging.getLogger(__name__)

_STOP_MARKERS = ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")
# llama.cpp's KV cache types the store may hold (ggml type ids); a quantized V cache needs flash attention.
KV_TYPES = {"f16": 1, "q8_0": 8}
READING_MODES = ("each", "joint")


class PromptTooLongError(ReadingError):
    """A prompt does not fit the model's context window."""


@dataclass(frozen=True)
class Generation:
    """One greedy generation."""

    text: str
    token_logprobs: tuple[float, ...]
    tokens: tuple[str, ...]
    top_logprobs: tuple[dict[str, float], ...]  # per generated token, when asked for
    prompt_tokens: int
    cached_prompt_tokens: int
    finish_reason: str  # "stop" | "length"
    prefill_ms: float
    decode_ms: float


@dataclass(frozen=True)
class Reading:
    """A model's reading of passages for a question: its reply and p(answerable)."""

    reply: str
    token_logprobs: tuple[float, ...]
    p_answerable: float
    prompt_tokens: int  # the answer prompt's length
    prefilled_tokens: int  # tokens actually evaluated for probe and answer (the rest came from the KV cache)
    cached_prompt_tokens: int  # of the probe prompt, reused from the previous question
    completion_tokens: int
    timings: dict[str, float] = field(default_factory=dict)
    # Per-passage reading: each passage's p(answerable), the one answered from, and where each
    # passage's prefix state came from ("hit": the store, "miss": prefilled, "live": already in the cache).
    passage_p_answerable: tuple[float, ...] = ()
    chosen: int = -1
    kv: tuple[str, ...] = ()


@dataclass(frozen=True)
class PassagePrompt:
    """One passage's prompts split where the question starts: the prefix (system + passage) is
    known before any question, so its KV state can be stored; the suffixes are the question with
    the probe's yes/no question or with the answer cue."""

    prefix: str
    probe_suffix: str
    answer_suffix: str


class LlamaReader:
    """A GGUF model read through llama-cpp-python, one request at a time (thread-safe).

    :param model_path: a verified GGUF file.
    :param n_ctx: context window in tokens.
    :param n_threads: CPU threads, 0 = all cores.
    :param family: "chat" (render with the GGUF's chat template) or "base" (completion style);
        '' = chat when the GGUF has a template.
    """

    def __init__(self, model_path: str, n_ctx: int = 2048, n_threads: int = 0, family: str = "",
                 kv_type: str = "f16", model_sha256: str = "") -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.family = family
        self.kv_type = kv_type
        self._model_sha256 = model_sha256
        if family not in ("", "chat", "base"):
            raise ReadingError(f"unknown prompt family {family!r} — use 'chat' or 'base'")
        if kv_type not in KV_TYPES:
            raise ReadingError(f"unknown KV cache type {kv_type!r} — use one of {', '.join(KV_TYPES)}")
        self.template_sha256 = ""
        self._llm: Any = None
        self._formatter: Any = None
        self._stop_ids: set[int] = set()
        self._lock = threading.RLock()

    @property
    def name(self) -> str:
        return Path(self.model_path).name

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def warm_up(self) -> None:
        """Load the model once.

        :raises ReadingError: llama.cpp cannot load the file.
        """
        with self._lock:
            if self._llm is not None:
                return
            load_backends()
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            threads = self.n_threads or os.cpu_count() or 1
            try:
                # n_threads_batch defaults to every core; with other processes on the cores,
                # spinning batch threads made an 11-token prefill take 3 s instead of 40 ms.
                kv = KV_TYPES[self.kv_type]
                llm = Llama(model_path=self.model_path, n_ctx=self.n_ctx, n_threads=threads,
                            n_threads_batch=threads, verbose=False, type_k=kv, type_v=kv,
                            flash_attn=self.kv_type != "f16")
            except (ValueError, RuntimeError) as exc:
                raise ReadingError(f"llama.cpp cannot load {self.model_path}: {exc} — check that it is a complete "
                                   "GGUF model (`ecqa models verify`)") from None
            template = llm.metadata.get("tokenizer.chat_template")
            if self.family == "chat" and not template:
                raise ReadingError(f"{self.name} has no chat template — use it with the 'base' prompt family")
            if not self.family:
                self.family = "chat" if template else "base"
            if self.family == "chat":
                bos = llm.detokenize([llm.token_bos()], special=True).decode(errors="ignore")
                eos = llm.detokenize([llm.token_eos()], special=True).decode(errors="ignore")
                self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos,
                                                      add_generation_prompt=True)
            stops = {llm.token_eos()}
            for marker in _STOP_MARKERS:
                ids = llm.tokenize(marker.encode(), add_bos=False, special=True)
                if len(ids) == 1:
                    stops.add(ids[0])
            self._stop_ids = stops
            self.template_sha256 = hashlib.sha256(f"{self.family}\n{template or ''}".encode()).hexdigest()
            self._llm = llm
            logger.info("loaded %s (%s prompts, %d threads, n_ctx %d)", self.model_path, self.family, threads, self.n_ctx)

    # --- prompts ----------------------------------------------------------------------------
    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """Chat messages as the model's own template renders them, generation prompt included."""
        self.warm_up()
        if self._formatter is None:
            raise ReadingError(f"{self.name} has no chat template — send a completion prompt instead")
        return str(self._formatter(messages=list(messages)).prompt)

    def tokenize(self, prompt: str) -> list[int]:
        """Tokens of a rendered prompt (special tokens parsed; BOS added for completion prompts,
        where a chat template puts its own)."""
        self.warm_up()
        return list(self._llm.tokenize(prompt.encode("utf-8", errors="replace"), add_bos=self._formatter is None,
                                       special=True))

    # --- decoding ---------------------------------------------------------------------------
    def _last_logprobs(self) -> np.ndarray:
        llm = self._llm
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).astype(np.float64)
        top = logits.max()
        return logits - (top + np.log(np.exp(logits - top).sum()))

    def _piece(self, token: int) -> str:
        return str(self._llm.detokenize([token]).decode("utf-8", errors="ignore"))

    def generate(self, prompt: str, max_tokens: int, stop: Sequence[str] = (), top_logprobs: int = 0) -> Generation:
        """Greedy completion of a rendered prompt.

        :raises PromptTooLongError: the prompt and ``max_tokens`` do not fit the context window.
        """
        tokens = self.tokenize(prompt)
        with self._lock:
            return self._generate(tokens, max_tokens, tuple(stop), top_logprobs)

    def _generate(self, tokens: list[int], max_tokens: int, stop: tuple[str, ...], top_k: int) -> Generation:
        llm = self._llm
        if len(tokens) + max_tokens > self.n_ctx:
            # The wording is the one cloud.backend.context_error recognises (a 413, not a backend failure).
            raise PromptTooLongError(
                f"the prompt has {len(tokens)} tokens; with max_tokens {max_tokens} it exceeds the context window "
                f"{self.n_ctx} — send fewer or shorter passages"
            )
        t0 = time.perf_counter()
        cached = 0
        previous = llm.input_ids[: llm.n_tokens]
        limit = min(len(previous), len(tokens) - 1)  # evaluate at least one token for fresh logits
        while cached < limit and previous[cached] == tokens[cached]:
            cached += 1
        llm.n_tokens = cached
        llm.eval(tokens[cached:])
        t_prefill = time.perf_counter()
        out: list[int] = []
        logprobs: list[float] = []
        tops: list[dict[str, float]] = []
        text = ""
        finish = "length"
        for step in range(max_tokens):
            lp = self._last_logprobs()
            tok = int(lp.argmax())
            if top_k:
                tops.append(self._top(lp, top_k))
            if tok in self._stop_ids:
                finish = "stop"
                break
            before = len(text)
            out.append(tok)
            logprobs.append(float(lp[tok]))
            text = llm.detokenize(out).decode("utf-8", errors="ignore")
            hit = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
            if hit >= 0:
                text = text[:hit]
                if hit <= before:  # the token only completed the stop string: not part of the answer
                    out.pop()
                    logprobs.pop()
                finish = "stop"
                break
            if step + 1 < max_tokens:
                llm.eval([tok])
        t_end = time.perf_counter()
        return Generation(
            text=text,
            token_logprobs=tuple(logprobs),
            tokens=tuple(self._piece(t) for t in out),
            top_logprobs=tuple(tops),
            prompt_tokens=len(tokens),
            cached_prompt_tokens=cached,
            finish_reason=finish,
            prefill_ms=(t_prefill - t0) * 1000.0,
            decode_ms=(t_end - t_prefill) * 1000.0,
        )

    def measure_speed(self, prompt_tokens: int = 256, gen_tokens: int = 16) -> tuple[float, float]:
        """This model's prompt and generation speed here, in tokens per second: a fresh prefill of
        ``prompt_tokens`` tokens, then ``gen_tokens`` single-token decode steps (whatever it predicts).

        An edge worker measures itself with this at start-up and advertises the numbers, so a
        dispatcher weighs it by what it really does on the cores it was given.
        """
        self.warm_up()
        text = "The Normans gave their name to Normandy, a region in France, in the 10th and 11th centuries. "
        with self._lock:
            llm = self._llm
            tokens = list(llm.tokenize((text * (prompt_tokens // 8 + 1)).encode(), add_bos=True))[:prompt_tokens]
            llm.n_tokens = 0  # a fresh prefill: nothing reused from the cache
            t0 = time.perf_counter()
            llm.eval(tokens)
            t1 = time.perf_counter()
            for _ in range(gen_tokens):
                llm.eval([int(self._last_logprobs().argmax())])
            t2 = time.perf_counter()
            llm.n_tokens = 0
        return len(tokens) / max(t1 - t0, 1e-9), gen_tokens / max(t2 - t1, 1e-9)

    # --- reading ----------------------------------------------------------------------------
    def read(self, question: str, passages: Sequence[Passage], max_tokens: int) -> Reading:
        """Probe answerability, then answer, over one shared prefill of passages and question.

        :raises PromptTooLongError: the passages do not fit the context window.
        """
        self.warm_up()
        if self.family == "chat":
            probe_prompt = self.render(probe_messages(question, passages))
            answer_prompt = self.render(answer_messages(question, passages))
            stop: tuple[str, ...] = ()
        else:
            probe_prompt = base_probe_prompt(question, passages)
            answer_prompt = base_answer_prompt(question, passages)
            stop = BASE_STOP
        with self._lock:
            t0 = time.perf_counter()
            probe = self._generate(self.tokenize(probe_prompt), 1, (), PROBE_TOP_LOGPROBS)
            t1 = time.perf_counter()
            ans = self._generate(self.tokenize(answer_prompt), max_tokens, stop, 0)
        return Reading(
            reply=ans.text,
            token_logprobs=ans.token_logprobs,
            p_answerable=round(p_yes(probe.top_logprobs[0] if probe.top_logprobs else None), 6),
            prompt_tokens=ans.prompt_tokens,
            prefilled_tokens=(probe.prompt_tokens - probe.cached_prompt_tokens) + (ans.prompt_tokens - ans.cached_prompt_tokens),
            cached_prompt_tokens=probe.cached_prompt_tokens,
            completion_tokens=len(ans.token_logprobs),
            timings={"probe": (t1 - t0) * 1000.0, "prefill": probe.prefill_ms + ans.prefill_ms,
                     "decode": ans.decode_ms + probe.decode_ms},
        )

    # --- per-passage reading over stored prefix states -------------------------------------
    @property
    def model_sha256(self) -> str:
        """The model file's SHA-256 (part of every stored state's key)."""
        if not self._model_sha256:
            self._model_sha256 = model_sha256(self.model_path)
        return self._model_sha256

    def passage_prompt(self, question: str, passage: Passage) -> PassagePrompt:
        """One passage's probe and answer prompts, split where the question starts."""
        self.warm_up()
        if self.family == "chat":
            probe = self.render(probe_messages(question, [passage]))
            answer = self.render(answer_messages(question, [passage]))
        else:
            probe = base_probe_prompt(question, [passage])
            answer = base_answer_prompt(question, [passage])
        marker = "Question: " + one_line(question)
        cut_p, cut_a = probe.rfind(marker), answer.rfind(marker)
        if cut_p < 0 or cut_a < 0 or probe[:cut_p] != answer[:cut_a]:
            raise ReadingError(f"{self.name}: the prompt does not put the passage before the question — "
                               "read the passages jointly (ECQA_SLM_READING=joint)")
        return PassagePrompt(answer[:cut_a], probe[cut_p:], answer[cut_a:])

    def state_key(self, prefix: str) -> str:
        """The store key of a prefix's state: model, template, KV cache type and the prefix itself."""
        return state_key(self.model_sha256, self.template_sha256, self.kv_type, prefix)

    def _prefix_tokens(self, prefix: str) -> list[int]:
        return list(self._llm.tokenize(prefix.encode("utf-8", errors="replace"), add_bos=self._formatter is None,
                                       special=True))

    def _suffix_tokens(self, suffix: str) -> list[int]:
        return list(self._llm.tokenize(suffix.encode("utf-8", errors="replace"), add_bos=False, special=True))

    def _state_bytes(self) -> bytes:
        import llama_cpp

        ctx = self._llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
        return bytes(memoryview(buf)[:n])

    def _restore(self, tokens: list[int], data: bytes) -> bool:
        """Load a prefix state into sequence 0; False when llama.cpp refuses it (the cache is then empty)."""
        import llama_cpp

        llm = self._llm
        llm._ctx.kv_cache_seq_rm(0, 0, -1)
        llm.n_tokens = 0
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if not llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buf, len(data), 0):
            llm._ctx.kv_cache_seq_rm(0, 0, -1)
            return False
        llm.input_ids[: len(tokens)] = tokens
        llm.n_tokens = len(tokens)
        return True

    def _live_prefix(self, tokens: list[int]) -> int:
        """How many leading tokens of ``tokens`` the KV cache holds now."""
        llm = self._llm
        previous = llm.input_ids[: llm.n_tokens]
        n = 0
        limit = min(len(previous), len(tokens))
        while n < limit and previous[n] == tokens[n]:
            n += 1
        return n

    def _load_prefix(self, tokens: list[int], key: str, store: PassageStateStore | None,
                     memo: dict[str, bytes], t: dict[str, float]) -> str:
        """Put a prefix's KV state in the cache: "live" (already there), "hit" (this read's copy or the
        store), or "miss" (prefilled, then stored)."""
        llm = self._llm
        if self._live_prefix(tokens) == len(tokens):
            llm.n_tokens = len(tokens)
            return "live"
        t0 = time.perf_counter()
        source = "memo" if key in memo else ""
        data = memo.get(key)
        if data is None and store is not None:
            data = store.get(key)
            source = "store" if data is not None else ""
        if data is not None and self._restore(tokens, data):
            memo[key] = data  # the answer step restores it again without going back to the store or prefilling
            t["restore"] += (time.perf_counter() - t0) * 1000.0
            return "hit"
        if data is not None and source == "store" and store is not None:
            store.discard(key, "llama.cpp refused it")  # recomputed and stored again below
        t1 = time.perf_counter()
        keep = self._live_prefix(tokens[:-1])
        llm.n_tokens = keep
        llm.eval(tokens[keep:])
        t["prefill"] += (time.perf_counter() - t1) * 1000.0
        t["prefilled"] += len(tokens) - keep
        t2 = time.perf_counter()
        state = self._state_bytes()
        memo[key] = state
        if store is not None:
            store.put(key, state)
        t["store"] += (time.perf_counter() - t2) * 1000.0
        return "miss"

    def prepare(self, passages: Sequence[Passage], store: PassageStateStore) -> list[str]:
        """Compute and store the prefix states of passages (for ``ecqa index build --kv``):
        "hit" for a state already stored, "miss" for one computed now."""
        self.warm_up()
        out = []
        with self._lock:
            for p in passages:
                prefix = self.passage_prompt("?", p).prefix
                key = self.state_key(prefix)
                if store.path(key).exists():
                    out.append("hit")
                    continue
                t = {"restore": 0.0, "prefill": 0.0, "prefilled": 0.0, "store": 0.0}
                out.append(self._load_prefix(self._prefix_tokens(prefix), key, store, {}, t))
        return out

    def read_each(self, question: str, passages: Sequence[Passage], max_tokens: int,
                  store: PassageStateStore | None = None) -> Reading:
        """Read each passage on its own: restore its [system + passage] state (or prefill it), prefill
        only the question with the yes/no probe, and answer from the passage with the highest p(yes).

        Attention stays exact (no stitching of chunk caches); only the point where the prefill is split
        differs from a full prefill of that passage's prompt (same answer on 94.5% of `make bench-kv`'s
        questions: the last bits of the sums differ, and greedy decoding flips on near-ties).

        :raises PromptTooLongError: a passage's prompt does not fit the context window.
        """
        self.warm_up()
        if not passages:
            return self.read(question, passages, max_tokens)
        prompts = [self.passage_prompt(question, p) for p in passages]
        stop = () if self.family == "chat" else BASE_STOP
        t: dict[str, float] = {"restore": 0.0, "prefill": 0.0, "prefilled": 0.0, "store": 0.0}
        memo: dict[str, bytes] = {}
        scores = [0.0] * len(prompts)
        kv = [""] * len(prompts)
        with self._lock:
            llm = self._llm
            t0 = time.perf_counter()
            prefixes = [self._prefix_tokens(pp.prefix) for pp in prompts]
            keys = [self.state_key(pp.prefix) for pp in prompts]
            # The top-ranked passage last: when it is also the best, its cache already holds the
            # question, and the answer prefills only its cue.
            for i in reversed(range(len(prompts))):
                toks = prefixes[i]
                probe = self._suffix_tokens(prompts[i].probe_suffix)
                if len(toks) + len(probe) + max_tokens > self.n_ctx:
                    raise PromptTooLongError(
                        f"a passage's prompt has {len(toks) + len(probe)} tokens; with max_tokens {max_tokens} it "
                        f"exceeds the context window {self.n_ctx} — send fewer or shorter passages")
                kv[i] = self._load_prefix(toks, keys[i], store, memo, t)
                t1 = time.perf_counter()
                llm.n_tokens = len(toks)
                llm.eval(probe)
                t["prefill"] += (time.perf_counter() - t1) * 1000.0
                t["prefilled"] += len(probe)
                top = self._top(self._last_logprobs(), PROBE_TOP_LOGPROBS)
                scores[i] = round(p_yes(top), 6)
            t_probe = time.perf_counter()
            best = max(range(len(scores)), key=lambda i: (scores[i], -i))
            self._load_prefix(prefixes[best], keys[best], None, memo, t)
            answer_tokens = prefixes[best] + self._suffix_tokens(prompts[best].answer_suffix)
            ans = self._generate(answer_tokens, max_tokens, stop, 0)
        t["prefilled"] += ans.prompt_tokens - ans.cached_prompt_tokens
        t["prefill"] += ans.prefill_ms
        return Reading(
            reply=ans.text,
            token_logprobs=ans.token_logprobs,
            p_answerable=max(scores),
            prompt_tokens=sum(len(x) for x in prefixes) + ans.prompt_tokens - len(prefixes[best]),
            prefilled_tokens=int(t["prefilled"]),
            cached_prompt_tokens=sum(len(x) for x, k in zip(prefixes, kv, strict=True) if k != "miss"),
            completion_tokens=len(ans.token_logprobs),
            timings={"probe": (t_probe - t0) * 1000.0, "restore": t["restore"], "prefill": t["prefill"],
                     "kv_store": t["store"], "decode": ans.decode_ms},
            passage_p_answerable=tuple(scores),
            chosen=best,
            kv=tuple(kv),
        )

    def _top(self, lp: np.ndarray, k: int) -> dict[str, float]:
        best = np.argpartition(-lp, k)[:k]
        top: dict[str, float] = {}
        for tok in best[np.argsort(-lp[best])]:
            piece = self._piece(int(tok))
            top[piece] = float(np.logaddexp(top[piece], lp[tok])) if piece in top else float(lp[tok])
        return top
