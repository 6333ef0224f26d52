"""Routing policies: a tiny ABC and a name -> class registry.

Each policy turns the signals of one edge answer into a score in [0, 1] and routes on it:
answer on the edge, escalate to the cloud, or abstain on the edge (answer "" with no cloud
call). Thresholds come from the calibration file (`make calibrate`), never typed in.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from pipelines.errors import PipelineError

ROUTES = ("edge", "cloud", "abstain", "cache")
# An abstain gate above every probability: the policy never abstains (eval/calibrate.py's "off").
ABSTAIN_OFF = 1.01


def check_threshold(value: Any, name: str = "threshold", upper: float = 1.0) -> float:
    """``value`` as a float when it is a finite number from 0 to ``upper`` (1 for a policy threshold).

    :raises PipelineError: NaN, an infinity, a number out of range, or not a number.
    """
    shown = repr(value)[:40]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PipelineError(f"the {name} {shown} is not a number — give a number from 0 to {upper:g}, e.g. 0.5")
    v = float(value)
    if not math.isfinite(v) or not 0.0 <= v <= upper:
        raise PipelineError(f"the {name} {shown} is not a number from 0 to {upper:g} — give one in that range, e.g. 0.5, "
                            "or leave it out to use the calibrated one")
    return v


@dataclass(frozen=True)
class Signals:
    """What a policy knows about one question after the edge answered it.

    :param p_correct: calibrated probability that the edge answer is right.
    :param p_unanswerable: calibrated probability that the collection holds no answer.
    :param p_gain: learned probability that the cloud's answer scores higher than the edge's.
    :param predicted_total_ms: predicted end-to-end time if escalated.
    :param budget_ms: the latency budget Tmax.
    :param cloud_available: a cloud is configured and its circuit breaker lets calls through.
    """

    p_correct: float
    p_unanswerable: float
    p_gain: float
    predicted_total_ms: float
    budget_ms: float
    cloud_available: bool = True


@dataclass(frozen=True)
class Decision:
    """Where a question goes, and why (shown in the UI and the JSON)."""

    route: str
    reason: str
    confidence: float
    threshold: float
    over_budget: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Policy(ABC):
    """A routing policy.

    :param threshold: the score threshold of this policy.
    :param abstain_threshold: p_unanswerable at or above which the edge abstains (cascade-style
        policies only).
    """

    name: ClassVar[str]
    uses_cloud: ClassVar[bool] = True

    def __init__(self, threshold: float = 0.5, abstain_threshold: float = ABSTAIN_OFF) -> None:
        # Up to ABSTAIN_OFF: a value above every score is how code says "never" (the evaluation's sweep
        # escalates all at 1 + 1e-9). What users type is checked against [0, 1] where it enters
        # (pipelines.answer.check_ask_options, Calibration.load).
        self.threshold = check_threshold(threshold, upper=ABSTAIN_OFF)
        self.abstain_threshold = check_threshold(abstain_threshold, "abstain threshold", upper=ABSTAIN_OFF)

    @abstractmethod
    def score(self, s: Signals) -> float:
        """The policy's score in [0, 1]."""

    @abstractmethod
    def route(self, score: float, threshold: float, s: Signals) -> Decision:
        """Route one question given its score."""

    def decide(self, s: Signals) -> Decision:
        return self.route(self.score(s), self.threshold, s)

    def _escalate(self, score: float, threshold: float, s: Signals, why: str) -> Decision:
        if not s.cloud_available:
            return Decision("edge", f"{why}; cloud unavailable → edge answer kept", score, threshold)
        return Decision("cloud", f"{why} → escalated", score, threshold)

    def _abstains(self, s: Signals) -> bool:
        return s.p_unanswerable >= self.abstain_threshold

    def _abstain(self, score: float, threshold: float, s: Signals) -> Decision:
        return Decision("abstain", f"p(unanswerable) {s.p_unanswerable:.2f} ≥ {self.abstain_threshold:.2f} → abstained",
                        score, threshold)


class EdgePolicy(Policy):
    """The edge answers alone: its answer, or an abstention when the evidence says unanswerable."""

    name = "edge"
    uses_cloud = False

    def score(self, s: Signals) -> float:
        return s.p_correct

    def route(self, score: float, threshold: float, s: Signals) -> Decision:
        if self._abstains(s):
            return self._abstain(score, threshold, s)
        return Decision("edge", "edge policy: never escalates", score, threshold)


class CloudPolicy(Policy):
    """Always the cloud (retrieval stays on the edge)."""

    name = "cloud"

    def score(self, s: Signals) -> float:
        return s.p_correct

    def route(self, score: float, threshold: float, s: Signals) -> Decision:
        return self._escalate(score, threshold, s, "cloud policy: always escalates")


class CascadePolicy(Policy):
    """Abstain when the evidence says unanswerable, keep a confident edge answer, else escalate."""

    name = "cascade"

    def score(self, s: Signals) -> float:
        return s.p_correct

    def route(self, score: float, threshold: float, s: Signals) -> Decision:
        if self._abstains(s):
            return self._abstain(score, threshold, s)
        if score >= threshold:
            return Decision("edge", f"confidence {score:.2f} ≥ {threshold:.2f} → edge answer kept", score, threshold)
        return self._escalate(score, threshold, s, f"confidence {score:.2f} < {threshold:.2f}")


class LatencyPolicy(CascadePolicy):
    """The cascade, but escalate only when the predicted total fits the budget Tmax."""

    name = "latency"

    def route(self, score: float, threshold: float, s: Signals) -> Decision:
        d = super().route(score, threshold, s)
        if d.route != "cloud":
            return d
        if s.predicted_total_ms > s.budget_ms:
            return Decision("edge", f"confidence {score:.2f} < {threshold:.2f} but predicted {s.predicted_total_ms:.0f} ms "
                                    f"> budget {s.budget_ms:.0f} ms → edge answer kept", score, threshold, over_budget=True)
        return Decision("cloud", f"confidence {score:.2f} < {threshold:.2f}; predicted {s.predicted_total_ms:.0f} ms "
                                 f"within budget {s.budget_ms:.0f} ms → escalated", score, threshold)


class LearnedPolicy(Policy):
    """A logistic regression over all features predicts whether escalating improves the answer."""

    name = "learned"

    def score(self, s: Signals) -> float:
        return s.p_gain

    def route(self, score: float, threshold: float, s: Signals) -> Decision:
        if self._abstains(s):
            return self._abstain(score, threshold, s)
        if score >= threshold:
            return self._escalate(score, threshold, s, f"p(cloud better) {score:.2f} ≥ {threshold:.2f}")
        return Decision("edge", f"p(cloud better) {score:.2f} < {threshold:.2f} → edge answer kept", score, threshold)


REGISTRY: dict[str, type[Policy]] = {p.name: p for p in (EdgePolicy, CloudPolicy, CascadePolicy, LatencyPolicy, LearnedPolicy)}


def policy_class(name: str) -> type[Policy]:
    """:raises PipelineError: unknown name (the message lists the valid ones)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise PipelineError(f"unknown policy {name!r} — choose one of: {', '.join(REGISTRY)}") from None
