"""The llama.cpp decode loop both tiers use: prompts by the model's own chat template, greedy
decoding with each token's logprob (and the top alternatives where asked), and the longest
common prefix of consecutive prompts kept in the KV cache.

Why a loop over ``Llama.eval`` and not ``create_completion``: token logprobs there need
``logits_all=True``, which keeps n_ctx x vocabulary floats (1.2 GiB for Qwen's 152k vocabulary at
n_ctx 2048); here only the last row is read (``_ctx.get_logits_ith(-1)``).
"""

from __future__ import annotations

import ctypes
import dataclasses
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

from reading import passages as passage_reading
from reading.errors import ReadingError
from reading.kv_store import MemoryStateStore, PassageStateStore, state_key
from reading.llama_runtime import load_backends
from reading.models import model_sha256
from reading.passages import FULL, NO_VERIFY, PassageReading, PassageSignals, ReadPlan, Step, rounded
from reading.prompts import (
    ANSWER,
    BASE_STOP,
    PROBE,
    PROBE_TOP_LOGPROBS,
    QUESTION_MARKER,
    Passage,
    Task,
    base_prompt,
    messages,
    no_answer_logit,
    one_line,
    p_yes,
)
from reading.text import find_span, parse_answer

logger = logging.getLogger(__name__)

_STOP_MARKERS = ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")
# llama.cpp's KV cache types the store may hold (ggml type ids); a quantized V cache needs flash attention.
KV_TYPES = {"f16": 1, "q8_0": 8}
READING_MODES = ("each", "joint")


class PromptTooLongError(ReadingError):
    """A prompt does not fit the model's context window (callers map it by its type and its numbers).

    :param prompt_tokens: the prompt's tokens.
    :param max_tokens: the tokens asked for the reply.
    :param n_ctx: the context window.
    """

    def __init__(self, prompt_tokens: int, max_tokens: int, n_ctx: int) -> None:
        super().__init__(f"the prompt has {prompt_tokens} tokens; with max_tokens {max_tokens} it exceeds the context "
                         f"window {n_ctx} — send fewer or shorter passages")
        self.prompt_tokens, self.max_tokens, self.n_ctx = prompt_tokens, max_tokens, n_ctx


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
    """A model's reading of passages for a question: every passage's signals and the chosen answer.

    :param passages: the per-passage reading (:mod:`reading.passages`); the joint reading is one entry.
    :param kv: per passage, where its prefix state came from ("hit": the store, "miss": prefilled,
        "live": already in the cache); empty for the joint reading.
    """

    passages: PassageReading
    prompt_tokens: int  # every step's prompt, as if nothing were cached
    prefilled_tokens: int  # tokens actually evaluated (the rest came from the KV cache or the store)
    cached_prompt_tokens: int  # passage prefix tokens restored or already live
    timings: dict[str, float] = field(default_factory=dict)
    kv: tuple[str, ...] = ()

    @property
    def reply(self) -> str:
        return self.passages.reply

    @property
    def token_logprobs(self) -> tuple[float, ...]:
        return self.passages.token_logprobs

    @property
    def p_answerable(self) -> float:
        return self.passages.p_answerable

    @property
    def completion_tokens(self) -> int:
        return self.passages.completion_tokens


@dataclass(frozen=True)
class PassagePrompt:
    """One passage's prompt for one task, split where the question starts: the prefix (system +
    passage) is known before any question, so its KV state can be stored; the suffix is the
    question and the task."""

    prefix: str
    suffix: str


class LlamaReader:
    """A GGUF model read through llama-cpp-python, one request at a time (thread-safe).

    :param model_path: a verified GGUF file.
    :param n_ctx: context window in tokens.
    :param n_threads: CPU threads, 0 = all cores.
    :param family: "chat" (render with the GGUF's chat template) or "base" (completion style);
        '' = chat when the GGUF has a template.
    :param speculative: draft the reply from the prompt itself (prompt-lookup decoding, :func:`draft`)
        and check the draft in one forward pass: answers copied from a passage take a few passes
        instead of one per token. The reply is the greedy one either way.
    """

    def __init__(self, model_path: str, n_ctx: int = 2048, n_threads: int = 0, family: str = "",
                 kv_type: str = "f16", model_sha256: str = "", speculative: bool = False) -> None:
        self.model_path = model_path
        self.speculative = speculative
        self.spec_stats = SpecStats()
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

    def _eval_rows(self, tokens: list[int]) -> list[np.ndarray]:
        """Evaluate ``tokens`` after the cache's in one forward pass and return the log-probabilities of the
        next token after each of them (a speculative draft's check)."""
        llm = self._llm
        n_past = llm.n_tokens
        llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
        llm._batch.set_batch(batch=tokens, n_past=n_past, logits_all=True)
        llm._ctx.decode(llm._batch)
        llm.input_ids[n_past: n_past + len(tokens)] = tokens
        llm.n_tokens = n_past + len(tokens)
        rows = []
        for i in range(len(tokens)):
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(i), shape=(llm.n_vocab(),)).astype(np.float64)
            top = logits.max()
            rows.append(logits - (top + np.log(np.exp(logits - top).sum())))
        return rows

    def _piece(self, token: int) -> str:
        return str(self._llm.detokenize([token]).decode("utf-8", errors="ignore"))

    def generate(self, prompt: str, max_tokens: int, stop: Sequence[str] = (), top_logprobs: int = 0,
                 prefix_store: PassageStateStore | MemoryStateStore | None = None) -> Generation:
        """Greedy completion of a rendered prompt.

        With a ``prefix_store``, a prompt laid out as the reading lays it out (a passage, then
        ``Question: …`` and the task) has the state of its part before the question restored from the
        store, or prefilled and stored: the embedded cloud backend's passage cache, the edge's reading
        of stored passage states over HTTP.

        :raises PromptTooLongError: the prompt and ``max_tokens`` do not fit the context window.
        """
        self.warm_up()
        cut = prompt.rfind(QUESTION_MARKER) if prefix_store is not None else -1
        with self._lock:
            if cut > 0:
                return self._prefixed(prompt[:cut], prompt[cut:], max_tokens, tuple(stop), top_logprobs, None,
                                      prefix_store, {}, _stage_times())[0]
            return self._generate(self.tokenize(prompt), max_tokens, tuple(stop), top_logprobs)

    def _generate(self, tokens: list[int], max_tokens: int, stop: tuple[str, ...], top_k: int,
                  top_steps: int | None = None, split: int = 0) -> Generation:
        """:param split: where the part shared by every task on a passage (its prefix and the question) ends: the
        tokens before it are evaluated apart from those after, so their state is the same, to the bit, whether
        they are prefilled now or are still live from the passage's previous task; the tokens after it are
        evaluated again even when live (the same prompt twice gives the same log-probabilities)."""
        llm = self._llm
        if len(tokens) + max_tokens > self.n_ctx:
            raise PromptTooLongError(len(tokens), max_tokens, self.n_ctx)
        t0 = time.perf_counter()
        cached = 0
        previous = llm.input_ids[: llm.n_tokens]
        limit = min(len(previous), len(tokens) - 1)  # evaluate at least one token for fresh logits
        while cached < limit and previous[cached] == tokens[cached]:
            cached += 1
        if split:
            cached = min(cached, split)  # the task's part is always evaluated as one batch, as the first time
        llm.n_tokens = cached
        start = cached
        if cached < split < len(tokens):
            llm.eval(tokens[cached:split])
            start = split
        llm.eval(tokens[start:])
        t_prefill = time.perf_counter()
        out: list[int] = []
        logprobs: list[float] = []
        tops: list[dict[str, float]] = []
        text = ""
        finish = "length"
        # The next positions' log-probabilities: the prefill's, then each step's (one, or several from a
        # checked draft: while any are left, the token they chose is in the cache already).
        ahead = [self._last_logprobs()]
        for step in range(max_tokens):
            lp = ahead.pop(0)
            tok = int(lp.argmax())
            if top_k and (top_steps is None or step < top_steps):
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
            if step + 1 >= max_tokens or ahead:
                continue
            guess = draft(tokens, out, min(DRAFT_TOKENS, max_tokens - step - 1)) if self.speculative else []
            if not guess:
                llm.eval([tok])
                ahead.append(self._last_logprobs())
                continue
            rows = self._eval_rows([tok, *guess])
            ok = 0
            while ok < len(guess) and int(rows[ok].argmax()) == guess[ok]:
                ok += 1
            # keep tok and the accepted draft tokens in the cache; what follows them is recomputed
            llm.n_tokens -= len(guess) - ok
            llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
            self.spec_stats.add(len(guess), ok)
            ahead = rows[: ok + 1]
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
    def task_prompt(self, question: str, passages: Sequence[Passage], task: Task) -> str:
        """The rendered prompt of ``task`` over ``passages`` in this model's prompt family."""
        if self.family == "chat":
            return self.render(messages(question, passages, task))
        return base_prompt(question, passages, task)

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop strings of an answer (a base model's completion stops at the end of its line)."""
        return () if self.family == "chat" else BASE_STOP

    def read(self, question: str, passages: Sequence[Passage], max_tokens: int) -> Reading:
        """The joint reading (all passages in one prompt): the probe, then the answer, over one
        shared prefill of the passages and the question. Nothing to verify against: no check.

        :raises PromptTooLongError: the passages do not fit the context window.
        """
        self.warm_up()
        with self._lock:
            t0 = time.perf_counter()
            probe = self._generate(self.tokenize(self.task_prompt(question, passages, PROBE)), 1, (), PROBE_TOP_LOGPROBS)
            ans = self._generate(self.tokenize(self.task_prompt(question, passages, ANSWER)), max_tokens, self.stop,
                                 PROBE_TOP_LOGPROBS, top_steps=1)
            t1 = time.perf_counter()
        texts = [p.text for p in passages]
        answer = parse_answer(ans.text, question, texts)
        signals = PassageSignals(
            p_yes=round(p_yes(probe.top_logprobs[0] if probe.top_logprobs else None), 6), reply=ans.text,
            answer=answer, token_logprobs=rounded(ans.token_logprobs),
            no_answer_logit=round(no_answer_logit(ans.top_logprobs[0] if ans.top_logprobs else None), 5),
            is_span=bool(answer) and any(find_span(answer, t) for t in texts))
        prefilled = (probe.prompt_tokens - probe.cached_prompt_tokens) + (ans.prompt_tokens - ans.cached_prompt_tokens)
        reading = PassageReading((signals,), 0, NO_VERIFY, probe.prompt_tokens + ans.prompt_tokens, prefilled,
                                 len(ans.token_logprobs))
        return Reading(reading, probe.prompt_tokens + ans.prompt_tokens, prefilled, probe.cached_prompt_tokens,
                       {"prefill": probe.prefill_ms + ans.prefill_ms, "decode": ans.decode_ms + probe.decode_ms,
                        "read": (t1 - t0) * 1000.0})

    # --- per-passage reading over stored prefix states -------------------------------------
    @property
    def model_sha256(self) -> str:
        """The model file's SHA-256 (part of every stored state's key)."""
        if not self._model_sha256:
            self._model_sha256 = model_sha256(self.model_path)
        return self._model_sha256

    def passage_prompt(self, question: str, passage: Passage, task: Task = ANSWER) -> PassagePrompt:
        """One passage's prompt for ``task``, split where the question starts."""
        self.warm_up()
        prompt = self.task_prompt(question, [passage], task)
        cut = prompt.rfind(QUESTION_MARKER + one_line(question))
        if cut < 0:
            raise ReadingError(f"{self.name}: the prompt does not put the passage before the question — "
                               "read the passages jointly (ECQA_SLM_READING=joint)")
        return PassagePrompt(prompt[:cut], prompt[cut:])

    def state_key(self, prefix: str) -> str:
        """The store key of a prefix's state: model, template, KV cache type and the prefix itself."""
        return state_key(self.model_sha256, self.template_sha256, self.kv_type, prefix)

    def _prefix_tokens(self, prefix: str) -> list[int]:
        return list(self._llm.tokenize(prefix.encode("utf-8", errors="replace"), add_bos=self._formatter is None,
                                       special=True))

    def _suffix_tokens(self, suffix: str) -> list[int]:
        return list(self._llm.tokenize(suffix.encode("utf-8", errors="replace"), add_bos=False, special=True))

    def _question_tokens(self, suffix: str, suffix_toks: list[int]) -> int:
        """How many of a suffix's tokens are its question line (``Question: …`` and the line breaks after it),
        the part every task on that passage shares; 0 when it does not tokenize apart from the task."""
        end = suffix.find("\n")
        if end < 0:
            return 0
        while end < len(suffix) and suffix[end] == "\n":
            end += 1
        part = self._suffix_tokens(suffix[:end])
        return len(part) if suffix_toks[:len(part)] == part and len(part) < len(suffix_toks) else 0

    def _state_bytes(self) -> bytes:
        import llama_cpp

        ctx = self._llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        n = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
        return bytes(memoryview(buf)[:n])

    def _restore(self, tokens: list[int], data: bytes) -> bool:
        """Load a prefix state into sequence 0; False when llama.cpp refuses it or it holds another number of
        positions than ``tokens`` (the cache is then empty)."""
        import llama_cpp

        llm = self._llm
        llm._ctx.kv_cache_seq_rm(0, 0, -1)
        llm.n_tokens = 0
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        ok = llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buf, len(data), 0)
        # A state of another length is not this prefix's (its positions would not line up with the suffix:
        # llama_decode fails, or worse reads another passage): refused like one llama.cpp refuses.
        if not ok or llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(llm._ctx.ctx), 0) != len(tokens) - 1:
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

    def _load_prefix(self, tokens: list[int], key: str, store: PassageStateStore | MemoryStateStore | None,
                     memo: dict[str, bytes], t: dict[str, float]) -> str:
        """Put a prefix's KV state in the cache: "live" (already there), "hit" (this read's copy or the
        store), or "miss" (prefilled, then stored)."""
        llm = self._llm
        if self._live_prefix(tokens) == len(tokens):
            # What follows the prefix stays live too: the next prompt keeps the part of it that it shares (the
            # question, after the same passage's probe), :meth:`_generate` prefills only the rest.
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
        t["kv_store"] += (time.perf_counter() - t2) * 1000.0
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
                out.append(self._load_prefix(self._prefix_tokens(prefix), key, store, {}, _stage_times()))
        return out

    def _prefixed(self, prefix: str, suffix: str, max_tokens: int, stop: tuple[str, ...], top_k: int, top_steps: int,
                  store: PassageStateStore | MemoryStateStore | None, memo: dict[str, bytes],
                  t: dict[str, float]) -> tuple[Generation, str]:
        """Generate from [prefix + suffix] with the prefix's state loaded first (live, restored or prefilled
        and stored). Holds the lock. :returns: the generation and where the prefix state came from."""
        toks = self._prefix_tokens(prefix)
        suffix_toks = self._suffix_tokens(suffix)
        if len(toks) + len(suffix_toks) + max_tokens > self.n_ctx:
            raise PromptTooLongError(len(toks) + len(suffix_toks), max_tokens, self.n_ctx)
        loaded = dict(t)
        source = self._load_prefix(toks, self.state_key(prefix), store, memo, t)
        gen = self._generate(toks + suffix_toks, max_tokens, stop, top_k, top_steps,
                             split=len(toks) + self._question_tokens(suffix, suffix_toks))
        t["prefill"] += gen.prefill_ms
        t["prefilled"] += gen.prompt_tokens - gen.cached_prompt_tokens
        t["decode"] += gen.decode_ms
        # As the whole prompt's: the prefix's restore or prefill (and storing it) count as prefill time, and
        # prefix tokens prefilled just now are not "cached".
        load_ms = sum(t[k] - loaded[k] for k in ("restore", "kv_store")) + (t["prefill"] - loaded["prefill"])
        return dataclasses.replace(gen, prefill_ms=load_ms,
                                   cached_prompt_tokens=gen.cached_prompt_tokens - int(t["prefilled"] - loaded["prefilled"])
                                   + (gen.prompt_tokens - gen.cached_prompt_tokens)), source

    def read_each(self, question: str, passages: Sequence[Passage], max_tokens: int,
                  store: PassageStateStore | None = None, plan: ReadPlan = FULL) -> Reading:
        """Read each passage on its own (:func:`reading.passages.read_each`): restore its [system +
        passage] state (or prefill and store it), then prefill only the question and the task.

        Attention stays exact (no stitching of chunk caches); only the point where the prefill is split
        differs from a full prefill of that passage's prompt (same answer on 94.5% of `make bench-kv`'s
        questions: the last bits of the sums differ, and greedy decoding flips on near-ties).

        :param plan: how much of the reading to do (:class:`reading.passages.ReadPlan`; default: all of it).
        :raises PromptTooLongError: a passage's prompt does not fit the context window.
        """
        self.warm_up()
        if not passages:
            return self.read(question, passages, max_tokens)
        t = _stage_times()
        memo: dict[str, bytes] = {}
        kv: dict[int, str] = {}

        def step(i: int, task: Task, n: int) -> Step:
            pp = self.passage_prompt(question, passages[i], task)
            before = t["prefilled"]
            gen, source = self._prefixed(pp.prefix, pp.suffix, n, self.stop if task.kind == "answer" else (),
                                         PROBE_TOP_LOGPROBS, 1, store, memo, t)
            kv.setdefault(i, source)
            return Step(gen.text, gen.token_logprobs, gen.top_logprobs[0] if gen.top_logprobs else {},
                        gen.prompt_tokens, int(t["prefilled"] - before))

        with self._lock:
            t0 = time.perf_counter()
            reading = passage_reading.read_each(step, question, passages, max_tokens, plan)
            t1 = time.perf_counter()
        sources = tuple(kv[i] for i in range(len(reading.passages)))
        # Every step's prompt counts; what was not evaluated came from a stored, restored or live state.
        return Reading(reading, reading.prompt_tokens, int(t["prefilled"]), reading.prompt_tokens - int(t["prefilled"]),
                       {"restore": t["restore"], "prefill": t["prefill"], "kv_store": t["kv_store"],
                        "decode": t["decode"], "read": (t1 - t0) * 1000.0}, sources)

    def _top(self, lp: np.ndarray, k: int) -> dict[str, float]:
        best = np.argpartition(-lp, k)[:k]
        top: dict[str, float] = {}
        for tok in best[np.argsort(-lp[best])]:
            piece = self._piece(int(tok))
            top[piece] = float(np.logaddexp(top[piece], lp[tok])) if piece in top else float(lp[tok])
        return top


# Prompt-lookup drafts: the reply's last DRAFT_NGRAM tokens (then fewer) looked up in the prompt, and up to
# DRAFT_TOKENS of what follows them there proposed.
DRAFT_NGRAM = 3
DRAFT_MIN_NGRAM = 1
DRAFT_TOKENS = 8


def draft(prompt: Sequence[int], reply: Sequence[int], n: int, ngram: int = DRAFT_NGRAM,
          min_ngram: int = DRAFT_MIN_NGRAM) -> list[int]:
    """Prompt-lookup draft: the tokens that follow the latest occurrence in ``prompt`` of the reply's last
    ``ngram`` tokens (or fewer, down to one), at most ``n``; none when the reply's end is not in the prompt.

    SQuAD answers are spans of the passage, so the draft is often the answer's continuation.
    """
    if n <= 0 or not reply:
        return []
    for size in range(min(ngram, len(reply)), min_ngram - 1, -1):
        key = list(reply[-size:])
        first = key[0]
        for i in range(len(prompt) - size - 1, -1, -1):
            if prompt[i] == first and list(prompt[i: i + size]) == key:
                return list(prompt[i + size: i + size + n])
    return []


@dataclass
class SpecStats:
    """Draft tokens proposed and accepted (speculative decoding), and the checks run."""

    checks: int = 0
    drafted: int = 0
    accepted: int = 0

    def add(self, drafted: int, accepted: int) -> None:
        self.checks += 1
        self.drafted += drafted
        self.accepted += accepted


def _stage_times() -> dict[str, float]:
    return {"restore": 0.0, "prefill": 0.0, "prefilled": 0.0, "kv_store": 0.0, "decode": 0.0}
