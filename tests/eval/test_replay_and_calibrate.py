from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from routing_helpers import calibration, constant, on, record

from eval.calibrate import expected_calibration_error, fit
from eval.records import read_records
from eval.replay import cloud_answer, route_records, summarize
from eval.report import STAGES
from pipelines.calibration import AnswerModel, Calibration, in_calibration_split
from pipelines.errors import ConfigError
from pipelines.policies import CascadePolicy, CloudPolicy, EdgePolicy


def test_the_cloud_answer_stands_or_falls_by_its_keep_drop_model() -> None:
    cal = calibration()
    assert cloud_answer(record(0, True, "", "Miret", cloud_p=0.9), cal, with_edge=False) == ("Miret", 1.0)
    # dropped where its p(yes) says "not stated": right for an unanswerable question
    assert cloud_answer(record(1, False, "", "Paris", cloud_p=0.1), cal, with_edge=False) == ("", 1.0)
    # the cascade's keep / drop reads the edge's reading too
    both = calibration(cloud_edge=AnswerModel(on("agree_edge_cloud", 8.0, -4.0), constant(0.9), 0.5))
    assert cloud_answer(record(2, True, "Miret", "Miret", cloud_p=0.1), both, with_edge=True) == ("Miret", 1.0)
    assert cloud_answer(record(3, True, "Paris", "Miret", cloud_p=0.99), both, with_edge=True) == ("", 0.0)


def test_route_records_composes_latency_per_route() -> None:
    recs = [record(0, True, "Miret", "Miret", edge_p=0.9), record(1, False, "Paris", "Paris", edge_p=0.1, cloud_p=0.1)]
    cal = calibration()
    edge = route_records(recs, EdgePolicy(), cal, 4000)
    # the edge answers where its p(yes) makes answering the better bet, abstains where it does not
    assert [(x.route, x.f1, x.latency_ms) for x in edge] == [("edge", 1.0, 2000.0), ("abstain", 1.0, 2000.0)]
    cloud = route_records(recs, CloudPolicy(), cal, 4000)
    assert [(x.route, x.answer) for x in cloud] == [("cloud", "Miret"), ("cloud", "")]
    assert [x.latency_ms for x in cloud] == [830.0, 830.0]  # retrieval + cloud, no SLM
    never = calibration(escalate=constant(0.01))
    assert [x.route for x in route_records(recs, CascadePolicy(0.5), never, 4000)] == ["edge", "abstain"]
    always = calibration(escalate=constant(0.99))
    escalated = route_records(recs, CascadePolicy(0.5), always, 4000)
    assert escalated[0].route == "cloud" and escalated[0].latency_ms == 2800.0  # edge, then cloud
    # ... but not where the edge is surer of "no answer" than the cloud's expected F1 (0.99)
    assert escalated[1].route == "abstain" and escalated[1].f1 == 1.0
    s = summarize(edge, recs)
    assert (s["f1"], s["has_ans_f1"], s["no_ans_accuracy"], s["cloud_call_rate"], s["abstain_rate"]) == (
        100.0, 100.0, 100.0, 0.0, 0.5)


def test_replayed_stages_are_the_live_split() -> None:
    """A replayed answer's stages carry the live split's names and add up to its latency, per route."""
    ok, failed = record(0, True, "Miret", "Miret", edge_p=0.9), record(1, True, "Miret", "Miret", edge_p=0.9)
    ok["edge"]["timings"] = failed["edge"]["timings"] = {"embed": 10.0}
    ok["cloud"]["timings"].update(seal=1.0, open=2.0)
    failed["cloud"] = {"error": "timed out", "total_ms": 500.0, "bytes_up": 1500}
    cloud = route_records([ok, failed], CloudPolicy(), calibration(), 4000)
    assert cloud[0].stages == pytest.approx({"embed": 10.0, "retrieve": 20.0, "seal_open": 3.0, "network": 40.0,
                                             "cloud": 700.0, "other": 57.0})  # no SLM on the cloud-only route
    assert cloud[1].route == "edge" and cloud[1].degraded  # the failed call is "other"; the edge then generates
    assert cloud[1].stages == pytest.approx({"embed": 10.0, "retrieve": 20.0, "edge_generate": 1970.0, "other": 500.0})
    edge = route_records([ok], EdgePolicy(), calibration(), 4000)[0]
    for routed in (*cloud, edge):
        assert sum(routed.stages.values()) == pytest.approx(routed.latency_ms)
        assert set(routed.stages) <= set(STAGES)


def test_expected_calibration_error() -> None:
    assert expected_calibration_error(np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.1)
    assert expected_calibration_error(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.0)


def test_fit_learns_a_separable_signal_chooses_thresholds_out_of_fold_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    recs = []
    for i in range(240):
        has = i % 2 == 0
        # the cloud's p(yes) separates answerable questions; the edge's says little; the edge answers
        # right on a third of the answerable ones, the cloud on all of them
        cloud_p = float(np.clip(rng.normal(0.8 if has else 0.3, 0.12), 0.01, 0.99))
        edge_p = float(np.clip(rng.normal(0.55 if has else 0.45, 0.2), 0.01, 0.99))
        edge = "Miret" if has and i % 3 == 0 else "harbour"  # every answer a one-word span: only p(yes) tells
        recs.append(record(i, has, edge, "Miret" if has else "harbour", edge_p=edge_p, cloud_p=cloud_p))
    cal = fit(recs, max_cloud_rate=0.5, provenance={"test": True}, progress=lambda _: None)
    m = cal.metrics
    assert m["cloud"]["answerable"]["auroc"] > 0.95
    assert {"cloud.p_yes_max", "cloud.p_yes_chosen"} & set(cal.cloud.answerable.features)
    assert m["edge"]["answerable"]["auroc"] < m["cloud"]["answerable"]["auroc"]
    assert m["signals_alone"]["cloud.p_yes_max"]["auroc"] > 0.95
    assert m["oof_f1"]["cloud"] > 90 and m["oof_cloud_rate"]["cascade"] <= 0.5
    assert all(0.0 <= t <= 1.0 for t in (cal.edge.threshold, cal.cloud.threshold, cal.cloud_edge.threshold,
                                         cal.escalate_threshold))
    path = tmp_path / "cal.json"
    cal.save(path)
    again = Calibration.load(path)
    assert again == cal
    p_yes = {"cloud.p_yes_max", "cloud.p_yes_chosen"}
    answerable = {k: 2.0 if k in p_yes else 0.0 for k in again.cloud.answerable.features}
    unanswerable = {k: -2.0 if k in p_yes else 0.0 for k in again.cloud.answerable.features}
    assert again.cloud.answerable.predict(answerable) > 0.9 > 0.1 > again.cloud.answerable.predict(unanswerable)


def test_read_records_ignores_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(record(0, True, "Miret", "Miret")) + "\n" + '{"id": "q1", "quest')
    assert list(read_records(path)) == ["q0"]


def test_calibration_split_is_a_stable_quarter() -> None:
    ids = [f"id-{i}" for i in range(4000)]
    share = sum(in_calibration_split(i) for i in ids) / len(ids)
    assert 0.22 < share < 0.28
    assert in_calibration_split("id-7") == in_calibration_split("id-7")


def test_packaged_calibration_loads() -> None:
    cal = Calibration.load()
    assert 0.0 <= cal.escalate_threshold <= 1.0 and cal.metrics["n"] >= 100


def _three_passages(i: int, has: bool, far: float, rng: np.random.Generator) -> dict[str, Any]:
    """A record with three retrieved passages: the answer ("Miret") is read from the third one, ``far``
    under the best retrieval score, whose p(yes) tells answerable questions; the cloud always answers wrong."""
    from reading.passages import PassageReading, PassageSignals

    p3 = float(np.clip(rng.normal(0.85 if has else 0.25, 0.1), 0.02, 0.98))
    sigs = (PassageSignals(0.3, "harbour", "harbour", (-0.5,), -2.0, False),
            PassageSignals(0.3, "volcanic", "volcanic", (-0.5,), -2.0, False),
            PassageSignals(p3, "Miret", "Miret", (-0.1,), -4.0, True))
    r = record(i, has, "Miret", "harbour", cloud_p=0.9)
    r["passages"], r["passage_ids"] = [r["passages"][0]] * 3, ["p0", "p1", "p2"]
    r["passage_scores"] = [{"fused": 0.9, "dense": 0.6, "sparse": 0.5}, {"fused": 0.9 - far / 2, "dense": 0.6, "sparse": 0.5},
                           {"fused": 0.9 - far, "dense": 0.6, "sparse": 0.5}]
    r["edge"]["reading"] = PassageReading(sigs, 2, 0.8).to_json()
    r["cloud"]["reading"] = PassageReading(sigs[:1] * 3, 0, 0.8).to_json()
    return r


@pytest.mark.parametrize(("far", "gaps"), [(0.01, {0.05}), (0.25, {0.3, None})])
def test_calibrate_keeps_the_cheapest_read_plan_that_costs_no_f1(far: float, gaps: set[float | None]) -> None:
    """Reading only the passages near the best score costs nothing where the answer sits there, and loses
    every answer where it sits 0.25 under: then only a plan that reads that far is kept."""
    from eval.calibrate import choose_plan
    from eval.replay import planned

    rng = np.random.default_rng(1)
    recs = [_three_passages(i, i % 2 == 0, far, rng) for i in range(160)]
    plan, rows = choose_plan(recs, 0.5, progress=lambda _: None)
    assert plan.answer == "best" and not plan.verify and plan.gap in gaps
    assert rows[0]["plan"]["answer"] == "all" and rows[0]["passes"] == 7.0 and sum(r["chosen"] for r in rows) == 1
    lean = planned(recs, plan)
    # the third passage was read and, on answerable questions (its p(yes) the highest), answered from
    assert all(r["edge"]["answer"] == "Miret" for r in lean if r["has_answer"])
    assert recs[0]["edge"]["reading"]["chosen"] == 2  # the records themselves are not changed


def test_a_calibration_keeps_its_read_plan_and_the_edge_reads_by_it(tmp_path: Path) -> None:
    from pipelines.calibration import read_plan
    from pipelines.edge_pipeline import edge_reader_for
    from pipelines.settings import Settings
    from reading.passages import FULL, ReadPlan

    lean = ReadPlan("best", verify=False, gap=0.05)
    cal = calibration()
    path = tmp_path / "cal.json"
    cal.save(path)
    assert read_plan(path) == FULL  # a calibration of the full reading
    d = json.loads(path.read_text())
    del d["read_plan"]
    path.write_text(json.dumps(d))
    assert read_plan(path) == FULL  # a file from before read plans was fitted on the full reading
    Calibration(cal.edge, cal.escalate, 0.5, cal.cloud, cal.cloud_edge, read_plan=lean).save(path)
    assert Calibration.load(path).read_plan == lean
    assert edge_reader_for(Settings(calibration_path=path)).generator.plan == lean
    path.write_text(json.dumps(d | {"read_plan": {"answer": "most", "verify": False, "gap": None}}))
    with pytest.raises(ConfigError, match="malformed .* `make calibrate`"):
        read_plan(path)
