from __future__ import annotations

import pytest

from pipelines.errors import PipelineError
from pipelines.latency import CircuitBreaker, Ewma, LatencyModel
from pipelines.policies import (
    REGISTRY,
    CascadePolicy,
    CloudPolicy,
    EdgePolicy,
    LatencyPolicy,
    LearnedPolicy,
    Signals,
    policy_class,
)


def sig(p_correct: float = 0.5, p_unans: float = 0.1, p_gain: float = 0.5, predicted: float = 1000.0,
        budget: float = 2000.0, cloud: bool = True) -> Signals:
    return Signals(p_correct, p_unans, p_gain, predicted, budget, cloud)


def test_registry_names_and_unknown_policy() -> None:
    assert list(REGISTRY) == ["edge", "cloud", "cascade", "latency", "learned"]
    assert policy_class("latency") is LatencyPolicy
    with pytest.raises(PipelineError, match="choose one of: edge, cloud, cascade, latency, learned"):
        policy_class("oracle")


def test_edge_never_escalates_cloud_always_does() -> None:
    assert EdgePolicy(0.5).decide(sig(p_correct=0.0, p_unans=0.99)).route == "edge"
    d = CloudPolicy(0.5).decide(sig(p_correct=1.0))
    assert d.route == "cloud" and "escalated" in d.reason
    assert CloudPolicy(0.5).decide(sig(cloud=False)).route == "edge"


@pytest.mark.parametrize(
    ("p_correct", "p_unans", "route"),
    [(0.9, 0.1, "edge"), (0.2, 0.1, "cloud"), (0.2, 0.95, "abstain"), (0.9, 0.95, "abstain"), (0.6, 0.79, "edge")],
)
def test_cascade_three_outcomes(p_correct: float, p_unans: float, route: str) -> None:
    d = CascadePolicy(threshold=0.6, abstain_threshold=0.8).decide(sig(p_correct=p_correct, p_unans=p_unans))
    assert d.route == route
    assert d.threshold == 0.6 and d.confidence == p_correct


def test_cascade_reason_reads_like_the_ui() -> None:
    d = CascadePolicy(0.6).decide(sig(p_correct=0.41))
    assert d.reason == "confidence 0.41 < 0.60 → escalated"


def test_latency_policy_escalates_only_within_budget() -> None:
    pol = LatencyPolicy(threshold=0.6, abstain_threshold=0.9)
    within = pol.decide(sig(p_correct=0.3, predicted=420.0, budget=600.0))
    assert within.route == "cloud" and "predicted 420 ms within budget 600 ms" in within.reason
    over = pol.decide(sig(p_correct=0.3, predicted=900.0, budget=600.0))
    assert over.route == "edge" and over.over_budget and "> budget 600 ms" in over.reason
    assert pol.decide(sig(p_correct=0.9, predicted=9000.0, budget=600.0)).route == "edge"


def test_learned_policy_routes_on_predicted_gain() -> None:
    pol = LearnedPolicy(threshold=0.55, abstain_threshold=0.9)
    assert pol.decide(sig(p_gain=0.7)).route == "cloud"
    assert pol.decide(sig(p_gain=0.3)).route == "edge"
    assert pol.decide(sig(p_gain=0.7, p_unans=0.95)).route == "abstain"
    assert pol.score(sig(p_gain=0.7)) == 0.7


def test_ewma_first_sample_then_weighted() -> None:
    e = Ewma(100.0, alpha=0.5)
    assert e.update(10.0) == 10.0
    assert e.update(30.0) == 20.0


def test_latency_model_prediction_terms() -> None:
    m = LatencyModel(rtt_ms=30.0, bandwidth_mbit=50.0, cloud_base_ms=500.0, cloud_ms_per_token=20.0, expected_tokens=5)
    p = m.predict(edge_ms=800.0, bytes_up=6250, bytes_down=0)
    assert p.transfer_ms == pytest.approx(1.0)  # 6250 B at 50 Mbit/s = 1 ms
    assert p.total_ms == pytest.approx(800 + 1 + 30 + 500 + 100)


def test_latency_model_learns_from_measurements() -> None:
    m = LatencyModel(rtt_ms=100.0, bandwidth_mbit=1.0)
    m.observe_cloud(network_ms=10.0, bytes_up=100, bytes_down=100, server_ms=300.0, completion_tokens=10, decode_ms=200.0)
    snap = m.snapshot()
    assert snap["rtt_ms"] == pytest.approx(10.0)
    assert snap["cloud_ms_per_token"] == pytest.approx(20.0) and snap["cloud_base_ms"] == pytest.approx(100.0)
    # a big payload: the part above the RTT is transfer time -> bandwidth
    m.observe_cloud(network_ms=10.0 + 80.0, bytes_up=500_000, bytes_down=0, server_ms=300.0, completion_tokens=10,
                    decode_ms=200.0)
    assert m.snapshot()["bandwidth_mbit"] == pytest.approx(500_000 * 8 / 0.080 / 1e6, rel=1e-6)
    m.observe_edge(1500.0)
    assert m.predict(None, 0).edge_ms == 1500.0


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_circuit_breaker_opens_probes_and_closes() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failures=2, reset_s=10.0, clock=clock)
    assert b.allow() and b.state == "closed"
    b.record(False)
    assert b.state == "closed"
    b.record(False)
    assert b.state == "open" and not b.allow()
    clock.t = 10.0
    assert b.state == "half-open"
    assert b.allow() and not b.allow()  # one probe at a time
    b.record(False)  # the probe failed: open again for another reset period
    assert b.state == "open" and not b.allow()
    clock.t = 20.0
    assert b.allow()
    b.record(True)
    assert b.state == "closed" and b.allow()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 2.0, -1.0, 1.0001, "0.5", None, True])
def test_a_threshold_outside_0_1_or_not_finite_is_refused(bad: object) -> None:
    """Defect #12.8: --threshold nan / 2 / -1 ran, and --json printed "threshold": NaN."""
    from pipelines.policies import check_threshold

    with pytest.raises(PipelineError) as exc:
        check_threshold(bad)
    msg = str(exc.value)
    assert "threshold" in msg and "from 0 to 1" in msg and " — " in msg and "\n" not in msg
    if bad != 1.0001:  # a policy also takes "above every score" (up to 1.01), as the evaluation's sweep does
        with pytest.raises(PipelineError, match="threshold"):
            CascadePolicy(threshold=bad)  # type: ignore[arg-type]


def test_thresholds_at_the_ends_of_the_range_are_kept() -> None:
    from pipelines.policies import ABSTAIN_OFF, check_threshold

    assert [check_threshold(v) for v in (0, 0.0, 0.25, 1)] == [0.0, 0.0, 0.25, 1.0]
    policy = CascadePolicy(threshold=1, abstain_threshold=ABSTAIN_OFF)  # 1.01: the "never abstain" gate
    assert (policy.threshold, policy.abstain_threshold) == (1.0, 1.01)
    assert CascadePolicy(threshold=1.0 + 1e-9).threshold > 1.0  # the sweep's "escalate everything"
    with pytest.raises(PipelineError, match="abstain threshold"):
        CascadePolicy(threshold=0.5, abstain_threshold=float("nan"))
