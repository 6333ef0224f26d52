"""Routing policies: a tiny ABC and a name -> class registry.

Each policy turns what the fitted models say of one question (:class:`Signals`: the expected F1 of
answering on the edge, of abstaining, of escalating) into a score in [0, 1] and routes on it:
answer on the edge, escalate to the cloud, or abstain on the edge (answer "" with no cloud call).
Thresholds come from the calibration file (`make calibrate`), never typed in.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from pipelines.errors import PipelineError

ROUTES = ("edge", "cloud", "abstain", "cache")
# The evaluation's sweep escalates every question at a threshold just above 1.
THRESHOLD_MAX = 1.0 + 1e-9


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


def gain_score(value: Any, alternative: Any) -> Any:
    """What ``value`` gains over ``alternative`` (both expected F1, so the gain runs from -1 to 1) mapped to
    [0, 1]: the better bet above 0.5. The one formula of every answer and escalation score, live and in
    the fitting (numbers or numpy arrays)."""
    return (1.0 + value - alternative) / 2.0


@dataclass(frozen=True)
class Signals:
    """What a policy knows about one question after the edge read it (expected F1 of each action).

    :param answer_value: expected F1 if the edge's answer stands (p(answerable) x its expected F1).
    :param abstain_value: expected F1 if the edge says "no answer" (p(unanswerable)).
    :param escalate_value: expected F1 of the cloud's final outcome if escalated.
    :param predicted_total_ms: predicted end-to-end time if escalated.
    :param budget_ms: the latency budget Tmax.
    :param cloud_available: a cloud is configured and its circuit breaker lets calls through.
    """

    answer_value: float
    abstain_value: float
    escalate_value: float
    predicted_total_ms: float
    budget_ms: float
    cloud_available: bool = True

    @property
    def answer_score(self) -> float:
        """What the edge's answer gains over "no answer" (expected F1, from -1 to 1) mapped to [0, 1]:
        answering is the better bet above 0.5."""
        return float(gain_score(self.answer_value, self.abstain_value))

    @property
    def escalate_score(self) -> float:
        """What escalating gains over the edge's better option, mapped to [0, 1]: escalating gains above
        0.5. A gain, not a ratio: under a cap on cloud calls the questions worth escalating are those that
        gain the most F1 each."""
        return float(gain_score(self.escalate_value, max(self.answer_value, self.abstain_value)))


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
    :param answer_threshold: the edge answers (rather than abstain) when its answer score
        (:attr:`Signals.answer_score`) is at least this (policies that answer on the edge).
    """

    name: ClassVar[str]
    uses_cloud: ClassVar[bool] = True

    def __init__(self, threshold: float = 0.5, answer_threshold: float = 0.5) -> None:
        # Up to THRESHOLD_MAX: the evaluation's sweep escalates every question just above 1. What users
        # type is checked against [0, 1] where it enters (pipelines.ask.check_ask_options).
        self.threshold = check_threshold(threshold, upper=THRESHOLD_MAX)
        self.answer_threshold = check_threshold(answer_threshold, "answer threshold")

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

    def _on_edge(self, score: float, threshold: float, s: Signals, why: str = "", answer_at: float | None = None) -> Decision:
        """The edge's own choice: its answer when that is the better bet (its answer score at least
        ``answer_at``, default :attr:`answer_threshold`), else "no answer"."""
        answer = s.answer_score
        at = self.answer_threshold if answer_at is None else answer_at
        lead = f"{why}; " if why else ""
        if answer >= at:
            return Decision("edge", f"{lead}answer {answer:.2f} ≥ {at:.2f} → edge answer kept", score, threshold)
        return Decision("abstain", f"{lead}answer {answer:.2f} < {at:.2f} → abstained", score, threshold)


class EdgePolicy(Policy):
    """The edge answers alone: its answer, or "no answer" when abstaining is the better bet."""

    name = "edge"
    uses_cloud = False

    def score(self, s: Signals) -> float:
        return s.answer_score

    def route(self, score: float, threshold: float, s: Signals) -> Decision:
        # Its own threshold is the answer threshold (--threshold sets it).
        return self._on_edge(score, threshold, s, "edge policy: never escalates", answer_at=threshold)


class CloudPolicy(Policy):
    """Always the cloud (retrieval stays on the edge)."""

    name = "cloud"

    def score(self, s: Signals) -> float:
        return s.escalate_score

    def route(self, score: float, threshold: float, s: Signals) -> Decision:
        if not s.cloud_available:
            return self._on_edge(score, threshold, s, "cloud policy; cloud unavailable")
        return self._escalate(score, threshold, s, "cloud policy: always escalates")


class CascadePolicy(Policy):
    """Escalate when what the cloud's expected F1 gains over the edge's better option clears the calibrated
    threshold (chosen under the cloud-call cap); else the edge answers or abstains, whichever is worth more."""

    name = "cascade"

    def score(self, s: Signals) -> float:
        return s.escalate_score

    def route(self, score: float, threshold: float, s: Signals) -> Decision:
        if score >= threshold and s.cloud_available:
            return Decision("cloud", f"cloud {score:.2f} ≥ {threshold:.2f} → escalated", score, threshold)
        why = f"cloud {score:.2f} < {threshold:.2f}" if score < threshold else f"cloud {score:.2f}; cloud unavailable"
        return self._on_edge(score, threshold, s, why)


class LatencyPolicy(CascadePolicy):
    """The cascade, but escalate only when the predicted total fits the budget Tmax."""

    name = "latency"

    def route(self, score: float, threshold: float, s: Signals) -> Decision:
        d = super().route(score, threshold, s)
        if d.route != "cloud":
            return d
        if s.predicted_total_ms > s.budget_ms:
            edge = self._on_edge(score, threshold, s, f"cloud {score:.2f} ≥ {threshold:.2f} but predicted "
                                                      f"{s.predicted_total_ms:.0f} ms > budget {s.budget_ms:.0f} ms")
            return Decision(edge.route, edge.reason, score, threshold, over_budget=True)
        return Decision("cloud", f"cloud {score:.2f} ≥ {threshold:.2f}; predicted {s.predicted_total_ms:.0f} ms "
                                 f"within budget {s.budget_ms:.0f} ms → escalated", score, threshold)


class LearnedPolicy(CascadePolicy):
    """The cascade without a cloud-call cap: escalate whenever the cloud's expected F1 beats the edge's
    best option (threshold 0.5 on the same score)."""

    name = "learned"


REGISTRY: dict[str, type[Policy]] = {p.name: p for p in (EdgePolicy, CloudPolicy, CascadePolicy, LatencyPolicy, LearnedPolicy)}


def policy_class(name: str) -> type[Policy]:
    """:raises PipelineError: unknown name (the message lists the valid ones)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise PipelineError(f"unknown policy {name!r} — choose one of: {', '.join(REGISTRY)}") from None
