"""CascadeRouter: the one routing step — calibrated signals and the latency model to a typed decision.

The live cascade (:meth:`pipelines.cascade.Cascade.answer`) and the evaluation's replay of
recorded answers (:func:`eval.replay.route_records`) both route through :meth:`CascadeRouter.route`,
so a policy decides the same way whether a question is answered or replayed. What happens after
the decision is :func:`pipelines.outcome.settle`, shared by both too; the calls it settles are each
caller's own I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipelines.calibration import Valued
from pipelines.latency import LatencyModel
from pipelines.policies import Decision, Policy, Signals

# A question the edge model did not read (the cloud policy escalates before it runs): neither of the
# edge's options is worth anything, the cloud's outcome is all there is.
NO_EDGE_VALUES = (0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Routed:
    """A policy's decision, the signals it was made on, and the request size the latency model was given."""

    decision: Decision
    signals: Signals
    bytes_up: int = 0
    fresh_chars: int = 0  # the passage characters the cloud had not read, as the prediction assumed


class CascadeRouter:
    """Routes with the latency model it is given (its EWMAs are updated by the callers' observations).

    :param latency: the online latency model: T_total = T_edge + S/B + RTT + T_cloud.
    """

    def __init__(self, latency: LatencyModel) -> None:
        self.latency = latency

    def route(self, policy: Policy, values: tuple[Valued, float] | None, edge_ms: float, bytes_up: int,
              budget_ms: float, cloud_available: bool, *, fresh_chars: int = 0, breaker_open: bool = False,
              redirected: str | None = None) -> Routed:
        """Decide for one question.

        :param values: what the fitted models say of the edge's reading (:meth:`Calibration.edge_values`:
            the values of answering and abstaining, the expected F1 if escalated), or None when the edge
            model did not read the question.
        :param edge_ms: what the edge has spent so far (the T_edge of the prediction).
        :param bytes_up: the size of the cloud request if escalated (the S of S/B).
        :param fresh_chars: the characters of its passages the cloud has not read (their prefill is part of
            T_cloud: :meth:`LatencyModel.fresh_chars`).
        :param breaker_open: the cloud is configured but its circuit breaker lets no call through (the
            decision's reason says so).
        :param redirected: why no edge could read the question (the dispatcher's overflow): it goes to the
            cloud, whatever the policy would say of a reading it does not have.
        """
        predicted = self.latency.predict(edge_ms, bytes_up, fresh_chars=fresh_chars).total_ms
        edge = NO_EDGE_VALUES if values is None else (values[0].answer, values[0].abstain, values[1])
        signals = Signals(*edge, predicted, budget_ms, cloud_available)
        if redirected is not None:
            return Routed(Decision("cloud", f"{redirected} → redirected to the cloud", 0.0, 0.0, predicted > budget_ms),
                          signals, bytes_up, fresh_chars)
        decision = policy.decide(signals)
        if breaker_open and policy.uses_cloud:
            decision = replace(decision, reason=decision.reason + " (circuit breaker open)")
        return Routed(decision, signals, bytes_up, fresh_chars)
