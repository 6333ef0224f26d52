"""`make bench-cascade`: every policy side by side on held-out dev-a questions over an emulated link.

Reads the per-question records of `python -m eval.records` (each question answered once on the
edge and once in the cloud, over the emulated link, timed) and replays each policy's real
``decide`` over them with the packaged calibration (see eval/replay.py). Adds the trivial
always-no-answer baseline, an oracle router (best route per question: the ceiling of any
router over these two models), the calibration quality, and cache-hit latency measured live
through :class:`Cascade`. Rewrites the bench-cascade block of BENCHMARKS.md.
"""

from __future__ import annotations

# Imports inside functions: each phase (and each child process, after it sets its environment) imports
# only what it measures, so one phase never pays for another's models.
import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.markdown import publish
from eval.records import labelled, read_records
from eval.replay import (
    Routed,
    calibrated_values,
    cloud_answer,
    edge_answer,
    raw_cloud_f1,
    record_both_signals,
    route_records,
    summarize,
)
from pipelines.calibration import Calibration
from pipelines.policies import REGISTRY
from pipelines.signals import PassageReading

START, END = "<!-- bench-cascade:start -->", "<!-- bench-cascade:end -->"
HEADING = "## Cascade — `make bench-cascade`"


def replay_all(records: list[dict[str, Any]], cal: Calibration, budget_ms: float) -> dict[str, dict[str, float]]:
    values = calibrated_values(cal)
    rows: dict[str, dict[str, float]] = {}
    n = len(records)
    no_ans = sum(not r["has_answer"] for r in records)
    rows["always no-answer (baseline)"] = {"n": n, "f1": 100 * no_ans / n, "has_ans_f1": 0.0, "no_ans_accuracy": 100.0,
                                           "latency_mean_ms": 0.0, "latency_p95_ms": 0.0, "cloud_call_rate": 0.0,
                                           "abstain_rate": 1.0}
    for name in REGISTRY:
        pol = cal.policy(name)
        rows[name] = summarize(route_records(records, pol, cal, budget_ms, values=values), records)
    tight = budget_ms * 0.75
    pol = cal.policy("latency")
    rows[f"latency, Tmax {tight:.0f} ms"] = summarize(
        route_records(records, pol, cal, tight, values=values), records)
    oracle = []
    for r in records:
        options = [("edge", edge_answer(r)[1], r["edge"]["total_ms"], False),
                   ("cloud", cloud_answer(r, cal, with_edge=True)[1], r["edge"]["total_ms"] + r["cloud"]["total_ms"], True),
                   ("abstain", 0.0 if r["has_answer"] else 1.0, r["edge"]["total_ms"], False)]
        best = max(options, key=lambda o: (o[1], -o[2]))
        oracle.append(Routed(r["id"], best[0], "", best[1], best[2], best[3]))
    rows["oracle router (ceiling)"] = summarize(oracle, records)
    return rows


def reliability(records: list[dict[str, Any]], cal: Calibration) -> list[dict[str, float]]:
    """Cloud answers by the cascade keep / drop model's answer score: where answering beats abstaining
    (net > 0) and where it cannot."""
    bins = [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.01)]
    shares = {r["id"]: cal.cloud_edge.value(record_both_signals(r)).score for r in records}
    out = []
    for lo, hi in bins:
        rows = [r for r in records if lo <= shares[r["id"]] < hi]
        if not rows:
            continue
        answered = [(r, raw_cloud_f1(r)) for r in rows if PassageReading.from_json(r["cloud"]["reading"]).answer]
        gain = sum(f if r["has_answer"] else -1.0 for r, f in answered)  # vs abstaining on these questions
        out.append({"lo": lo, "hi": min(hi, 1.0), "n": len(rows), "answered": len(answered),
                    "answerable": sum(r["has_answer"] for r in rows) / len(rows),
                    "f1_on_answerable": (sum(f for r, f in answered if r["has_answer"])
                                         / max(sum(1 for r, _ in answered if r["has_answer"]), 1)),
                    "net_f1_points": 100 * gain / len(records)})
    return out


def cache_latency(qdrant: Path, collection: str, questions: list[str]) -> dict[str, float]:
    """Hit latency through the real Cascade (policy edge) over the evaluation's collection: each question
    once, then repeated."""
    from pipelines.answer import build_cascade
    from pipelines.settings import load_settings, open_store

    s = load_settings(qdrant_path=qdrant, collection=collection)
    with open_store(s) as store:
        cascade = build_cascade(s, store)
        for q in questions:
            cascade.answer(q, policy="edge")
        hits: list[float] = []
        for _ in range(10):
            for q in questions:
                variant = q.rstrip("?").lower() + " ?"  # the exact level normalises case and punctuation
                t0 = time.perf_counter()
                r = cascade.answer(variant, policy="edge")
                hits.append((time.perf_counter() - t0) * 1000)
                assert r.tier == "cache", r.tier
        stats = cascade.cache.stats() if cascade.cache is not None else {}
    hits.sort()
    return {"n": len(hits), "p50_ms": statistics.median(hits), "p95_ms": hits[int(0.95 * (len(hits) - 1))],
            "hit_rate": float(stats.get("hit_rate", 0.0))}


def eval_collection(records: Path) -> str:
    """The collection the `ecqa eval` run beside ``records`` indexed into (named by its files' content)."""
    report = records.parent / "report.json"
    if not report.exists():
        raise SystemExit(f"no {report} beside the records — run the `ecqa eval` step of `make bench-models` first")
    return str(json.loads(report.read_text())["config"]["collection"])


def markdown(res: dict[str, Any], cmd: str) -> str:
    rows, cal, cache = res["rows"], res["calibration"], res["cache"]
    cloud_mean = rows["cloud"]["latency_mean_ms"]
    lines = [START, "", f"Generated by `{cmd}` on {res['when']}: {res['n']} held-out dev-a questions (outside the "
             f"calibration split), link profile `{res['network']}`, Tmax {res['budget_ms']:.0f} ms, calibration fitted on "
             f"{cal['metrics'].get('n', '?')} calibration-split questions.", "",
             "| configuration | F1 | HasAns F1 | NoAns acc | mean ms | p95 ms | vs cloud-only | cloud calls | abstains |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        ratio = f"{r['latency_mean_ms'] / cloud_mean:.2f}×" if cloud_mean and r["latency_mean_ms"] else "—"
        lines.append(f"| {name} | {r['f1']:.1f} | {r['has_ans_f1']:.1f} | {r['no_ans_accuracy']:.1f} | "
                     f"{r['latency_mean_ms']:.0f} | {r['latency_p95_ms']:.0f} | {ratio} | {100 * r['cloud_call_rate']:.0f}% | "
                     f"{100 * r['abstain_rate']:.0f}% |")
    m = cal["metrics"]
    lines += ["", "Answerability models (logistic regressions over each decision's signals; out of fold on the "
              "calibration split):", "", "| decision | signals kept | AUROC | ECE |", "|---|---|---:|---:|"]
    for key in ("edge", "cloud", "cloud_edge"):
        mm = m[key]["answerable"]
        lines.append(f"| `{key}` | {', '.join(mm['signals'])} | {mm['auroc']:.3f} | {mm['ece']:.3f} |")
    lines += ["", "Cloud answers by the cascade keep / drop model's answer score — answering a question instead of "
              "abstaining pays only where the answer is right more often than the question is unanswerable:", "",
              "| confidence | questions | answered | answerable | F1 on answerable | F1 points vs abstaining |",
              "|---|---:|---:|---:|---:|---:|"]
    for b in res["reliability"]:
        lines.append(f"| {b['lo']:.1f}–{b['hi']:.1f} | {b['n']} | {b['answered']} | {100 * b['answerable']:.0f}% | "
                     f"{100 * b['f1_on_answerable']:.0f} | {b['net_f1_points']:+.1f} |")
    lines += ["", f"Thresholds chosen out of fold on the calibration split (the cascade's: best F1 with ≤ "
              f"{100 * m['max_cloud_rate']:.0f}% cloud calls): " + ", ".join(f"{k} {v:.2f}" for k, v in cal["thresholds"].items())
              + ".", "",
              f"Answer cache, measured live through the cascade: {cache['n']} hits, p50 {cache['p50_ms']:.2f} ms, "
              f"p95 {cache['p95_ms']:.2f} ms (hit rate {100 * cache['hit_rate']:.0f}% over the run).", "", END]
    return "\n".join(lines)


def thresholds(cal: Calibration) -> dict[str, float]:
    return {"edge answers": cal.edge.threshold, "cascade escalates": cal.escalate_threshold,
            "cloud keeps (cloud-only)": cal.cloud.threshold, "cloud keeps (cascade)": cal.cloud_edge.threshold}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=Path, default=Path("bench/records-eval.jsonl"))
    ap.add_argument("--qdrant", type=Path, default=Path("bench/qdrant"))
    ap.add_argument("--budget-ms", type=float, default=4000.0)
    ap.add_argument("--network", default="wifi")
    ap.add_argument("--out", type=Path, default=Path("bench/cascade.json"))
    ap.add_argument("--benchmarks-md", type=Path, default=Path("BENCHMARKS.md"))
    ap.add_argument("--from-json", type=Path, help="only rewrite the block from a previous --out file (no replay)")
    args = ap.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        publish(saved, None, markdown(saved, "make bench-cascade"), args.benchmarks_md, START, END, HEADING)
        return
    records = labelled(read_records(args.records).values())
    cal = Calibration.load()
    res: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d"), "n": len(records), "network": args.network, "budget_ms": args.budget_ms,
        "rows": replay_all(records, cal, args.budget_ms),
        "calibration": {"metrics": cal.metrics, "thresholds": thresholds(cal)},
        "reliability": reliability(records, cal),
        "cache": cache_latency(args.qdrant, eval_collection(args.records),
                               [r["question"] for r in records[:20]]),
    }
    publish(res, args.out, markdown(res, "make bench-cascade"), args.benchmarks_md, START, END, HEADING)


if __name__ == "__main__":
    main()
