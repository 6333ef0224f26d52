"""Reading each passage on its own: the one reading both tiers do.

For every retrieved passage, on that passage's cached prefix [system + passage]:

1. the yes/no **probe** — p(yes) to "is the answer to this question stated in the passage?";
2. the **answer** — its reply, token logprobs, and the log-odds of the no-answer reply at its first
   decoding step (free: the same forward pass);

then the answer of the passage with the highest p(yes) among those that gave one is **verified**
on its own passage ("does the passage state that X answers the question?").

A :class:`ReadPlan` says how much of that is done: the full reading (every passage answered, the answer
verified: the cloud's), or the lean one (every passage probed, only the best one answered, no check,
and passages far under the top retrieval score not read at all: the edge's, fitted by `make calibrate`).

The edge runs the steps on llama.cpp itself, restoring each passage's stored KV state
(:meth:`reading.reader.LlamaReader.read_each`); the cloud gateway runs them as chat-completion
requests that share each passage's prefix (the embedded backend keeps the prefix states; vLLM's prefix
caching does the same). Both assemble the result here, so a passage means the same on either tier.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reading.prompts import ANSWER, PROBE, Passage, Task, no_answer_logit, p_yes, verify
from reading.text import find_span, parse_answer


@dataclass(frozen=True)
class Step:
    """One task on one passage: the reply and what the reading needs of it.

    :param first_top: the top logprobs at the first generated position (the yes/no or the
        no-answer evidence).
    :param prefilled_tokens: prompt tokens evaluated for this step (the rest came from a cache).
    :param timings: ms by stage ("prefill", "decode", "restore", "kv_store" — whatever the tier reports).
    """

    text: str
    token_logprobs: tuple[float, ...]
    first_top: Mapping[str, float]
    prompt_tokens: int
    prefilled_tokens: int
    timings: Mapping[str, float] = field(default_factory=dict)


StepFn = Callable[[int, Task, int], Step]  # (passage index, task, max_tokens) -> Step


@dataclass(frozen=True)
class PassageSignals:
    """What one passage's reading says.

    :param p_yes: the probe's p(yes) (0.5: no evidence either way).
    :param reply: the raw answer reply.
    :param answer: the reply parsed against this passage ('' = no answer).
    :param token_logprobs: the reply's token logprobs.
    :param no_answer_logit: log-odds of the no-answer reply at the answer's first step.
    :param is_span: the answer occurs in this passage.
    :param asked: the answer task ran on this passage (a lean reading answers only the best one; the
        others have their probe and nothing else).
    """

    p_yes: float
    reply: str
    answer: str
    token_logprobs: tuple[float, ...]
    no_answer_logit: float
    is_span: bool
    asked: bool = True

    @classmethod
    def probed(cls, p_yes: float) -> PassageSignals:
        """A passage that was probed but not asked for an answer."""
        return cls(p_yes, "", "", (), 0.0, False, asked=False)

    def to_json(self) -> dict[str, Any]:
        out = {"p_yes": round(self.p_yes, 6), "reply": self.reply, "answer": self.answer,
               "token_logprobs": list(rounded(self.token_logprobs)),
               "no_answer_logit": round(self.no_answer_logit, 5), "is_span": self.is_span}
        return out if self.asked else out | {"asked": False}

    @classmethod
    def from_json(cls, d: Any) -> PassageSignals:
        """:raises ValueError: not the shape :meth:`to_json` writes, or a value out of range."""
        if not isinstance(d, dict):
            raise ValueError("a passage's signals must be an object")
        p, na = _finite(d["p_yes"]), _finite(d["no_answer_logit"])
        lps = d["token_logprobs"]
        if not 0.0 <= p <= 1.0 or not isinstance(lps, list) or len(lps) > 4096:
            raise ValueError("p_yes must be in [0, 1] and token_logprobs a list")
        asked = d.get("asked", True)  # additive: a reading written before lean readings answered every passage
        if not (isinstance(d["reply"], str) and isinstance(d["answer"], str) and isinstance(d["is_span"], bool)
                and isinstance(asked, bool)):
            raise ValueError("reply and answer must be strings, is_span and asked booleans")
        return cls(p, d["reply"], d["answer"], tuple(_finite(x) for x in lps), na, d["is_span"], asked)


def _finite(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        raise ValueError("a signal is not a finite number")
    return float(x)


NO_VERIFY = 0.5  # p(yes) of the check when there is no answer to check: no evidence either way
ANSWER_MODES = ("all", "best")


@dataclass(frozen=True)
class ReadPlan:
    """How much of the per-passage reading is done.

    :param answer: "all" — every passage is asked for an answer; "best" — only the passage with the
        highest p(yes) (one answer pass instead of one per passage).
    :param verify: check the chosen answer on its passage (one more pass).
    :param gap: read only the passages whose retrieval score is within ``gap`` of the best one's
        (None: every passage). Passages are ranked, so the ones read are the first few.
    """

    answer: str = "all"
    verify: bool = True
    gap: float | None = None

    def __post_init__(self) -> None:
        if self.answer not in ANSWER_MODES:
            raise ValueError(f"answer must be one of {ANSWER_MODES}, not {self.answer!r}")
        if self.gap is not None and not (math.isfinite(self.gap) and self.gap >= 0.0):
            raise ValueError(f"gap must be a number >= 0 or None, not {self.gap!r}")

    def to_json(self) -> dict[str, Any]:
        return {"answer": self.answer, "verify": self.verify, "gap": self.gap}

    @classmethod
    def from_json(cls, d: Any) -> ReadPlan:
        """:raises ValueError: not the shape :meth:`to_json` writes."""
        if not isinstance(d, dict) or not isinstance(d.get("verify"), bool):
            raise ValueError("a read plan is an object with answer, verify and gap")
        gap = d.get("gap")
        if gap is not None and (isinstance(gap, bool) or not isinstance(gap, (int, float))):
            raise ValueError("a read plan's gap is a number or null")
        return cls(str(d.get("answer")), d["verify"], None if gap is None else float(gap))

    def kept(self, scores: Sequence[float | None]) -> int:
        """How many of the ranked passages (their retrieval scores) are read: all but those more than
        :attr:`gap` under the best (always at least one)."""
        if self.gap is None or not scores:
            return len(scores)
        known = [s for s in scores if s is not None]
        if not known:
            return len(scores)
        floor = max(known) - self.gap
        n = 1
        while n < len(scores) and (scores[n] is None or scores[n] >= floor):
            n += 1
        return n


FULL = ReadPlan()  # every passage probed and answered, the chosen answer checked (the cloud's reading)


@dataclass(frozen=True)
class PassageReading:
    """Every passage's signals, the passage answered from and the check of its answer.

    :param passages: per passage, in retrieval order.
    :param chosen: the passage answered from (-1: no passage).
    :param p_verify: p(yes) that the chosen passage states the answer (:data:`NO_VERIFY` without one).
    """

    passages: tuple[PassageSignals, ...]
    chosen: int
    p_verify: float
    prompt_tokens: int = 0
    prefilled_tokens: int = 0
    completion_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        return self.passages[self.chosen].answer if self.chosen >= 0 else ""

    @property
    def reply(self) -> str:
        return self.passages[self.chosen].reply if self.chosen >= 0 else ""

    @property
    def token_logprobs(self) -> tuple[float, ...]:
        return self.passages[self.chosen].token_logprobs if self.chosen >= 0 else ()

    @property
    def passes(self) -> int:
        """Model passes the reading took: a probe per passage, an answer per passage asked, and the check."""
        return len(self.passages) + sum(s.asked for s in self.passages) + (self.p_verify != NO_VERIFY)

    @property
    def p_answerable(self) -> float:
        """The highest p(yes) of any passage."""
        return max((s.p_yes for s in self.passages), default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {"passages": [s.to_json() for s in self.passages], "chosen": self.chosen,
                "p_verify": round(self.p_verify, 6)}

    @classmethod
    def from_json(cls, d: Any) -> PassageReading:
        """:raises ValueError: not the shape :meth:`to_json` writes."""
        try:
            items = d["passages"]
            if not isinstance(items, list) or len(items) > 64:
                raise ValueError("passages must be a list of at most 64")
            passages = tuple(PassageSignals.from_json(x) for x in items)
            chosen, pv = d["chosen"], _finite(d["p_verify"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"a reading lacks {exc}") from None
        if isinstance(chosen, bool) or not isinstance(chosen, int) or not -1 <= chosen < len(passages) \
                or (chosen < 0 and passages) or not 0.0 <= pv <= 1.0:
            raise ValueError("chosen must index a passage and p_verify lie in [0, 1]")
        return cls(passages, chosen, pv)


def rounded(logprobs: Sequence[float]) -> tuple[float, ...]:
    """Token logprobs as a reading keeps them (5 decimals): the live signals are then those of a recorded
    or transmitted reading, to the last bit."""
    return tuple(round(float(x), 5) for x in logprobs)


def choose(passages: Sequence[PassageSignals]) -> int:
    """The passage to answer from: the highest p(yes) among passages that gave an answer (ties: the
    better-ranked), else the highest p(yes) of all; -1 without passages."""
    if not passages:
        return -1
    answered = [i for i, s in enumerate(passages) if s.answer]
    pool = answered or list(range(len(passages)))
    return max(pool, key=lambda i: (passages[i].p_yes, -i))


def read_each(step: StepFn, question: str, passages: Sequence[Passage], max_tokens: int,
              plan: ReadPlan = FULL) -> PassageReading:
    """Probe and answer every passage, answer from the best one and verify that answer (see the module),
    or as much of that as ``plan`` says.

    :param step: runs one task on the passage of that index, with the tier's model.

    Passages are read from the last-ranked to the first, each passage's probe then its answer (they
    share the passage's prefix and the question); the verify step goes back to the chosen passage. A
    lean plan probes them all first, then answers the best one. The reading holds the passages read:
    the first :meth:`ReadPlan.kept` of them.
    """
    passages = passages[:plan.kept([p.score for p in passages])]
    signals: list[PassageSignals | None] = [None] * len(passages)
    timings: dict[str, float] = {}
    tokens = [0, 0, 0]  # prompt, prefilled, completion

    def run(i: int, task: Task, n: int) -> Step:
        s = step(i, task, n)
        for k, v in s.timings.items():
            timings[k] = timings.get(k, 0.0) + v
        tokens[0] += s.prompt_tokens
        tokens[1] += s.prefilled_tokens
        tokens[2] += len(s.token_logprobs)
        return s

    def answered(i: int, p_yes_i: float) -> PassageSignals:
        p = passages[i]
        ans = run(i, ANSWER, max_tokens)
        answer = parse_answer(ans.text, question, [p.text])
        return PassageSignals(
            p_yes=p_yes_i, reply=ans.text, answer=answer, token_logprobs=rounded(ans.token_logprobs),
            no_answer_logit=round(no_answer_logit(ans.first_top), 5),
            is_span=bool(answer) and find_span(answer, p.text) is not None)

    if plan.answer == "all":
        for i in reversed(range(len(passages))):
            signals[i] = answered(i, round(p_yes(run(i, PROBE, 1).first_top), 6))
    else:
        for i in reversed(range(len(passages))):
            signals[i] = PassageSignals.probed(round(p_yes(run(i, PROBE, 1).first_top), 6))
        if passages:
            best = choose([s for s in signals if s is not None])
            signals[best] = answered(best, signals[best].p_yes)  # type: ignore[union-attr]
    done = tuple(s for s in signals if s is not None)
    chosen = choose(done)
    p_verify = NO_VERIFY
    if plan.verify and chosen >= 0 and done[chosen].answer:
        check = run(chosen, verify(done[chosen].answer), 1)
        p_verify = round(p_yes(check.first_top), 6)
    return PassageReading(done, chosen, p_verify, tokens[0], tokens[1], tokens[2], timings)


def under_plan(reading: PassageReading, plan: ReadPlan, scores: Sequence[float]) -> PassageReading:
    """What ``plan`` would have read, from a full reading of the same passages (``scores``: their retrieval
    scores, ranked): its steps are a subset of the full reading's, on the same prompts. So recorded full
    readings serve to fit and to evaluate a leaner plan without reading again.

    :raises ValueError: ``reading`` is not a full reading of those passages, or the plan would check an
        answer the full reading did not check (a verify step it never ran).
    """
    if len(reading.passages) != len(scores) or not all(s.asked for s in reading.passages):
        raise ValueError("under_plan needs a full reading (every passage asked) with one score per passage")
    kept = reading.passages[:plan.kept(list(scores))]
    if plan.answer == "all":
        sigs = list(kept)
    else:
        sigs = [PassageSignals.probed(s.p_yes) for s in kept]
        if sigs:
            best = choose(sigs)
            sigs[best] = kept[best]
    chosen = choose(sigs)
    p_verify = NO_VERIFY
    if plan.verify and chosen >= 0 and sigs[chosen].answer:
        if chosen != reading.chosen:
            raise ValueError("the plan checks an answer the full reading did not check")
        p_verify = reading.p_verify
    return PassageReading(tuple(sigs), chosen, p_verify)
