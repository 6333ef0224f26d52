"""`make bench-edge-speed`'s analysis and table, on hand-made records and readings (the model runs are the
benchmark's; what is checked here is that the numbers it prints are the ones the rows say)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from routing_helpers import calibration, reading, record

from benchmarks.edge_speed import END, START, analyse, markdown
from reading.passages import ReadPlan


def _rows(records: list[dict], ms: dict[str, float]) -> list[dict]:
    rows = []
    for r in records:
        live = {"reading": r["edge"]["reading"], "prefilled": 60, "passes": 2, "kv": ["hit"], "decode_ms": 100.0}
        row = {"id": r["id"], "spec": {"checks": 2, "drafted": 8, "accepted": 3}}
        for v, t in ms.items():
            row[v] = live | {"ms": t, "passes": 7 if v == "full" else 2, "decode_ms": 120.0 if v == "lean+spec" else 100.0}
        rows.append(row)
    return rows


def test_the_table_reports_what_the_rows_measured(tmp_path: Path) -> None:
    records = [record(i, i % 2 == 0, "Miret" if i % 2 == 0 else "", "Miret", edge_p=0.9 if i % 2 == 0 else 0.1)
               for i in range(8)]
    lean_plan = ReadPlan("best", verify=False, gap=0.05)
    full = calibration()
    lean = replace(calibration(), read_plan=lean_plan, cloud_read_plan=ReadPlan("best", verify=True))
    plans = [{"plan": p.to_json(), "passes": n, "cascade_f1": 60.0, "edge_f1": 55.0, "learned_f1": 64.0, "edge_auroc": 0.7,
              "chosen": p == lean_plan} for p, n in ((ReadPlan(), 7.0), (lean_plan, 2.2))]
    cloud_plans = [{"plan": p.to_json(), "passes": n, "cloud_f1": 65.0, "cascade_f1": 62.0, "cloud_auroc": 0.8,
                    "chosen": n == 5.0} for p, n in ((ReadPlan(), 7.0), (ReadPlan("best", True), 5.0))]
    cals = {"full": full, "lean": lean, "plans": plans, "cloud_plans": cloud_plans}
    rows = _rows(records, {"full": 1600.0, "lean": 480.0, "lean+spec": 520.0})
    cloud_rows = [{"id": r["id"], "cold": {"ms": 9000.0, "answer": "Miret"}, "full": {"ms": 4000.0, "answer": "Miret"},
                   "lean": {"ms": 2800.0, "answer": "Miret"}} for r in records[:4]]
    res = analyse(records, rows, cloud_rows, records, cals)
    v = res["variants"]
    assert v["full"]["read_ms"]["p50"] == 1600.0 and v["lean"]["read_ms"]["p50"] == 480.0
    assert v["lean"]["ratio_p50"] == pytest.approx(0.3) and v["lean"]["edge_ms"]["p50"] == pytest.approx(510.0)
    assert v["lean"]["passes"] == 2 and v["full"]["passes"] == 7
    assert res["spec"]["accepted"] == 24 and res["spec"]["decode_ratio"] == pytest.approx(1.2)
    assert res["same_answer_share"] == 1.0 and res["spec"]["same_reply"] == 1.0
    assert res["cloud"]["lean_over_full_p50"] == pytest.approx(0.7) and res["cloud"]["cold"]["p50"] == 9000.0
    assert res["derived"]["n"] == 8 and res["derived"]["always_empty_f1"] == 50.0
    md = markdown(json.loads(json.dumps(res)), "test")
    assert "| lean (read plan) | 2.00 | 60 | 480 |" in md and "0.30" in md
    assert "probe the passages within 0.05 of the best retrieval score" in md
    assert "| edge | lean, gap 0.05 | 2.20 |" in md and "| cloud | lean, gap none, checked | 5.00 |" in md
    assert START not in md and END not in md  # the markers are the block writer's
