"""Calibrated routing models: fitted by `make calibrate` (eval/calibrate.py), loaded on the edge.

The file holds three logistic regressions over :data:`edge.features.FEATURES` (standardized):
``correct`` (the edge answer is right: F1 >= 0.5, or both say "no answer"), ``unanswerable``
(the collection holds no answer) and ``gain`` (the cloud's answer scores higher than the
edge's), the policy thresholds chosen on the calibration split, and the held-out quality of
each model (cross-validated AUROC and expected calibration error).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.features import FEATURES, logistic
from pipelines.errors import ConfigError, PipelineError
from pipelines.policies import ABSTAIN_OFF, check_threshold, policy_class

if TYPE_CHECKING:
    from pipelines.policies import Policy

DEFAULT_CALIBRATION = Path(__file__).with_name("default.json")
# 1 in 4 dev-a questions (by a hash of the id) form the calibration split; evaluation on dev-a
# never uses them.
_SPLIT_BYTE = 64


def in_calibration_split(question_id: str) -> bool:
    """Is this question in the fixed calibration split (a quarter of any file, by id hash)?"""
    return hashlib.sha1(question_id.encode()).digest()[0] < _SPLIT_BYTE


@dataclass(frozen=True)
class LogisticModel:
    """A fitted logistic regression over standardized features."""

    weights: dict[str, float]
    bias: float
    mean: dict[str, float]
    scale: dict[str, float]

    def predict(self, features: dict[str, float]) -> float:
        return logistic(self.weights, self.bias, features, self.mean, self.scale)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogisticModel:
        return cls(dict(d["weights"]), float(d["bias"]), dict(d["mean"]), dict(d["scale"]))


@dataclass(frozen=True)
class Calibration:
    """Models and thresholds for routing, as fitted on the calibration split."""

    correct: LogisticModel
    unanswerable: LogisticModel
    gain: LogisticModel
    thresholds: dict[str, float]
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def scores(self, features: dict[str, float]) -> tuple[float, float, float]:
        """p(edge answer correct), p(question unanswerable), p(cloud answer beats the edge's)."""
        return self.correct.predict(features), self.unanswerable.predict(features), self.gain.predict(features)

    def policy(self, name: str, threshold: float | None = None) -> Policy:
        """Policy ``name`` with its calibrated threshold (or ``threshold``) and its calibrated abstain
        gate (``<name>_abstain``, else the shared ``abstain``).

        :raises PipelineError: unknown policy (the message lists the valid ones).
        """
        th = self.thresholds
        return policy_class(name)(threshold=th.get(name, 0.5) if threshold is None else threshold,
                                  abstain_threshold=th.get(f"{name}_abstain", th.get("abstain", 1.01)))

    @classmethod
    def load(cls, path: Path | None = None) -> Calibration:
        """:raises ConfigError: missing or malformed file."""
        path = path or DEFAULT_CALIBRATION
        try:
            d = json.loads(path.read_text())
            cal = cls(
                correct=LogisticModel.from_dict(d["models"]["correct"]),
                unanswerable=LogisticModel.from_dict(d["models"]["unanswerable"]),
                gain=LogisticModel.from_dict(d["models"]["gain"]),
                thresholds={k: float(v) for k, v in d["thresholds"].items()},
                metrics=d.get("metrics", {}),
                provenance=d.get("provenance", {}),
            )
        except FileNotFoundError:
            raise ConfigError(f"calibration file {path} not found — run `make calibrate` or fix ECQA_CALIBRATION_PATH") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"calibration file {path} is malformed ({exc}) — regenerate it with `make calibrate`") from None
        cal.check_thresholds(path)
        return cal

    def check_thresholds(self, path: Path | str = "") -> None:
        """:raises ConfigError: a threshold that is NaN, infinite or outside [0, 1] (the abstain gates: [0, 1.01])."""
        for name, value in self.thresholds.items():
            try:
                gate = name == "abstain" or name.endswith("_abstain")  # a policy's own gate (edge_abstain)
                check_threshold(value, f"threshold {name!r}", upper=ABSTAIN_OFF if gate else 1.0)
            except PipelineError as exc:
                raise ConfigError(f"calibration file {path}: {str(exc).split(' — ')[0]} — regenerate it with "
                                  "`make calibrate`") from None
