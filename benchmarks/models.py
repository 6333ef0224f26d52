"""`make bench-models`: answers that beat silence — always-empty, edge, cloud and cascade on held-out
dev-a questions, each with its 95% bootstrap interval, and the answerability of every signal.

Reads the `ecqa eval` folder of the held-out questions (outside the calibration split: the first
BENCH_MODELS_N of them, each read once on the edge and once in the cloud over the emulated link) and
the calibration records the routing models were fitted on. Every policy's route is replayed with the
packaged calibration (the same :func:`eval.replay.route_records` as the report). Writes the block
between the bench-models markers of BENCHMARKS.md and bench/models/bench.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.markdown import publish
from eval.calibrate import Logistic, auroc, matrix, table
from eval.data import load_questions
from eval.records import labelled, read_records
from eval.replay import route_records, summarize
from eval.report import load_report
from eval.stats import bootstrap_ci, paired_bootstrap_ci
from pipelines.calibration import Calibration

START, END = "<!-- bench-models:start -->", "<!-- bench-models:end -->"
HEADING = "## Answers that beat silence — `make bench-models`"
POLICIES = ("edge", "cloud", "cascade", "learned")
LABELS = {"edge": "edge only — Qwen2.5-Coder-0.5B", "cloud": "cloud only — Qwen2.5-Coder-1.5B",
          "cascade": "**cascade** — 0.5B edge → 1.5B cloud", "learned": "cascade without a cloud-call cap (learned)"}
# The signals whose held-out AUROC the block lists (every one's out-of-fold AUROC is in the calibration file).
SHOWN = ("p_yes_max", "p_yes_chosen", "p_yes_second", "no_answer_chosen", "no_answer_min", "p_verify", "lp_first",
         "lp_mean", "lp_min", "is_span", "answer_words", "question_overlap", "agree", "answered_share", "rank_chosen",
         "fused_chosen")


def held_out_auroc(calib: list[dict[str, Any]], held: list[dict[str, Any]], cal: Calibration) -> dict[str, Any]:
    """Against "the question has an answer", on the held-out questions: each signal alone (its direction
    and scale fitted on the calibration records by a one-signal logistic regression) and each decision's
    combined p(answerable) model as packaged."""
    tc, th = table(calib), table(held)
    y = th.has_answer
    alone: dict[str, dict[str, float]] = {}
    for tier, rows_c, rows_h in (("edge", tc.edge, th.edge), ("cloud", tc.cloud, th.cloud)):
        for name in SHOWN:
            key = f"{tier}.{name}"
            m = Logistic.fit(matrix(rows_c, [key]), tc.has_answer.astype(float))
            alone[key] = {"held_out": auroc(y, m.predict(matrix(rows_h, [key]))),
                          "calibration_oof": cal.metrics["signals_alone"][key]["auroc"]}
    alone["agree_edge_cloud"] = {
        "held_out": auroc(y, Logistic.fit(matrix(tc.both, ["agree_edge_cloud"]), tc.has_answer.astype(float))
                          .predict(matrix(th.both, ["agree_edge_cloud"]))),
        "calibration_oof": cal.metrics["signals_alone"]["agree_edge_cloud"]["auroc"]}
    combined = {
        "edge": auroc(y, np.array([cal.edge.answerable.predict(r) for r in th.edge])),
        "cloud": auroc(y, np.array([cal.cloud.answerable.predict(r) for r in th.cloud])),
        "cloud_edge": auroc(y, np.array([cal.cloud_edge.answerable.predict(r) for r in th.both])),
    }
    return {"alone": alone, "combined": combined,
            "combined_calibration_oof": {k: cal.metrics[k]["answerable"]["auroc"] for k in combined}}


def by_article(held: list[dict[str, Any]], per_question: dict[str, list[float]], empty: list[float],
               data: Path) -> list[dict[str, Any]]:
    """F1 per article of the held-out questions: always-empty, cloud only and the cascade."""
    title = {q.id: q.title for q in load_questions(data)}
    rows: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(held):
        row = rows.setdefault(title.get(r["id"], "?"), {"n": 0, "empty": 0.0, "edge": 0.0, "cloud": 0.0, "cascade": 0.0})
        row["n"] += 1
        row["empty"] += 100 * empty[i]
        for name in ("edge", "cloud", "cascade"):
            row[name] += per_question[name][i]
    return [{"article": a, "n": v["n"], **{k: v[k] / v["n"] for k in ("empty", "edge", "cloud", "cascade")}}
            for a, v in sorted(rows.items(), key=lambda kv: -kv[1]["n"])]


def measure(eval_dir: Path, calib_records: Path, cal: Calibration, budget_ms: float) -> dict[str, Any]:
    report = load_report(eval_dir)
    if report is None:
        raise SystemExit(f"no report in {eval_dir} — run the `ecqa eval` step of `make bench-models` first")
    by_id = read_records(eval_dir / "records.jsonl")
    held = labelled(by_id.values())
    if len(held) < len(by_id):
        raise SystemExit(f"{len(by_id) - len(held)} held-out records have no cloud reading (a failed call) — "
                         "rerun the `ecqa eval` step (it resumes) after removing them")
    calib = labelled(read_records(calib_records).values())
    empty = [float(not r["has_answer"]) for r in held]
    rows: dict[str, Any] = {"always empty": {"f1": 100 * float(np.mean(empty)), "f1_ci95": bootstrap_ci([100 * x for x in empty]),
                                             "has_ans_f1": 0.0, "no_ans_accuracy": 100.0, "cloud_call_rate": 0.0,
                                             "abstain_rate": 1.0, "latency_mean_ms": None, "latency_p95_ms": None}}
    per_question: dict[str, list[float]] = {}
    for name in POLICIES:
        routed = route_records(held, cal.policy(name), cal, budget_ms)
        f1 = [100 * x.f1 for x in routed]
        per_question[name] = f1
        rows[name] = {**summarize(routed, held), "f1_ci95": bootstrap_ci(f1),
                      "vs_empty_ci95": paired_bootstrap_ci(f1, [100 * x for x in empty])}
    rows["cascade"]["vs_cloud_ci95"] = paired_bootstrap_ci(per_question["cascade"], per_question["cloud"])
    return {
        "when": time.strftime("%Y-%m-%d"), "n": len(held), "answerable": int(sum(r["has_answer"] for r in held)),
        "seed": report["config"].get("seed"),
        "by_article": by_article(held, per_question, empty, Path(report["data"]["path"])),
        "network": report["config"]["network"], "budget_ms": budget_ms, "calibration_n": len(calib),
        "rows": rows, "auroc": held_out_auroc(calib, held, cal),
        "thresholds": {"edge answers": cal.edge.threshold, "cascade escalates": cal.escalate_threshold,
                       "cloud keeps (cloud-only)": cal.cloud.threshold, "cloud keeps (cascade)": cal.cloud_edge.threshold},
        "signals": {k: cal.metrics[k]["answerable"]["signals"] for k in ("edge", "cloud", "cloud_edge")},
        "quality_signals": {k: cal.metrics[k]["quality"]["signals"] for k in ("edge", "cloud", "cloud_edge")},
        "escalate_signals": cal.metrics["escalate"]["signals"],
        "oof_f1": cal.metrics["oof_f1"], "resources": report.get("resources", {}),
    }


def _ci(ci: Any) -> str:
    return f"{ci[0]:.1f} – {ci[1]:.1f}"


def markdown(res: dict[str, Any], command: str) -> str:
    rows = res["rows"]
    cloud_mean = rows["cloud"]["latency_mean_ms"]
    lines = [
        START, "",
        f"Generated by `{command}` ({res['when']}): {res['n']} dev-a questions outside the calibration split "
        + (f"(a sample seeded {res['seed']} across all ten articles; " if res.get("seed") is not None else "(")
        + f"{res['answerable']} answerable), retrieval over the whole collection (dev-a + distractors, top-3, hybrid), "
        f"link `{res['network']}`, Tmax {res['budget_ms']:.0f} ms. Every routing model and threshold was fitted on the "
        f"{res['calibration_n']} calibration-split questions (`make calibrate`, out of fold), never on these. 95% "
        "intervals: percentile bootstrap over the questions (2000 resamples); \"vs always empty\" is the paired "
        "difference. Latency: both models share the same 2 cores here, so compare ratios, not times.", "",
        "| configuration | F1 | 95% CI | vs always empty | HasAns F1 | NoAns acc | cloud calls | abstains | mean ms "
        "| vs cloud-only |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    e = rows["always empty"]
    lines.append(f"| always empty (no-answer baseline) | {e['f1']:.1f} | {_ci(e['f1_ci95'])} | — | 0.0 | 100.0 | 0% | 100% "
                 "| — | — |")
    for name in POLICIES:
        r = rows[name]
        d = r["vs_empty_ci95"]
        ratio = f"{r['latency_mean_ms'] / cloud_mean:.2f}×" if cloud_mean else "—"
        lines.append(f"| {LABELS[name]} | {r['f1']:.1f} | {_ci(r['f1_ci95'])} | {r['f1'] - e['f1']:+.1f} "
                     f"({d[0]:+.1f} – {d[1]:+.1f}) | {r['has_ans_f1']:.1f} | {r['no_ans_accuracy']:.1f} | "
                     f"{100 * r['cloud_call_rate']:.0f}% | {100 * r['abstain_rate']:.0f}% | {r['latency_mean_ms']:.0f} "
                     f"| {ratio} |")
    vc = rows["cascade"]["vs_cloud_ci95"]
    lines += ["", f"Cascade − cloud only: {rows['cascade']['f1'] - rows['cloud']['f1']:+.1f} F1 (paired 95% CI "
              f"{vc[0]:+.1f} – {vc[1]:+.1f})."]
    if res.get("by_article"):
        lines += ["", "By article (F1; the articles differ far more than a question-level interval shows):", "",
                  "| article | questions | always empty | edge | cloud | cascade |", "|---|---:|---:|---:|---:|---:|"]
        for a in res["by_article"]:
            lines.append(f"| {a['article']} | {a['n']} | {a['empty']:.1f} | {a['edge']:.1f} | {a['cloud']:.1f} | "
                         f"{a['cascade']:.1f} |")
    a = res["auroc"]
    lines += ["", "**Answerability** — AUROC against \"the question has an answer\": each decision's combined model "
              "(logistic regression over the signals it kept) and each signal alone, on these held-out questions and "
              "out of fold on the calibration split.", "",
              "| decision | signals kept (p(answerable)) | held-out AUROC | calibration AUROC (out of fold) |",
              "|---|---|---:|---:|"]
    for key, what in (("edge", "edge: answer here, escalate or abstain"), ("cloud", "cloud only: keep or drop"),
                      ("cloud_edge", "cascade: keep or drop the cloud's answer")):
        lines.append(f"| {what} | {', '.join(f'`{s}`' for s in res['signals'][key])} | {a['combined'][key]:.3f} | "
                     f"{a['combined_calibration_oof'][key]:.3f} |")
    lines += ["", "| signal alone | edge held-out | edge calibration | cloud held-out | cloud calibration |",
              "|---|---:|---:|---:|---:|"]
    for name in SHOWN:
        ea, ca = a["alone"][f"edge.{name}"], a["alone"][f"cloud.{name}"]
        lines.append(f"| `{name}` | {ea['held_out']:.3f} | {ea['calibration_oof']:.3f} | {ca['held_out']:.3f} | "
                     f"{ca['calibration_oof']:.3f} |")
    ag = a["alone"]["agree_edge_cloud"]
    lines.append(f"| `agree_edge_cloud` (both tiers) | {ag['held_out']:.3f} | {ag['calibration_oof']:.3f} | | |")
    th = res["thresholds"]
    lines += ["", "Thresholds (out of fold on the calibration split, by expected F1; the cascade's with at most 45% "
              "cloud calls there): " + ", ".join(f"{k} {v:.2f}" for k, v in th.items()) + ". Answer-quality models "
              "(expected F1 of the answer when there is one) read: "
              + "; ".join(f"{k} {', '.join(v) or '(base rate)'}" for k, v in res["quality_signals"].items())
              + f"; the escalation model: {', '.join(res['escalate_signals']) or '(base rate)'}.", "", END]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eval_dir", type=Path, help="`ecqa eval` folder of the held-out questions")
    ap.add_argument("--records", type=Path, required=True, help="the calibration records (eval.records)")
    ap.add_argument("--calibration", type=Path, default=None, help="default: the packaged one")
    ap.add_argument("--budget-ms", type=float, default=12000.0)
    ap.add_argument("--command", default="make bench-models")
    ap.add_argument("--out", type=Path, default=Path("bench/models/bench.json"))
    ap.add_argument("--from-json", type=Path, help="only rewrite the block from a previous --out file")
    ap.add_argument("--benchmarks-md", type=Path, default=Path("BENCHMARKS.md"))
    args = ap.parse_args()
    if args.from_json:
        res = json.loads(args.from_json.read_text())
        publish(res, None, markdown(res, args.command), args.benchmarks_md, START, END, HEADING)
        return
    res = measure(args.eval_dir, args.records, Calibration.load(args.calibration), args.budget_ms)
    publish(res, args.out, markdown(res, args.command), args.benchmarks_md, START, END, HEADING)


if __name__ == "__main__":
    main()
