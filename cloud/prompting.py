"""The gateway's side of reading: which prompts go to the backend, and what its replies mean.

The prompts, the per-passage reading and the reply parsing are :mod:`reading`'s, shared with the
edge. For a ``chat`` backend (an instruct model: Qwen2.5 in the embedded backend or behind vLLM)
the gateway sends messages to ``/v1/chat/completions`` and the server applies the model's own chat
template; for a ``base`` model (gemma-3-270m) it sends the few-shot completion prompt to
``/v1/completions``. Each passage is read on its own, as on the edge: every task's prompt for one
passage shares the [system + passage] prefix, which a prefix-caching backend prefills once.
"""

from __future__ import annotations

from collections.abc import Sequence

from cloud.backend import Backend, Completion
from reading.passages import FULL, PassageReading, ReadPlan, Step, read_each
from reading.prompts import (
    ANSWER,
    BASE_STOP,
    PROBE,
    PROBE_TOP_LOGPROBS,
    Passage,
    Task,
    base_prompt,
    messages,
    verify,
)

__all__ = ["fit_passages", "prompt_char_limit", "prompt_chars", "read_with"]


def read_with(backend: Backend, question: str, passages: Sequence[Passage],
              max_tokens: int, plan: ReadPlan = FULL) -> tuple[PassageReading, list[Completion]]:
    """The per-passage reading (:func:`reading.passages.read_each`, as much of it as ``plan`` says) through a
    backend: each step one completion request (chat messages, or a base model's few-shot prompt) asking for
    the first token's top logprobs. Returns the reading and every request's completion, in order.

    :raises BackendError: the backend failed.
    """
    base = backend.prompt_family == "base"
    steps: list[Completion] = []

    def step(i: int, task: Task, n: int) -> Step:
        if base:
            comp = backend.complete(base_prompt(question, [passages[i]], task), n,
                                    BASE_STOP if task.kind == "answer" else (), PROBE_TOP_LOGPROBS)
        else:
            comp = backend.chat(messages(question, [passages[i]], task), n, (), PROBE_TOP_LOGPROBS)
        steps.append(comp)
        return Step(comp.text, comp.token_logprobs, comp.top_logprobs[0] if comp.top_logprobs else {},
                    comp.prompt_tokens, comp.prompt_tokens - comp.cached_prompt_tokens, comp.timings_ms)

    return read_each(step, question, passages, max_tokens, plan), steps


# Characters per token assumed when a prompt is sized without the model's tokenizer (the edge has
# none of the cloud model's). The 960 paragraphs of data/squad-v2-*.json run 4.85 characters per token
# with gemma-3's tokenizer (Qwen2.5: 4.71); 1st percentile 3.3 (3.2), the densest 2.4 (measured with
# llama.cpp vocab_only). 3 fits 99% of paragraphs, and a prompt of several averages out. The backend's
# own count stays the final word: a prompt it refuses as too long is answered 413 prompt_too_long.
CHARS_PER_TOKEN = 3.0
# A passage cut shorter than this to fit the context is left out instead.
MIN_PASSAGE_CHARS = 100
# What a chat template adds around the messages (role markers, turn ends), in characters.
CHAT_TEMPLATE_CHARS = 200


# Characters allowed for the answer a verify step quotes (an answer is at most max_tokens tokens).
ANSWER_CHARS = 200


def _tasks() -> tuple[Task, ...]:
    return (ANSWER, PROBE, verify("x" * ANSWER_CHARS))


def prompt_chars(question: str, passages: Sequence[Passage]) -> int:
    """Characters of the longest prompt the gateway sends for this request — one passage's (each is
    read on its own), any task, either family (the base family's few-shot prompt is the longer one):
    what :func:`prompt_char_limit` bounds."""
    longest = [max(passages, key=lambda p: len(p.text) + len(p.title))] if passages else []
    chat = max(sum(len(m["content"]) for m in messages(question, longest, t)) for t in _tasks()) + CHAT_TEMPLATE_CHARS
    return max(chat, *(len(base_prompt(question, longest, t)) for t in _tasks()))


def prompt_char_limit(context_tokens: int, max_tokens: int) -> int:
    """The most characters of a prompt (:func:`prompt_chars`) expected to fit ``context_tokens`` with
    ``max_tokens`` left for the answer."""
    return max(0, int((context_tokens - max_tokens) * CHARS_PER_TOKEN))


def fit_passages(question: str, passages: Sequence[Passage], limit_chars: int) -> tuple[Passage, ...]:
    """``passages`` each cut at its end so that its own prompt (:func:`prompt_chars` of that passage)
    is at most ``limit_chars``, but never under :data:`MIN_PASSAGE_CHARS` (a context too small even for
    that is the gateway's to refuse, in one line). Every passage stays, in its place: the cloud's reading of
    passage ``i`` is read beside the edge's retrieval scores of passage ``i``.

    Texts are cut, never rewritten, so answer offsets found in a cut text hold in the original.
    """
    kept = []
    for p in passages:
        # Prompts are measured with whitespace runs collapsed, so a cut can shrink the prompt by less than it
        # cut: cut again until it fits (each round cuts at least one character).
        while (over := prompt_chars(question, [p]) - limit_chars) > 0 and len(p.text) > MIN_PASSAGE_CHARS:
            p = p.cut(max(len(p.text) - over, MIN_PASSAGE_CHARS))
        kept.append(p)
    return tuple(kept)
