"""Hand-made readings, records and calibrations for the routing tests (no model runs)."""

from __future__ import annotations

import math
from typing import Any

from pipelines.calibration import AnswerModel, Calibration, LogisticModel
from reading.passages import PassageReading, PassageSignals

PASSAGE = "Zorvath Island is a volcanic island. Its capital is Miret, a harbour town."
QUESTION = "What is the capital of Zorvath Island?"


def reading(answer: str, p_yes: float = 0.9, p_verify: float = 0.8, passages: int = 1) -> PassageReading:
    """A reading whose chosen passage (the first) answered ``answer`` with ``p_yes``; the others say nothing."""
    first = PassageSignals(p_yes, answer, answer, (-0.1, -0.2) if answer else (), -3.0, bool(answer) and answer in PASSAGE)
    rest = [PassageSignals(0.1, "", "", (), -1.0, False) for _ in range(passages - 1)]
    return PassageReading((first, *rest), 0, p_verify if answer else 0.5)


def constant(p: float) -> LogisticModel:
    """A model that says ``p`` whatever the signals."""
    return LogisticModel((), (), math.log(p / (1 - p)), (), ())


def on(signal: str, weight: float = 4.0, bias: float = 0.0) -> LogisticModel:
    """A model of one signal: p = logistic(bias + weight * signal) (signals are log-odds, so 0 = even)."""
    return LogisticModel((signal,), (weight,), bias, (0.0,), (1.0,))


def calibration(edge: AnswerModel | None = None, escalate: LogisticModel | None = None, escalate_threshold: float = 0.5,
                cloud: AnswerModel | None = None, cloud_edge: AnswerModel | None = None) -> Calibration:
    """A calibration whose models read the p(yes) of each tier by default (high p(yes): answer)."""
    edge = edge or AnswerModel(on("edge.p_yes_max"), constant(0.9), 0.5)
    cloud = cloud or AnswerModel(on("cloud.p_yes_max"), constant(0.9), 0.5)
    return Calibration(edge, escalate or constant(0.5), escalate_threshold, cloud, cloud_edge or cloud,
                       metrics={"n": 100}, provenance={"test": True})


def record(i: int, has_answer: bool, edge_answer: str, cloud_answer: str, edge_p: float = 0.5,
           cloud_p: float = 0.9) -> dict[str, Any]:
    """One recorded question (see eval/records.py), read on both tiers with these answers and p(yes)."""
    return {
        "id": f"q{i}", "question": QUESTION, "passages": [PASSAGE], "passage_ids": ["p0"],
        "answers": ["Miret"] if has_answer else [""], "has_answer": has_answer, "retrieval_ms": 30.0,
        "passage_scores": [{"fused": 0.8, "dense": 0.6, "sparse": 0.5}],
        "edge": {"answer": edge_answer, "reading": reading(edge_answer, edge_p).to_json(), "total_ms": 2000.0},
        "cloud": {"answer": cloud_answer, "confidence": 0.9, "p_answerable": cloud_p,
                  "reading": reading(cloud_answer, cloud_p).to_json(), "timings": {"network": 40.0, "cloud": 700.0},
                  "bytes_up": 1500, "bytes_down": 400, "usage": {"completion_tokens": 3}, "total_ms": 800.0},
    }


# What the edge's answer, abstaining and escalating are worth under each forced route (p answerable, quality,
# escalate). Under "cloud" the edge's own choice (when the cloud fails) is its answer: 0.8 * 0.9 over 1 - 0.8.
# Under "cloud_or_nothing" the edge would say "no answer" (abstaining 0.9 against answering 0.09), yet
# escalating (0.99) is worth more still.
_ROUTES = {"edge": (0.95, 0.95, 0.10), "cloud": (0.8, 0.9, 0.95), "abstain": (0.02, 0.5, 0.30),
           "cloud_or_nothing": (0.1, 0.9, 0.99)}


def forced(route: str, cloud_keeps: bool = True) -> Calibration:
    """A calibration of constant models under which the cascade takes ``route`` for every question
    ("edge", "cloud", "cloud_or_nothing" or "abstain"); the cloud's answer stands when its passage states it (p(yes) over 0.5)
    and it is a span of the passage (or never, ``cloud_keeps=False``)."""
    p, q, esc = _ROUTES[route]
    stated_span = LogisticModel(("cloud.p_yes_max", "cloud.is_span"), (4.0, 6.0), -8.0, (0.0, 0.0), (1.0, 1.0))
    keep = AnswerModel(stated_span, constant(0.99), 0.5 if cloud_keeps else 1.0)
    return Calibration(AnswerModel(constant(p), constant(q), 0.5), constant(esc), 0.5, keep, keep,
                       metrics={"n": 100}, provenance={"test": True})
