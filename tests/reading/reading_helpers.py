"""A scripted model for the per-passage reading's tests (reading/passages.py): no model runs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from reading.passages import Step
from reading.prompts import Task


def yes(p: float) -> dict[str, float]:
    return {"Yes": math.log(p), "No": math.log(1 - p)}


class Scripted:
    """A model whose p(yes) and answer per passage are given; records every step it is asked.

    :param no_answer: per passage, the probability of the no-answer reply's first token at the answer's first
        step (0.1 for every passage when not given).
    """

    def __init__(self, p_yes: Sequence[float], answers: Sequence[str], verify_p: float = 0.7,
                 no_answer: Sequence[float] | None = None) -> None:
        self.p_yes, self.answers, self.verify_p = list(p_yes), list(answers), verify_p
        self.no_answer = list(no_answer) if no_answer is not None else [0.1] * len(self.answers)
        self.asked: list[tuple[int, str]] = []

    def __call__(self, i: int, task: Task, max_tokens: int) -> Step:
        self.asked.append((i, task.kind))
        if task.kind == "probe":
            return Step("Yes", (-0.1,), yes(self.p_yes[i]), 30, 12, {"prefill": 1.0})
        if task.kind == "verify":
            assert task.answer == self.answers[i]
            return Step("Yes", (-0.1,), yes(self.verify_p), 40, 15, {"prefill": 1.0})
        assert max_tokens == 8
        return Step(self.answers[i], (-0.2, -0.4), {self.answers[i][:3]: -0.2, "un": math.log(self.no_answer[i])}, 31, 3,
                    {"prefill": 0.5, "decode": 2.0})
