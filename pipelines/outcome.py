"""settle: what a routing decision comes to, once the readings it asked for are in — the one outcome step
of the live cascade (:meth:`pipelines.cascade.Cascade.answer`) and of the evaluation's replay of recorded
readings (:func:`eval.replay.route_records`).

    decision ─ edge ─────────────────────────────────► the edge's answer
             ─ abstain ──────────────────────────────► no answer
             ─ cloud ─┬─ a reading ─► keep / drop ──► the cloud's answer, or no answer
                      └─ an error ──► the edge's own choice (its answer, or no answer), degraded

It is pure: the calls (the cloud, the edge reading after a failed cloud call), the circuit breaker and the
latency model's observations stay with the caller, which hands the outcome what they returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipelines.calibration import Calibration, Valued
from pipelines.policies import Decision, Signals
from pipelines.signals import keep_cloud_answer
from reading.passages import PassageReading
from reading.signals import PassageScore


@dataclass(frozen=True)
class EdgeRead:
    """What the edge read, as the outcome step needs it.

    :param answer: the edge model's answer ('' = it found none).
    :param signals: its signals (the cascade's keep / drop of a cloud answer reads them with the cloud's).
    :param own: what the fitted models say of answering and abstaining on this reading.
    """

    answer: str
    signals: Mapping[str, float]
    own: Valued


@dataclass(frozen=True)
class Outcome:
    """A question's answer after its decision.

    :param tier: edge, cloud or abstain (who gave what the user sees).
    :param answer: '' = no answer.
    :param confidence: the expected F1 of what is returned.
    :param reason: the decision's reason, and what became of a failed cloud call.
    :param degraded: the cloud was asked and failed: the edge decided alone.
    """

    tier: str
    answer: str
    confidence: float
    reason: str
    degraded: bool = False


def settle(decision: Decision, signals: Signals, edge: EdgeRead | None, cloud: PassageReading | BaseException | None,
           calibration: Calibration, question: str, scores: Sequence[PassageScore], note: str = "") -> Outcome:
    """The outcome of ``decision``.

    :param edge: the edge's reading, or None when the edge did not read the question (the cloud policy, a
        redirection, an edge that could not be reached after a failed cloud call).
    :param cloud: the cloud's reading, the error of a failed call, or None when no call was made.
    :param scores: the retrieved passages' scores (the keep / drop of a cloud answer reads them).
    :param note: what the caller adds to the reason of a failed call (e.g. that no edge could read it after).
    """
    if decision.route == "abstain":
        return Outcome("abstain", "", signals.abstain_value, decision.reason)
    if decision.route != "cloud":
        if edge is None:
            raise ValueError("an edge decision without an edge reading")
        return Outcome("edge", edge.answer, signals.answer_value, decision.reason)
    if isinstance(cloud, PassageReading):
        answer, valued = keep_cloud_answer(calibration, question, scores, cloud,
                                           edge.signals if edge is not None else None, edge.answer if edge else "")
        return Outcome("cloud", answer, valued.answer if answer else valued.abstain, decision.reason)
    reason = f"{decision.reason}; cloud failed ({short_error(cloud)})" if cloud is not None else decision.reason
    reason += note
    if edge is not None and edge.answer and calibration.edge.stands(edge.own):  # the edge's own choice
        return Outcome("edge", edge.answer, edge.own.answer, reason + " → edge answer, degraded", True)
    confidence = edge.own.abstain if edge is not None else 0.0  # no edge reading: nothing to fall back on
    return Outcome("abstain", "", confidence, reason + " → no answer, degraded", True)


def short_error(exc: BaseException | None) -> str:
    """An error's first line, at most 160 characters (its type's name when it has no message)."""
    if exc is None:
        return "no reply"
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160] or type(exc).__name__
