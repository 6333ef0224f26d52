from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.features import FEATURES
from eval.calibrate import expected_calibration_error, fit
from eval.records import read_records
from eval.report import STAGES
from eval.replay import cloud_answer, route_records, summarize
from pipelines.calibration import Calibration, in_calibration_split
from pipelines.cascade import verify_answer
from pipelines.policies import CascadePolicy, CloudPolicy, EdgePolicy

PASSAGE = "Zorvath Island is a volcanic island. Its capital is Miret, a harbour town."


def record(i: int, has_answer: bool, edge_f1: float, cloud_answer_text: str, cloud_conf: float,
           p: float = 0.5, cloud_p_answerable: float = 0.9) -> dict:
    feats = {f: 0.0 for f in FEATURES}
    feats["mean_logprob"] = p
    return {
        "id": f"q{i}", "question": "What is the capital of Zorvath Island?", "passages": [PASSAGE],
        "answers": ["Miret"] if has_answer else [""], "has_answer": has_answer, "retrieval_ms": 30.0,
        # an edge answer whose F1 against the gold is edge_f1 (1 or 0)
        "edge": {"answer": ("Miret" if has_answer else "") if edge_f1 else ("Paris" if has_answer else "Paris"),
                 "features": feats, "total_ms": 2000.0, "f1": edge_f1},
        "cloud": {"answer": cloud_answer_text, "confidence": cloud_conf, "p_answerable": cloud_p_answerable,
                  "timings": {"network": 40.0, "cloud": 700.0},
                  "bytes_up": 1500, "bytes_down": 400, "usage": {"completion_tokens": 3}, "total_ms": 800.0},
    }


GATE = {"cloud_min_confidence": 0.5, "cloud_min_answerable": 0.6}


def test_verify_answer_keeps_grounded_confident_answerable_spans_only() -> None:
    assert verify_answer("miret", 0.9, 0.9, "capital?", [PASSAGE], GATE) == "Miret"
    assert verify_answer("The capital is Miret", 0.9, 0.9, "What is the capital?", [PASSAGE], GATE) == "Miret"
    assert verify_answer("Paris", 0.9, 0.9, "capital?", [PASSAGE], GATE) == ""  # not grounded
    assert verify_answer("Miret", 0.3, 0.9, "capital?", [PASSAGE], GATE) == ""  # under the confidence floor
    assert verify_answer("Miret", 0.9, 0.59, "capital?", [PASSAGE], GATE) == ""  # its model says "not stated"
    assert verify_answer("Miret", 0.9, 0.0, "capital?", [PASSAGE], {}) == "Miret"  # no gate
    assert verify_answer("", 0.9, 0.9, "capital?", [PASSAGE], {}) == ""


def test_cloud_answer_scores_the_verified_answer() -> None:
    assert cloud_answer(record(0, True, 0.0, "Miret", 0.9), GATE) == ("Miret", 1.0)
    assert cloud_answer(record(1, False, 0.0, "Paris", 0.9), GATE) == ("", 1.0)  # dropped: right for unanswerable
    assert cloud_answer(record(2, False, 0.0, "Miret", 0.9, cloud_p_answerable=0.2), GATE) == ("", 1.0)


def test_route_records_composes_latency_per_route() -> None:
    recs = [record(0, True, 1.0, "Miret", 0.9), record(1, False, 0.0, "Miret", 0.9)]
    edge = route_records(recs, EdgePolicy(), lambda r: (0.5, 0.0, 0.5), 4000)
    assert [x.latency_ms for x in edge] == [2000.0, 2000.0] and [x.f1 for x in edge] == [1.0, 0.0]
    # the edge alone abstains where its calibrated p(unanswerable) reaches its gate
    gated = route_records(recs, EdgePolicy(0.5, 0.8), lambda r: (0.5, 0.0 if r["id"] == "q0" else 0.9, 0.5), 4000)
    assert [(x.route, x.f1) for x in gated] == [("edge", 1.0), ("abstain", 1.0)]
    cloud = route_records(recs, CloudPolicy(), lambda r: (0.5, 0.0, 0.5), 4000)
    assert [x.latency_ms for x in cloud] == [830.0, 830.0]  # retrieval + cloud, no SLM
    casc = route_records(recs, CascadePolicy(0.6, 0.8), lambda r: (0.9, 0.0, 0.5) if r["id"] == "q0" else (0.1, 0.9, 0.5),
                         4000)
    assert [(x.route, x.f1) for x in casc] == [("edge", 1.0), ("abstain", 1.0)]
    escalated = route_records(recs[:1], CascadePolicy(0.6, 0.8), lambda r: (0.1, 0.0, 0.5), 4000)
    assert escalated[0].route == "cloud" and escalated[0].latency_ms == 2800.0  # edge, then cloud
    s = summarize(casc, recs)
    assert (s["f1"], s["has_ans_f1"], s["no_ans_accuracy"], s["cloud_call_rate"], s["abstain_rate"]) == (100.0, 100.0,
                                                                                                      100.0, 0.0, 0.5)


def test_replayed_stages_are_the_live_split() -> None:
    """A replayed answer's stages carry the live split's names and add up to its latency, per route."""
    ok, failed = record(0, True, 1.0, "Miret", 0.9), record(1, True, 1.0, "Miret", 0.9)
    ok["edge"]["timings"] = failed["edge"]["timings"] = {"embed": 10.0}
    ok["cloud"]["timings"].update(seal=1.0, open=2.0)
    failed["cloud"] = {"error": "timed out", "total_ms": 500.0, "bytes_up": 1500}
    cloud = route_records([ok, failed], CloudPolicy(), lambda r: (0.5, 0.0, 0.5), 4000)
    assert cloud[0].stages == pytest.approx({"embed": 10.0, "retrieve": 20.0, "seal_open": 3.0, "network": 40.0,
                                             "cloud": 700.0, "other": 57.0})  # no SLM on the cloud-only route
    assert cloud[1].route == "edge" and cloud[1].degraded  # the failed call is "other"; the edge then generates
    assert cloud[1].stages == pytest.approx({"embed": 10.0, "retrieve": 20.0, "edge_generate": 1970.0, "other": 500.0})
    edge = route_records([ok], EdgePolicy(), lambda r: (0.5, 0.0, 0.5), 4000)[0]
    for routed in (*cloud, edge):
        assert sum(routed.stages.values()) == pytest.approx(routed.latency_ms)
        assert set(routed.stages) <= set(STAGES)


def test_expected_calibration_error() -> None:
    assert expected_calibration_error(np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.1)
    assert expected_calibration_error(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.0)


def test_fit_learns_a_separable_signal_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    recs = []
    for i in range(120):
        good = i % 2 == 0
        recs.append(record(i, i % 3 != 0, 1.0 if good else 0.0, "Miret" if i % 4 else "Paris", 0.8,
                           p=float(rng.normal(1.0 if good else -1.0, 0.3))))
    data = fit(recs, max_cloud_rate=0.4, budget_ms=4000, provenance={"test": True})
    assert data["metrics"]["correct"]["auroc"] > 0.95
    assert set(data["thresholds"]) >= {"cascade", "latency", "learned", "abstain", "edge_abstain",
                                       "cloud_min_confidence", "cloud_min_answerable"}
    assert set(data["metrics"]["answerability"]) == {"edge", "cloud"}
    assert data["metrics"]["answerability"]["cloud"]["auroc"] == pytest.approx(0.5)  # a constant p(answerable)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(data))
    cal = Calibration.load(path)
    hi = {f: 0.0 for f in FEATURES} | {"mean_logprob": 1.0}
    lo = {f: 0.0 for f in FEATURES} | {"mean_logprob": -1.0}
    assert cal.correct.predict(hi) > 0.9 > 0.1 > cal.correct.predict(lo)


def test_read_records_ignores_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(record(0, True, 1.0, "Miret", 0.9)) + "\n" + '{"id": "q1", "quest')
    assert list(read_records(path)) == ["q0"]


def test_calibration_split_is_a_stable_quarter() -> None:
    ids = [f"id-{i}" for i in range(4000)]
    share = sum(in_calibration_split(i) for i in ids) / len(ids)
    assert 0.22 < share < 0.28
    assert in_calibration_split("id-7") == in_calibration_split("id-7")


def test_packaged_calibration_loads() -> None:
    cal = Calibration.load()
    assert 0.0 <= cal.thresholds["cascade"] <= 1.0 and cal.metrics["n"] >= 100
