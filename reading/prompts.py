"""What a model is asked, on both tiers: one passage (or several, for the joint reading), the
question, then the task — answer it, or say whether the passage states the answer, or check a
proposed answer.

Two prompt families (the manifest names each model's):

- ``chat``: an instruct model with a chat template in its GGUF metadata (Qwen2.5, SmolLM2).
  The messages below are rendered by the model's own template — by :class:`reading.reader.LlamaReader`
  on the edge and in the embedded backend, by vLLM behind ``/v1/chat/completions``.
- ``base``: a base model without a template (gemma-3-270m): a completion-style few-shot prompt.

**One neutral system prompt; the task in the user turn, after the question.** Each task asks one
thing, so the yes/no probe never inherits the answer prompt's "reply unanswerable" instruction.
Every task's prompt shares every token up to the question with the others: the prefix
[system + passage] is known before any question (its KV state is stored on the edge and cached by
the embedded backend; vLLM's prefix caching does the same), and each task costs only its suffix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

NO_ANSWER_WORD = "unanswerable"
# Characters of a retrieved passage either tier reads (the one default of the `passage_chars` setting).
# dev-a's longest paragraph has 4063; at the densest 2.4 characters per token seen in the bundled data,
# 4000 fit the edge's 2048-token context with the question, the task and the answer.
PASSAGE_CHARS = 4000
PROMPT_FAMILIES = ("chat", "base")
# The longest question either tier reads (the edge's check, a worker's request, the cloud wire).
MAX_QUESTION_CHARS = 1000

# Neutral: the task is stated in the user turn (the 1.5B cloud model's yes/no AUROC with its gold
# paragraph is 0.78 read this way, one passage at a time).
SYSTEM = "You are a helpful assistant."
# The answer task always answers: whether to abstain is the probe's and the fitted models' call. Offered
# "reply unanswerable", the 1.5B model abstained on answerable questions too: HasAns F1 61.4 against 68.6
# without the option (150 calibration-split questions, gold paragraph; the no-answer log-odds at the first
# step then carried AUROC 0.750 against the probe's 0.752 — nothing the probe does not say).
ANSWER_TASK = "Answer the question with a short phrase copied from the passage."
PROBE_TASK = "Is the answer to this question stated in the passage? Reply yes or no."
# Where the question starts in every prompt: the split between the stored prefix and a task's suffix.
QUESTION_MARKER = "Question: "
# The number of top logprobs read at a reply's first token: vLLM's default max_logprobs.
PROBE_TOP_LOGPROBS = 20

_WS = re.compile(r"\s+")


class DocumentLike(Protocol):
    """A retrieved document (a Haystack ``Document``): what a :class:`Passage` is made from."""

    id: str
    content: str | None
    meta: dict[str, Any]
    score: float | None


@dataclass(frozen=True)
class Passage:
    """One retrieved passage, from retrieval to both tiers' readers: what a model reads (its title and text)
    and what names and ranks it (id, retrieval score, source file). The cloud wire carries the title and
    text only; a reply refers to passages by their order."""

    title: str
    text: str
    id: str = ""
    score: float = 0.0
    source: str = ""

    @classmethod
    def from_document(cls, doc: DocumentLike) -> Passage:
        """The one conversion from what retrieval returns."""
        meta = doc.meta or {}
        return cls(str(meta.get("title") or ""), doc.content or "", str(doc.id or ""), float(doc.score or 0.0),
                   str(meta.get("source") or ""))

    def cut(self, chars: int) -> Passage:
        """The passage with its text cut to ``chars`` characters (the `passage_chars` setting)."""
        return self if len(self.text) <= chars else replace(self, text=self.text[:chars])

    def to_json(self, answer_span: tuple[int, int] | None = None) -> dict[str, Any]:
        """The passage as an answer shows it (``AskResult.passages``), with where the answer sits in it."""
        return {"id": self.id, "title": self.title, "text": self.text, "score": round(self.score, 6),
                "source": self.source, "answer_span": list(answer_span) if answer_span else None}


@dataclass(frozen=True)
class PassageHit:
    """A passage a reply's answer was looked for in, and where it sits there (None: not in this passage)."""

    passage: Passage
    span: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return self.passage.to_json(self.span)


@dataclass(frozen=True)
class Task:
    """What the model is asked about the passage and the question.

    :param kind: "answer" (a short span, or ``unanswerable``), "probe" (is the answer stated? yes/no)
        or "verify" (does the passage state that ``answer`` answers the question? yes/no).
    :param answer: the proposed answer a "verify" task checks.
    """

    kind: str
    answer: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("answer", "probe", "verify"):
            raise ValueError(f"unknown task {self.kind!r}")
        if (self.kind == "verify") != bool(self.answer.strip()):
            raise ValueError("a verify task, and only it, names the answer it checks")

    @property
    def yes_no(self) -> bool:
        return self.kind != "answer"

    def instruction(self) -> str:
        if self.kind == "answer":
            return ANSWER_TASK
        if self.kind == "probe":
            return PROBE_TASK
        return f'Does the passage state that "{one_line(self.answer)}" answers the question? Reply yes or no.'


ANSWER = Task("answer")
PROBE = Task("probe")


def verify(answer: str) -> Task:
    """The task that checks a proposed answer against the passage it came from."""
    return Task("verify", answer)


def one_line(text: str) -> str:
    """Whitespace runs as one space, ends stripped: passages, titles and questions go on one line."""
    return _WS.sub(" ", text).strip()


def _passages_block(passages: Sequence[Passage]) -> str:
    if len(passages) == 1:
        p = passages[0]
        return "Passage" + (f" ({one_line(p.title)})" if p.title.strip() else "") + f": {one_line(p.text)}"
    parts = []
    for i, p in enumerate(passages, 1):
        parts.append(f"Passage {i}" + (f" ({one_line(p.title)})" if p.title.strip() else "") + f": {one_line(p.text)}")
    return "\n\n".join(parts) if parts else "Passage: (no passage)"


def _instruction(task: Task, joint: bool) -> str:
    text = task.instruction()
    # The joint reading (several passages in one prompt) asks about "the passages".
    if not joint:
        return text
    return re.sub(r"\bthe passage\b( does)?", lambda m: "the passages" + (" do" if m.group(1) else ""), text)


def messages(question: str, passages: Sequence[Passage], task: Task = ANSWER) -> list[dict[str, str]]:
    """Chat messages: the neutral system prompt; passages, question and task in the user turn."""
    joint = len(passages) > 1
    user = f"{_passages_block(passages)}\n\n{QUESTION_MARKER}{one_line(question)}\n\n{_instruction(task, joint)}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def answer_messages(question: str, passages: Sequence[Passage]) -> list[dict[str, str]]:
    """The answer task's messages."""
    return messages(question, passages, ANSWER)


def probe_messages(question: str, passages: Sequence[Passage]) -> list[dict[str, str]]:
    """The yes/no answerability probe's messages (the same prefix as the answer's, another task)."""
    return messages(question, passages, PROBE)


# --- the base-model (completion) family -------------------------------------------------------
BASE_INSTRUCTION = (
    "Answer each question with a short phrase copied from its passages. "
    f"If the passages do not contain the answer, write: {NO_ANSWER_WORD}\n\n"
)
# (passages, question, answer, a wrong answer to verify). gemma-3-270m with its gold paragraph, 40 dev-a
# questions: F1 21.5 (HasAns 39.9, NoAns 4.8); one unanswerable example teaches the format of abstaining.
BASE_EXAMPLES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("The Amazon River flows through Peru, Colombia and Brazil and empties into the Atlantic Ocean.",),
     "Into which ocean does the Amazon River empty?", "the Atlantic Ocean"),
    (("The Eiffel Tower was completed in 1889 as the entrance arch to the World's Fair in Paris.",),
     "How many people visited the Eiffel Tower in 1889?", NO_ANSWER_WORD),
    (("Marie Curie was born in Warsaw in 1867. She moved to Paris in 1891 to study physics.",
      "Curie shared the 1903 Nobel Prize in Physics with her husband Pierre Curie."),
     "Who shared the 1903 Nobel Prize in Physics with Marie Curie?", "her husband Pierre Curie"),
)
# The wrong answer each example's verify shot checks (the unanswerable one: a plausible guess).
_BASE_VERIFY_WRONG = ("Brazil", "1889", "Warsaw")
BASE_STOP = ("\n",)
BASE_PROBE = "Is the answer stated in the passages (yes or no)?"


def _base_verify_cue(answer: str) -> str:
    return f'Do the passages say that "{one_line(answer)}" answers the question (yes or no)?'


def _block(passages: Sequence[str], question: str) -> str:
    lines = [f"Passage: {one_line(p)}" for p in passages] or ["Passage: (no passage)"]
    return "\n".join(lines) + f"\n{QUESTION_MARKER}{one_line(question)}"


def _base_shot(passages: Sequence[str], question: str, answer: str, wrong: str) -> str:
    """One example with every task's reply (the probe's, the answer, a wrong and the right answer checked),
    so that every task's prompt is the same up to its own question: one cacheable prefix per passage."""
    stated = answer != NO_ANSWER_WORD
    lines = [_block(passages, question), f"{BASE_PROBE} {'yes' if stated else 'no'}", f"Answer: {answer}",
             f"{_base_verify_cue(wrong)} no"]
    if stated:
        lines.append(f"{_base_verify_cue(answer)} yes")
    return "\n".join(lines) + "\n\n"


def base_prompt(question: str, passages: Sequence[Passage], task: Task = ANSWER) -> str:
    """The few-shot completion prompt for ``task``: instruction and examples are the same for every task
    (a fixed, cacheable prefix), and so is the passage; the task's cue comes after the question."""
    shots = "".join(_base_shot(p, q, a, w) for (p, q, a), w in zip(BASE_EXAMPLES, _BASE_VERIFY_WRONG, strict=True))
    cue = {"answer": "Answer:", "probe": BASE_PROBE}.get(task.kind) or _base_verify_cue(task.answer)
    return BASE_INSTRUCTION + shots + _block([p.text for p in passages], question) + f"\n{cue}"


def base_answer_prompt(question: str, passages: Sequence[Passage]) -> str:
    return base_prompt(question, passages, ANSWER)


def base_probe_prompt(question: str, passages: Sequence[Passage]) -> str:
    return base_prompt(question, passages, PROBE)


# --- reading a yes/no reply and the answer's first step ----------------------------------------
def p_yes(top_logprobs: Mapping[str, float] | None) -> float:
    """P(yes) / (P(yes) + P(no)) over a yes/no reply's first-token top logprobs.

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


# A log-odds is clipped here: a probability of 1 - 1e-6 says all there is to say.
LOGIT_CLIP = 14.0


def logit(p: float) -> float:
    """log(p / (1 - p)), clipped to ±:data:`LOGIT_CLIP`."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    return max(-LOGIT_CLIP, min(LOGIT_CLIP, math.log(p / (1 - p))))


def no_answer_logit(top_logprobs: Mapping[str, float] | None) -> float:
    """The log-odds that an answer's first token starts the no-answer reply (``unanswerable``).

    Read at the answer's first decoding step, for free: a token counts when its stripped, lower-cased
    text (two characters or more) begins the no-answer word. When none is among the top tokens, its
    probability is at most the lowest one listed, which is used (a conservative estimate).
    """
    tops = {str(t): lp for t, lp in (top_logprobs or {}).items() if math.isfinite(lp)}
    if not tops:
        return 0.0
    mass = sum(math.exp(lp) for t, lp in tops.items()
               if len(t.strip()) >= 2 and NO_ANSWER_WORD.startswith(t.strip().lower()))
    if mass <= 0.0:
        mass = math.exp(min(tops.values()))
    return logit(mass)
