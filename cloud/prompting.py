"""The gateway's side of reading: which prompts go to the backend, and what its replies mean.

The prompts and the reply parsing are :mod:`reading`'s, shared with the edge. For a ``chat``
backend (an instruct model: Qwen2.5 in the embedded backend or behind vLLM) the gateway sends
messages to ``/v1/chat/completions`` and the server applies the model's own chat template; for a
``base`` model (gemma-3-270m) it sends the few-shot completion prompt to ``/v1/completions``.
Both tiers ask the same yes/no answerability probe first; its messages share the passages and
the question with the answer's, so a prefix-caching backend prefills them once.
"""

from __future__ import annotations

from collections.abc import Sequence

from cloud.wire import Passage
from reading.prompts import BASE_STOP
from reading.prompts import Passage as ReadPassage
from reading.prompts import answer_messages, base_answer_prompt, base_probe_prompt, p_yes, probe_messages
from reading.text import find_span, parse_answer, reply_confidence

__all__ = ["BASE_STOP", "answer_messages", "base_answer_prompt", "base_probe_prompt", "fit_passages", "p_yes",
           "parse_reply", "probe_messages", "prompt_char_limit", "prompt_chars", "read_passages"]


def read_passages(passages: Sequence[Passage]) -> list[ReadPassage]:
    return [ReadPassage(p.title, p.text) for p in passages]


def parse_reply(
    reply: str, token_logprobs: Sequence[float], question: str, passages: Sequence[Passage]
) -> tuple[str, float, tuple[tuple[int, int] | None, ...]]:
    """``(answer, confidence, spans)``: answer '' = no answer; confidence is the reply's
    geometric-mean token probability, halved for an answer that is no passage's span."""
    answer = parse_answer(reply, question, [p.text for p in passages])
    spans = tuple(find_span(answer, p.text) if answer else None for p in passages)
    return answer, reply_confidence(token_logprobs, any(spans), bool(answer)), spans


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


def prompt_chars(question: str, passages: Sequence[Passage]) -> int:
    """Characters of the longest prompt the gateway sends for this request, in either family (the
    base family's few-shot prompt is the longer one): what :func:`prompt_char_limit` bounds."""
    rp = read_passages(passages)
    chat = sum(len(m["content"]) for m in probe_messages(question, rp)) + CHAT_TEMPLATE_CHARS
    return max(chat, len(base_probe_prompt(question, rp)), len(base_answer_prompt(question, rp)))


def prompt_char_limit(context_tokens: int, max_tokens: int) -> int:
    """The most characters of a prompt (:func:`prompt_chars`) expected to fit ``context_tokens`` with
    ``max_tokens`` left for the answer."""
    return max(0, int((context_tokens - max_tokens) * CHARS_PER_TOKEN))


def fit_passages(question: str, passages: Sequence[Passage], limit_chars: int) -> tuple[Passage, ...]:
    """``passages`` cut from the end (the last ones first; one left under :data:`MIN_PASSAGE_CHARS`
    is dropped) so that ``prompt_chars(question, passages)`` is at most ``limit_chars``.

    Texts are cut, never rewritten, so answer offsets found in a cut text hold in the original.
    """
    kept = list(passages)
    over = prompt_chars(question, kept) - limit_chars
    while over > 0 and kept:
        last = kept[-1]
        keep = len(last.text) - over
        if keep < MIN_PASSAGE_CHARS or not last.text[:keep].strip():
            kept.pop()
        else:
            kept[-1] = Passage(title=last.title, text=last.text[:keep])
        over = prompt_chars(question, kept) - limit_chars
    return tuple(kept)
