"""The cloud model's prompt and the parsing of its reply (gateway side).

The default cloud model is a *base* model without a chat template, so the prompt is a
completion-style few-shot: an instruction, three worked examples (one unanswerable, so the model
learns to abstain) and the question, decoded greedily up to the first newline.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from cloud.wire import Passage

NO_ANSWER_WORD = "unanswerable"
STOP = ("\n",)

INSTRUCTION = (
    "Answer each question with a short phrase copied from its passages. "
    f"If the passages do not contain the answer, write: {NO_ANSWER_WORD}\n\n"
)
# (passages, question, answer). Measured on 40 dev-a questions with their gold paragraph:
# F1 21.5 (HasAns 39.9, NoAns 4.8). With a "Who …" unanswerable example the model abstained on
# "Who …" questions (HasAns 34.6); moving it last or adding a second one moved F1 by at most
# 2 points — gemma-3-270m rarely abstains, its confidence is the usable signal.
EXAMPLES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("The Amazon River flows through Peru, Colombia and Brazil and empties into the Atlantic Ocean.",),
        "Into which ocean does the Amazon River empty?",
        "the Atlantic Ocean",
    ),
    (
        ("The Eiffel Tower was completed in 1889 as the entrance arch to the World's Fair in Paris.",),
        "How many people visited the Eiffel Tower in 1889?",
        NO_ANSWER_WORD,
    ),
    (
        (
            "Marie Curie was born in Warsaw in 1867. She moved to Paris in 1891 to study physics.",
            "Curie shared the 1903 Nobel Prize in Physics with her husband Pierre Curie.",
        ),
        "Who shared the 1903 Nobel Prize in Physics with Marie Curie?",
        "her husband Pierre Curie",
    ),
)

_WS = re.compile(r"\s+")
_NO_ANSWER = re.compile(
    r"^(unanswerable|no answer|none|n/?a|unknown|i (do not|don't) know|not (mentioned|stated|given|provided|specified))\b"
    r"|\b(unanswerable|cannot be answered|can't be answered|does not (say|mention|contain|provide)|"
    r"is not (mentioned|stated|provided|given)|no information)\b"
)
# A reply that is not a span of any passage is less likely right (SQuAD answers are spans);
# the same discount as the edge answer parser so both tiers' confidences compare.
NOT_A_SPAN_FACTOR = 0.5


def _one_line(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _block(passages: Sequence[str], question: str) -> str:
    lines = [f"Passage: {_one_line(p)}" for p in passages]
    return "\n".join(lines) + f"\nQuestion: {_one_line(question)}\nAnswer:"


def build_prompt(question: str, passages: Sequence[Passage]) -> str:
    """The few-shot completion prompt; the instruction and examples form a fixed prefix that a
    backend with prefix caching (vLLM, the embedded server) computes once."""
    shots = "".join(_block(p, q) + f" {a}\n\n" for p, q, a in EXAMPLES)
    texts = [p.text for p in passages] or ["(no passage)"]
    return INSTRUCTION + shots + _block(texts, question)


def clean_reply(reply: str) -> str:
    """First line of the reply without wrapping quotes, 'Answer:' prefixes or a final period."""
    text = reply.strip().splitlines()[0].strip() if reply.strip() else ""
    text = re.sub(r"^(answer|a)\s*:\s*", "", text, flags=re.IGNORECASE)
    text = text.strip().strip("\"'`").strip()
    if text.endswith(".") and not re.search(r"\b[A-Z]\.$|\d\.$", text):
        text = text[:-1].rstrip()
    return text


def is_no_answer(text: str) -> bool:
    return not text or bool(_NO_ANSWER.search(text.lower()))


def find_span(answer: str, passage: str) -> tuple[int, int] | None:
    """``(start, end)`` of ``answer`` in ``passage``, case-insensitively, also without
    surrounding punctuation or a leading article."""
    if not answer.strip():
        return None
    hay = passage.lower()
    trimmed = answer.strip().strip(" \"'`.,;:!?()[]")
    for cand in (answer.strip(), trimmed, re.sub(r"^(the|a|an)\s+", "", trimmed, flags=re.IGNORECASE)):
        if cand:
            start = hay.find(cand.lower())
            if start >= 0:
                return start, start + len(cand)
    return None


def parse_reply(
    reply: str, token_logprobs: Sequence[float], passages: Sequence[Passage]
) -> tuple[str, float, tuple[tuple[int, int] | None, ...]]:
    """``(answer, confidence, spans)``: answer '' = no answer; confidence is the reply's
    geometric-mean token probability, halved for an answer that is no passage's span."""
    text = clean_reply(reply)
    answer = "" if is_no_answer(text) else text
    spans = tuple(find_span(answer, p.text) if answer else None for p in passages)
    lps = [lp for lp in token_logprobs if math.isfinite(lp)]
    confidence = math.exp(sum(lps) / len(lps)) if lps else 0.0
    if answer and not any(spans):
        confidence *= NOT_A_SPAN_FACTOR
    return answer, round(min(max(confidence, 0.0), 1.0), 4), spans
