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


def sig(answer: float = 0.5, abstain: float = 0.1, escalate: float = 0.5, predicted: float = 1000.0,
        budget: float = 2000.0, cloud: bool = True) -> Signals:
    """Expected F1 of answering on the edge, of abstaining, of escalating."""
    return Signals(answer, abstain, escalate, predicted, budget, cloud)


def test_registry_names_and_unknown_policy() -> None:
    assert list(REGISTRY) == ["edge", "cloud", "cascade", "latency", "learned"]
    assert policy_class("latency") is LatencyPolicy
    with pytest.raises(PipelineError, match="choose one of: edge, cloud, cascade, latency, learned"):
        policy_class("oracle")


def test_scores_are_gains_in_expected_f1() -> None:
    s = sig(answer=0.3, abstain=0.1, escalate=0.6)
    assert s.answer_score == pytest.approx((1 + 0.3 - 0.1) / 2) and s.escalate_score == pytest.approx((1 + 0.6 - 0.3) / 2)
    assert sig(answer=0.0, abstain=0.0, escalate=1.0).escalate_score == 1.0  # the edge did not read: the cloud decides
    assert sig(answer=0.2, abstain=0.2).answer_score == 0.5  # a tie


def test_edge_never_escalates_and_abstains_where_abstaining_is_worth_more() -> None:
    assert EdgePolicy(0.5).decide(sig(answer=0.6, abstain=0.2)).route == "edge"
    d = EdgePolicy(0.5, answer_threshold=0.5).decide(sig(answer=0.1, abstain=0.8))
    assert d.route == "abstain" and d.reason == "edge policy: never escalates; answer 0.15 < 0.50 → abstained"
    # the edge policy's own threshold is its answer threshold (`--threshold`)
    assert EdgePolicy(0.1).decide(sig(answer=0.1, abstain=0.8)).route == "edge"


def test_cloud_always_escalates_unless_it_is_unavailable() -> None:
    d = CloudPolicy(0.5).decide(sig(answer=1.0, escalate=0.0))
    assert d.route == "cloud" and "escalated" in d.reason
    assert CloudPolicy(0.5).decide(sig(answer=0.6, abstain=0.2, cloud=False)).route == "edge"
    assert CloudPolicy(0.5).decide(sig(answer=0.1, abstain=0.8, cloud=False)).route == "abstain"


@pytest.mark.parametrize(
    ("answer", "abstain", "escalate", "route"),
    [(0.7, 0.1, 0.5, "edge"),  # the edge's answer is worth more than the cloud's outcome
     (0.2, 0.1, 0.6, "cloud"),  # the cloud's outcome is
     (0.05, 0.9, 0.6, "abstain"),  # "no answer" on the edge is worth more: as safe as the cloud would be
     (0.3, 0.3, 0.35, "edge")],  # under the threshold the edge keeps it, and answers (a tie goes to answering)
)
def test_cascade_three_outcomes(answer: float, abstain: float, escalate: float, route: str) -> None:
    d = CascadePolicy(threshold=0.55, answer_threshold=0.5).decide(sig(answer, abstain, escalate))
    assert d.route == route
    assert d.threshold == 0.55 and d.confidence == pytest.approx((1 + escalate - max(answer, abstain)) / 2)


def test_the_edge_saying_no_answer_still_escalates_when_the_cloud_is_worth_more() -> None:
    """Finding 6: the cascade abstained on the 0.5B model's evidence (64% of questions) before the 1.5B model
    saw them. "No answer" on the edge now stands only where it is worth as much as escalating."""
    edge_says_none = sig(answer=0.05, abstain=0.6, escalate=0.9)
    assert CascadePolicy(threshold=0.55).decide(edge_says_none).route == "cloud"
    assert CascadePolicy(threshold=0.55).decide(sig(answer=0.05, abstain=0.9, escalate=0.6)).route == "abstain"


def test_cascade_reason_reads_like_the_ui() -> None:
    d = CascadePolicy(0.6).decide(sig(answer=0.1, abstain=0.1, escalate=0.4))
    assert d.reason == "cloud 0.65 ≥ 0.60 → escalated"
    d = CascadePolicy(0.6).decide(sig(answer=0.7, abstain=0.1, escalate=0.4))
    assert d.reason == "cloud 0.35 < 0.60; answer 0.80 ≥ 0.50 → edge answer kept"


def test_latency_policy_escalates_only_within_budget() -> None:
    pol = LatencyPolicy(threshold=0.6, answer_threshold=0.5)
    within = pol.decide(sig(answer=0.2, escalate=0.8, predicted=420.0, budget=600.0))
    assert within.route == "cloud" and "predicted 420 ms within budget 600 ms" in within.reason
    over = pol.decide(sig(answer=0.2, escalate=0.8, predicted=900.0, budget=600.0))
    assert over.route == "edge" and over.over_budget and "> budget 600 ms" in over.reason
    assert pol.decide(sig(answer=0.9, escalate=0.2, predicted=9000.0, budget=600.0)).route == "edge"


def test_learned_policy_is_the_cascade_without_a_cloud_call_cap() -> None:
    pol = LearnedPolicy(threshold=0.5)
    assert pol.decide(sig(answer=0.3, abstain=0.1, escalate=0.31)).route == "cloud"
    assert pol.decide(sig(answer=0.3, abstain=0.1, escalate=0.29)).route == "edge"
    assert pol.score(sig(answer=0.3, escalate=0.3)) == pytest.approx(0.5)


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


def test_latency_model_counts_only_passages_the_cloud_has_not_read() -> None:
    """A passage sent before costs the cloud no prefill (it kept its state): the prediction's per-character term
    counts the new ones only, and what a call measured is split the same way."""
    m = LatencyModel(cloud_base_ms=1000.0, cloud_ms_per_token=0.0, cloud_ms_per_char=2.0)
    a, b = "A passage the cloud has not read.", "Another one, longer than the first passage."
    assert m.fresh_chars([a, b, a]) == len(a) + len(b)  # a text once, however often it comes
    assert m.predict(0.0, 0, fresh_chars=m.fresh_chars([a, b])).cloud_ms == pytest.approx(1000.0 + 2.0 * (len(a) + len(b)))
    m.observe_reply({"network": 5.0, "cloud": 1000.0 + 2.0 * len(a)}, 100, 100, {"completion_tokens": 4}, [a])
    assert m.snapshot()["cloud_base_ms"] == pytest.approx(1000.0)  # the new passage's prefill taken out
    assert m.fresh_chars([a, b]) == len(b)
    other = m.for_link(rtt_ms=80.0)  # another link, the same cloud: it has read the same passages
    assert other.fresh_chars([a, b]) == len(b) and other.snapshot()["cloud_ms_per_char"] == 2.0
    assert other.predict(0.0, 0, fresh_chars=100).cloud_ms == m.predict(0.0, 0, fresh_chars=100).cloud_ms


def test_the_cloud_term_learns_its_fixed_cost_and_its_cost_per_new_character_from_the_calls() -> None:
    """Seeded from a gateway whose start-up answer overstates both (its question and reply are longer than these),
    the line through the calls measured — new passages and read ones — comes to the cloud's own costs."""
    from pipelines.latency import CloudCost

    def truth(fresh: int) -> float:
        return 1300.0 + 1.1 * fresh

    m = LatencyModel(cloud_ms_per_token=0.0)
    m.seed_cloud(CloudCost(4600.0, 2000.0, 2070))
    assert m.predict(0.0, 0, fresh_chars=2070).cloud_ms == pytest.approx(4600.0)
    assert m.predict(0.0, 0).cloud_ms == pytest.approx(2000.0)
    for fresh in (1953, 1596, 2325, 0, 774, 0, 1200, 0, 640, 0, 1800, 0):  # the new characters of a session's questions
        m.observe_cloud(5.0, 1000, 400, truth(fresh), 4, fresh_chars=fresh)
    for fresh in (0, 1000, 2000):
        assert m.predict(0.0, 0, fresh_chars=fresh).cloud_ms == pytest.approx(truth(fresh), rel=0.05)


def test_a_line_keeps_its_slope_until_its_points_differ_in_x() -> None:
    from pipelines.latency import EwLine

    line = EwLine(600.0, 2.0)
    line.update(1000.0, 3000.0)  # the first point replaces the prior's level, not its slope
    assert (line.slope, line.intercept) == (2.0, 1000.0)
    line.update(1000.0, 2000.0)
    assert line.slope == 2.0 and line(1000.0) == pytest.approx(0.2 * 2000.0 + 0.8 * 3000.0)
    line.update(0.0, 100.0)
    assert line.slope > 0 and line(0.0) >= 0.0
    line.seed([(0.0, 500.0), (100.0, 400.0)])  # never a negative slope
    assert line.slope == 0.0 and line.intercept == pytest.approx(450.0)


def test_the_edge_forgets_the_oldest_passages_it_sent() -> None:
    from pipelines.latency import SentPassages

    sent = SentPassages(capacity=2)
    sent.add(["one", "two"])
    sent.add(["one", "three"])  # "one" is recent again; "two" is the oldest
    assert sent.fresh_chars(["one", "two", "three"]) == len("two")


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
    if bad != 1.0001:  # a policy also takes "above every score" (just over 1), as the evaluation's sweep does
        with pytest.raises(PipelineError, match="threshold"):
            CascadePolicy(threshold=bad)  # type: ignore[arg-type]


def test_thresholds_at_the_ends_of_the_range_are_kept() -> None:
    from pipelines.policies import THRESHOLD_MAX, check_threshold

    assert [check_threshold(v) for v in (0, 0.0, 0.25, 1)] == [0.0, 0.0, 0.25, 1.0]
    policy = CascadePolicy(threshold=1, answer_threshold=0)
    assert (policy.threshold, policy.answer_threshold) == (1.0, 0.0)
    assert CascadePolicy(threshold=THRESHOLD_MAX).threshold > 1.0  # the sweep's "escalate nothing"
    with pytest.raises(PipelineError, match="answer threshold"):
        CascadePolicy(threshold=0.5, answer_threshold=float("nan"))
