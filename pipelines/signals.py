"""The signals of the cloud's keep / drop, and the decision itself: the cloud's reading and the
retrieval scores, and in the cascade the edge's reading and the two answers' agreement beside them.

The live cascade (:mod:`pipelines.cascade`) and the replay of recorded answers (:mod:`eval.replay`)
both decide here, from the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edge.features import edge_features, tier_signals
from pipelines.calibration import Calibration, Valued
from reading.passages import PassageReading
from reading.signals import PassageScore, agreement, retrieval_signals

__all__ = ["PassageReading", "PassageScore", "cloud_signals", "edge_signals", "keep_cloud_answer", "scores_from_json"]


def scores_from_json(items: Sequence[Mapping[str, float]]) -> list[PassageScore]:
    """Per-passage retrieval scores as a record keeps them ({fused, dense, sparse})."""
    return [PassageScore(float(x["fused"]), float(x["dense"]), float(x["sparse"])) for x in items]


def edge_signals(question: str, scores: Sequence[PassageScore], reading: PassageReading) -> dict[str, float]:
    """Retrieval + ``edge.*`` signals of an edge reading (what the live edge computes as it reads)."""
    return edge_features(question, scores, reading)


def cloud_signals(question: str, scores: Sequence[PassageScore], cloud: PassageReading,
                  edge_features: Mapping[str, float] | None = None, edge_answer: str = "") -> dict[str, float]:
    """Retrieval + ``cloud.*`` signals; with the edge's features, also its ``edge.*`` signals and
    ``agree_edge_cloud`` (token F1 of the two answers, 1 when both say "no answer").

    ``scores`` are those of the passages sent up, in order (the cloud reads each of them).
    """
    out = {**retrieval_signals(scores), **tier_signals("cloud", question, cloud, scores)}
    if edge_features is not None:
        out |= {k: v for k, v in edge_features.items() if k.startswith("edge.")}
        out["agree_edge_cloud"] = agreement(edge_answer, cloud.answer)
    return out


def keep_cloud_answer(calibration: Calibration, question: str, scores: Sequence[PassageScore], cloud: PassageReading,
                      edge_features: Mapping[str, float] | None = None, edge_answer: str = "") -> tuple[str, Valued]:
    """The cloud's answer if it stands, else '' — by the cascade's keep / drop model when the edge read
    the question too (``edge_features``), else by the cloud-only one; and what the model said.

    :raises KeyError: a signal the model reads is missing (a calibration of other signals).
    """
    model = calibration.cloud_model(with_edge=edge_features is not None)
    valued = model.value(cloud_signals(question, scores, cloud, edge_features, edge_answer))
    keep = bool(cloud.answer) and model.stands(valued)
    return (cloud.answer if keep else ""), valued
