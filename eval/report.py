"""The evaluation report: metrics per policy from the predictions, report.json and report.md.

Every accuracy figure is computed from the predictions written next to the report (the official
SQuAD prediction format ``{question_id: answer_text}``) with :func:`eval.squad_metrics.evaluate`,
so anyone can recompute them with the official script.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eval.replay import Routed
from eval.squad_metrics import Question, evaluate
from eval.stats import bootstrap_ci, percentile

SCHEMA = 1
STAGES = ("embed", "retrieve", "edge_generate", "seal_open", "network", "cloud", "other", "cache")


def latency_stats(values: Sequence[float]) -> dict[str, float]:
    n = len(values)
    return {"mean": sum(values) / n if n else 0.0, "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99)}


def accuracy(questions: Sequence[Question], preds: Mapping[str, str]) -> dict[str, float]:
    """The official SQuAD v2 totals (0-100) plus token precision and recall."""
    m = evaluate(questions, preds)
    return {"exact": m["exact"], "f1": m["f1"], "precision": m["precision"], "recall": m["recall"],
            "has_ans_exact": m["has_ans_exact"], "has_ans_f1": m["has_ans_f1"], "no_ans_accuracy": m["no_ans_accuracy"]}


def policy_metrics(questions: Sequence[Question], routed: Sequence[Routed], price_prompt_per_1k: float,
                   price_completion_per_1k: float) -> dict[str, Any]:
    """Accuracy, latency (overall and per stage), route rates, cloud tokens and cost of one policy."""
    n = len(routed)
    preds = {r.id: r.answer for r in routed}
    lat = [r.latency_ms for r in routed]
    stages = {s: sum(r.stages.get(s, 0.0) for r in routed) / n for s in STAGES if any(s in r.stages for r in routed)}
    prompt = sum(r.cloud_tokens.get("prompt", 0) for r in routed)
    completion = sum(r.cloud_tokens.get("completion", 0) for r in routed)
    cost = prompt / 1000 * price_prompt_per_1k + completion / 1000 * price_completion_per_1k
    return {
        "n": n,
        **accuracy(questions, preds),
        "f1_ci95": f1_interval([r.f1 for r in routed]),
        "latency_ms": latency_stats(lat),
        "stages_ms": stages,
        "cloud_call_rate": sum(r.cloud_called for r in routed) / n,
        "abstain_rate": sum(r.route == "abstain" for r in routed) / n,
        "cache_hit_rate": sum(r.route == "cache" for r in routed) / n,
        "degraded_rate": sum(r.degraded for r in routed) / n,
        "routes": {route: sum(r.route == route for r in routed) for route in ("edge", "cloud", "abstain", "cache")},
        "cloud_tokens": {"prompt": prompt, "completion": completion},
        "cost_usd": {"total": cost, "per_1000_questions": 1000 * cost / n},
    }


def f1_interval(f1s: Sequence[float]) -> list[float]:
    """The 95% bootstrap interval (0-100) of the mean of per-question F1s (each 0-1)."""
    lo, hi = bootstrap_ci([100.0 * f for f in f1s])
    return [round(lo, 2), round(hi, 2)]


def retrieval_recall(records: Sequence[dict[str, Any]], top_k: int) -> dict[str, float]:
    """Share of answerable questions whose gold paragraph is in the top k, for k = 1..top_k."""
    rows = [r for r in records if r["has_answer"]]
    if not rows:
        return {}
    return {str(k): sum(1 for r in rows if r.get("gold_rank") and r["gold_rank"] <= k) / len(rows)
            for k in range(1, top_k + 1)}


def write_predictions(out: Path, policy: str, routed: Sequence[Routed]) -> Path:
    path = out / f"predictions-{policy}.json"
    path.write_text(json.dumps({r.id: r.answer for r in routed}, ensure_ascii=False, indent=0))
    details = out / f"details-{policy}.jsonl"
    details.write_text("".join(json.dumps(r.as_dict(), ensure_ascii=False) + "\n" for r in routed))
    return path


def load_report(out: Path) -> dict[str, Any] | None:
    """The report saved in ``out``, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((out / "report.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


def _ci(m: dict[str, Any]) -> str:
    ci = m.get("f1_ci95")
    return f"{ci[0]:.1f}–{ci[1]:.1f}" if ci else "—"


def markdown(report: dict[str, Any]) -> str:
    """report.md: the paper's Table 1 (latency) and Table 2 (accuracy), then the rest."""
    pol = report["policies"]
    base = report["baseline_no_answer"]
    cloud_mean = pol.get("cloud", {}).get("latency_ms", {}).get("mean")
    cfg = report["config"]
    lines = [f"# Evaluation report — {Path(report['data']['path']).name}", "",
             f"{report['n']} questions ({report['data']['has_ans']} answerable, {report['data']['no_ans']} unanswerable); "
             f"context: {'gold paragraph (oracle)' if cfg['oracle_context'] else 'retrieved top-' + str(cfg['top_k'])}; "
             f"link: {cfg['network'] or 'direct'}; Tmax {cfg['budget_ms']:.0f} ms; created {report['created']}.", "",
             "## Table 1 — average latency per configuration", "",
             "| configuration | mean ms | p50 ms | p95 ms | p99 ms | reduction vs cloud-only |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, m in pol.items():
        lat = m["latency_ms"]
        red = f"{100 * (1 - lat['mean'] / cloud_mean):+.1f}%" if cloud_mean and name != "cloud" else "—"
        lines.append(f"| {name} | {lat['mean']:.0f} | {lat['p50']:.0f} | {lat['p95']:.0f} | {lat['p99']:.0f} | {red} |")
    lines += ["", "## Table 2 — precision, recall and F1 per configuration (official SQuAD v2 metric, 0–100)", "",
              "| configuration | precision | recall | F1 | F1 95% CI | exact | HasAns F1 | NoAns acc | cloud calls | abstains "
             "| cache hits |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
              f"| always no-answer (baseline) | {base['precision']:.1f} | {base['recall']:.1f} | {base['f1']:.1f} | "
              f"{_ci(base)} | {base['exact']:.1f} | {base['has_ans_f1']:.1f} | {base['no_ans_accuracy']:.1f} | 0% | 100% | 0% |"]
    for name, m in pol.items():
        lines.append(f"| {name} | {m['precision']:.1f} | {m['recall']:.1f} | {m['f1']:.1f} | {_ci(m)} | {m['exact']:.1f} | "
                     f"{m['has_ans_f1']:.1f} | {m['no_ans_accuracy']:.1f} | {100 * m['cloud_call_rate']:.0f}% | "
                     f"{100 * m['abstain_rate']:.0f}% | {100 * m['cache_hit_rate']:.0f}% |")
    lines += ["", "## Latency per stage (mean ms)", ""]
    stages = [s for s in STAGES if any(s in m["stages_ms"] for m in pol.values())]
    lines += ["| configuration | " + " | ".join(stages) + " |", "|---|" + "---:|" * len(stages)]
    for name, m in pol.items():
        lines.append(f"| {name} | " + " | ".join(f"{m['stages_ms'].get(s, 0.0):.0f}" for s in stages) + " |")
    lines += ["", "## Cloud usage and cost", "", "| configuration | prompt tokens | completion tokens | cost (USD) | per 1000 questions |",
              "|---|---:|---:|---:|---:|"]
    for name, m in pol.items():
        t, c = m["cloud_tokens"], m["cost_usd"]
        lines.append(f"| {name} | {t['prompt']} | {t['completion']} | {c['total']:.5f} | {c['per_1000_questions']:.4f} |")
    price = report["prices_per_1k"]
    lines += ["", f"Prices: {price['prompt']} USD per 1000 prompt tokens, {price['completion']} per 1000 completion "
              "tokens (settings `cloud_price_prompt_per_1k`, `cloud_price_completion_per_1k`)."]
    rec = report.get("retrieval", {}).get("recall_at", {})
    if rec:
        lines += ["", "Retrieval recall@k (gold paragraph in the top k, answerable questions): "
                  + ", ".join(f"@{k} {v:.3f}" for k, v in rec.items()) + "."]
    res = report.get("resources", {})
    if res:
        lines += ["", "## Resources (sampled every 0.5 s during this run)", "",
                  "| process | samples | CPU mean % | CPU max % | RSS max MiB |", "|---|---:|---:|---:|---:|"]
        for name, r in res.items():
            lines.append(f"| {name} | {r['samples']} | {r['cpu_mean_pct']:.0f} | {r['cpu_max_pct']:.0f} | {r['rss_max_mib']:.0f} |")
        lines += ["", "100% CPU = one core busy."]
    if report.get("sweep"):
        lines += ["", "## Cascade threshold sweep (escalate when the escalation score ≥ threshold; the edge "
                  "answers or abstains by its calibrated threshold otherwise)", "",
                  "| threshold | F1 | mean ms | cloud calls |", "|---:|---:|---:|---:|"]
        for row in report["sweep"][::2]:  # every other point; report.json has them all
            lines.append(f"| {row['threshold']:.4f} | {row['f1']:.1f} | {row['latency_mean_ms']:.0f} | "
                         f"{100 * row['cloud_call_rate']:.0f}% |")
    plots = report.get("files", {}).get("plots", [])
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    if cfg.get("mode") == "live":
        lines += ["", "How it was measured (`--live`): every question went through `Cascade.answer` once per policy — "
                  "the product's own path with its answer cache, latency model, circuit breaker and Tmax deadline — "
                  "and each answer's measured total and stage times are reported as they were.", ""]
    else:
        lines += ["", "How it was measured: each question ran once on the edge (retrieval + SLM) and once in the cloud "
                  "(retrieval on the edge, then the sealed call over the link), live and timed; each policy's real "
                  "`decide` then picked its route, so a policy's answer and latency are those of the route it takes "
                  "(an escalation pays the edge and then the cloud). The answer cache is a real AnswerCache fed in "
                  "question order.", ""]
    return "\n".join(lines)
