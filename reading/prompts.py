"""What a model is asked: the answer prompt and the answerability probe, for both tiers.

Two prompt families (the manifest names each model's):

- ``chat``: an instruct model with a chat template in its GGUF metadata (Qwen2.5, SmolLM2).
  The messages below are rendered by the model's own template — by :class:`reading.reader.LlamaReader`
  on the edge and in the embedded backend, by vLLM behind ``/v1/chat/completions``.
- ``base``: a base model without a template (gemma-3-270m): a completion-style few-shot prompt.

The probe asks "is the answer stated in the passage?" and reads p(yes) from the first reply
token's top logprobs. Its messages share every token up to the end of the question with the
answer prompt, so the passages and the question are prefilled once for both (the reader keeps
the longest common prefix in the KV cache; vLLM's prefix caching does the same).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NO_ANSWER_WORD = "unanswerable"
PROMPT_FAMILIES = ("chat", "base")

SYSTEM = (
    "Answer the question with a short phrase copied from the passages. "
    f"If the passages do not contain the answer, reply: {NO_ANSWER_WORD}"
)
PROBE_QUESTION = "Is the answer to this question stated in the passages? Reply yes or no."
# The number of top logprobs read at the probe's first token: vLLM's default max_logprobs.
PROBE_TOP_LOGPROBS = 20

_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class Passage:
    """One passage as a model reads it."""

    title: str
    text: str


def one_line(text: str) -> str:
    """Whitespace runs as one space, ends stripped: passages, titles and questions go on one line."""
    return _WS.sub(" ", text).strip()


def _user_content(question: str, passages: Sequence[Passage]) -> str:
    parts = []
    for i, p in enumerate(passages, 1):
        parts.append(f"Passage {i}" + (f" ({one_line(p.title)})" if p.title.strip() else "") + f": {one_line(p.text)}")
    body = "\n\n".join(parts) if parts else "Passage 1: (no passage)"
    return f"{body}\n\nQuestion: {one_line(question)}"


def answer_messages(question: str, passages: Sequence[Passage], system: str = SYSTEM) -> list[dict[str, str]]:
    """Chat messages asking for a short extractive answer: passages first, then the question."""
    return [{"role": "system", "content": system}, {"role": "user", "content": _user_content(question, passages)}]


def probe_messages(question: str, passages: Sequence[Passage], system: str = SYSTEM) -> list[dict[str, str]]:
    """The answer messages with the yes/no answerability question appended to the user turn."""
    return [{"role": "system", "content": system},
            {"role": "user", "content": _user_content(question, passages) + "\n\n" + PROBE_QUESTION}]


# --- the base-model (completion) family -------------------------------------------------------
BASE_INSTRUCTION = (
    "Answer each question with a short phrase copied from its passages. "
    f"If the passages do not contain the answer, write: {NO_ANSWER_WORD}\n\n"
)
# (passages, question, answer). gemma-3-270m with its gold paragraph, 40 dev-a questions: F1 21.5
# (HasAns 39.9, NoAns 4.8); one unanswerable example teaches the format of abstaining.
BASE_EXAMPLES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("The Amazon River flows through Peru, Colombia and Brazil and empties into the Atlantic Ocean.",),
     "Into which ocean does the Amazon River empty?", "the Atlantic Ocean"),
    (("The Eiffel Tower was completed in 1889 as the entrance arch to the World's Fair in Paris.",),
     "How many people visited the Eiffel Tower in 1889?", NO_ANSWER_WORD),
    (("Marie Curie was born in Warsaw in 1867. She moved to Paris in 1891 to study physics.",
      "Curie shared the 1903 Nobel Prize in Physics with her husband Pierre Curie."),
     "Who shared the 1903 Nobel Prize in Physics with Marie Curie?", "her husband Pierre Curie"),
)
BASE_STOP = ("\n",)
BASE_PROBE = "Is the answer stated in the passages (yes or no)?"


def _block(passages: Sequence[str], question: str) -> str:
    lines = [f"Passage: {one_line(p)}" for p in passages] or ["Passage: (no passage)"]
    return "\n".join(lines) + f"\nQuestion: {one_line(question)}"


def base_answer_prompt(question: str, passages: Sequence[Passage]) -> str:
    """The few-shot completion prompt; instruction and examples are a fixed, cacheable prefix."""
    shots = "".join(_block(p, q) + f"\nAnswer: {a}\n\n" for p, q, a in BASE_EXAMPLES)
    return BASE_INSTRUCTION + shots + _block([p.text for p in passages], question) + "\nAnswer:"


def base_probe_prompt(question: str, passages: Sequence[Passage]) -> str:
    """The answer prompt's prefix with the yes/no probe in place of the answer cue."""
    shots = "".join(_block(p, q) + f"\n{BASE_PROBE} {'no' if a == NO_ANSWER_WORD else 'yes'}\n\n"
                    for p, q, a in BASE_EXAMPLES)
    return BASE_INSTRUCTION + shots + _block([p.text for p in passages], question) + f"\n{BASE_PROBE}"


# --- reading the probe ----------------------------------------------------------------------
def p_yes(top_logprobs: Mapping[str, float] | None) -> float:
    """P(yes) / (P(yes) + P(no)) over the probe's first-token top logprobs.

    Tokens count by their stripped, lower-cased text ("Yes", " yes", "YES"). Neither among the
    top tokens: 0.5, no evidence either way.
    """
    yes = no = 0.0
    for token, lp in (top_logprobs or {}).items():
        word = str(token).strip().lower()
        if not math.isfinite(lp):
            continue
        if word == "yes":
            yes += math.exp(lp)
        elif word == "no":
            no += math.exp(lp)
    return yes / (yes + no) if yes + no > 0 else 0.5
