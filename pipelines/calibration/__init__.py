"""The fitted answer/abstain models of every routing decision: fitted by `make calibrate`
(eval/calibrate.py) on the calibration split, read on the edge with dot products.

One model per decision, each over the signals it can see (:mod:`reading.signals`):

- ``edge`` — the edge's own reading and the retrieval scores: p(the question has an answer) and the
  expected F1 of the edge's answer when it has one. Answering is worth p x F1, abstaining 1 - p.
- ``escalate`` — the same signals: the expected F1 of the cloud's final outcome (its kept answer, or
  its "no answer") if the question is escalated.
- ``cloud`` — the cloud's reading and the retrieval scores (the cloud-only policy: no edge reading):
  keep the cloud's answer, or drop it to "no answer".
- ``cloud_edge`` — both tiers' readings and their agreement: the cascade's keep / drop.

The edge's signals depend on how much of its reading it does (:class:`reading.passages.ReadPlan`:
every passage answered, or only the best one; how many passages are read), so the plan the models
were fitted for is part of the file, and the edge reads that way (:func:`read_plan`).

Each threshold was chosen out of fold on the calibration split by expected F1 (the cascade's under
its cloud-call cap), never on the questions a report shows.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError
from pipelines.policies import Policy, gain_score, policy_class
from reading.passages import FULL, ReadPlan

DEFAULT_CALIBRATION = Path(__file__).with_name("default.json")
# 1 in 4 dev-a questions (by a hash of the id) form the calibration split; evaluation on dev-a
# never uses them.
_SPLIT_BYTE = 64


def in_calibration_split(question_id: str) -> bool:
    """Is this question in the fixed calibration split (a quarter of any file, by id hash)?"""
    return hashlib.sha1(question_id.encode()).digest()[0] < _SPLIT_BYTE


@dataclass(frozen=True)
class LogisticModel:
    """A fitted logistic regression over standardized, named signals.

    :param features: the signals it reads, in order.
    """

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]

    def predict(self, signals: Mapping[str, float]) -> float:
        """P(y = 1) for one question's signals.

        :raises KeyError: a signal this model reads is missing (never taken as 0).
        """
        z = self.bias
        for name, w, m, s in zip(self.features, self.weights, self.mean, self.scale, strict=True):
            z += w * (signals[name] - m) / (s or 1.0)
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def to_json(self) -> dict[str, Any]:
        return {"features": list(self.features), "weights": list(self.weights), "bias": self.bias,
                "mean": list(self.mean), "scale": list(self.scale)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LogisticModel:
        """:raises ValueError, KeyError, TypeError: not the shape :meth:`to_json` writes."""
        features = tuple(str(f) for f in d["features"])
        weights, mean, scale = (tuple(_finite(x) for x in d[k]) for k in ("weights", "mean", "scale"))
        if not len(features) == len(weights) == len(mean) == len(scale):
            raise ValueError("features, weights, mean and scale differ in length")
        return cls(features, weights, _finite(d["bias"]), mean, scale)


def _finite(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        raise ValueError(f"{x!r} is not a finite number")
    return float(x)


def _threshold(threshold: Any, name: str) -> float:
    t = _finite(threshold)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"threshold {name!r} is {t}, not in [0, 1]")
    return t


@dataclass(frozen=True)
class Valued:
    """What answering and abstaining are worth for one question (expected F1).

    :param p_answerable: p(the question has an answer in the passages).
    :param quality: the answer's expected F1 when the question has one.
    """

    p_answerable: float
    quality: float

    @property
    def answer(self) -> float:
        return self.p_answerable * self.quality

    @property
    def abstain(self) -> float:
        return 1.0 - self.p_answerable

    @property
    def score(self) -> float:
        """(1 + answer - abstain) / 2, in [0, 1]: what answering gains over "no answer", in expected F1,
        mapped to [0, 1]; answering is the better bet above 0.5."""
        return float(gain_score(self.answer, self.abstain))


@dataclass(frozen=True)
class AnswerModel:
    """One answer/abstain decision: its two models and its threshold on :attr:`Valued.score`."""

    answerable: LogisticModel
    quality: LogisticModel
    threshold: float

    def value(self, signals: Mapping[str, float]) -> Valued:
        """:raises KeyError: a signal the models read is missing."""
        return Valued(self.answerable.predict(signals), self.quality.predict(signals))

    def stands(self, valued: Valued) -> bool:
        """Does the answer stand (else "no answer"), given what this model said of it?"""
        return valued.score >= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {"answerable": self.answerable.to_json(), "quality": self.quality.to_json(), "threshold": self.threshold}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], name: str) -> AnswerModel:
        return cls(LogisticModel.from_json(d["answerable"]), LogisticModel.from_json(d["quality"]),
                   _threshold(d["threshold"], name))


DECISIONS = ("edge", "cloud", "cloud_edge")


@dataclass(frozen=True)
class Calibration:
    """Every routing decision's fitted models and thresholds (see the module).

    :param escalate_threshold: the cascade escalates when what escalating gains over the edge's best
        option, mapped to [0, 1] (:attr:`pipelines.policies.Signals.escalate_score`), is at least this
        (chosen under the cloud-call cap).
    :param read_plan: how the edge reads (the plan its signals were fitted for).
    :param cloud_read_plan: how the cloud reads (sent with every request: the cloud's signals were fitted
        for it too).
    """

    edge: AnswerModel
    escalate: LogisticModel
    escalate_threshold: float
    cloud: AnswerModel
    cloud_edge: AnswerModel
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    read_plan: ReadPlan = FULL
    cloud_read_plan: ReadPlan = FULL

    def threshold(self, policy: str) -> float:
        """The calibrated threshold of a policy: the edge's answer score, the cascade's escalation score
        (the learned policy: 0.5, no cloud-call cap; the cloud policy has no choice to make).

        :raises PipelineError: unknown policy.
        """
        policy_class(policy)
        return {"edge": self.edge.threshold, "cascade": self.escalate_threshold,
                "latency": self.escalate_threshold}.get(policy, 0.5)

    def policy(self, name: str, threshold: float | None = None) -> Policy:
        """Policy ``name`` with its calibrated threshold (or ``threshold``); the edge answers rather than
        abstains at the edge model's calibrated threshold.

        :raises PipelineError: unknown policy (the message lists the valid ones).
        """
        return policy_class(name)(threshold=self.threshold(name) if threshold is None else threshold,
                                  answer_threshold=self.edge.threshold)

    def edge_values(self, signals: Mapping[str, float]) -> tuple[Valued, float]:
        """What the edge's reading says: the values of answering and abstaining, and the expected F1 if
        escalated.

        :raises KeyError: a signal the models read is missing.
        """
        return self.edge.value(signals), self.escalate.predict(signals)

    def cloud_model(self, with_edge: bool) -> AnswerModel:
        """The cloud's keep / drop: with the edge's reading beside the cloud's (the cascade), or alone."""
        return self.cloud_edge if with_edge else self.cloud

    def to_json(self) -> dict[str, Any]:
        return {"edge": self.edge.to_json(), "escalate": {"model": self.escalate.to_json(),
                                                           "threshold": self.escalate_threshold},
                "cloud": self.cloud.to_json(), "cloud_edge": self.cloud_edge.to_json(),
                "read_plan": self.read_plan.to_json(), "cloud_read_plan": self.cloud_read_plan.to_json(), "metrics": self.metrics, "provenance": self.provenance}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Calibration:
        """:raises ValueError, KeyError, TypeError: not the shape :meth:`to_json` writes."""
        return cls(AnswerModel.from_json(d["edge"], "edge"), LogisticModel.from_json(d["escalate"]["model"]),
                   _threshold(d["escalate"]["threshold"], "escalate"), AnswerModel.from_json(d["cloud"], "cloud"),
                   AnswerModel.from_json(d["cloud_edge"], "cloud_edge"), dict(d.get("metrics") or {}),
                   dict(d.get("provenance") or {}),
                   # A file written before read plans was fitted on the full reading.
                   ReadPlan.from_json(d["read_plan"]) if "read_plan" in d else FULL,
                   _cloud_plan(d["cloud_read_plan"]) if "cloud_read_plan" in d else FULL)

    @classmethod
    def load(cls, path: Path | None = None) -> Calibration:
        """:raises ConfigError: missing or malformed file."""
        path = path or DEFAULT_CALIBRATION
        try:
            return cls.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"calibration file {path} not found — run `make calibrate` or fix ECQA_CALIBRATION_PATH") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"calibration file {path} is malformed ({exc}) — regenerate it with `make calibrate`") from None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")


def _cloud_plan(d: Any) -> ReadPlan:
    plan = ReadPlan.from_json(d)
    if plan.gap is not None:
        raise ValueError("the cloud reads every passage it is sent: its read plan has no gap")
    return plan


def read_plan(path: Path | None = None) -> ReadPlan:
    """The edge's read plan of a calibration file (the default one when ``path`` is None).

    :raises ConfigError: missing or malformed file.
    """
    return Calibration.load(path).read_plan


def cloud_read_plan(path: Path | None = None) -> ReadPlan:
    """The cloud's read plan of a calibration file (sent with every request to the gateway).

    :raises ConfigError: missing or malformed file.
    """
    return Calibration.load(path).cloud_read_plan
