"""`make calibrate`: fit the routing models on the calibration split and choose thresholds.

Runs (or resumes) the per-question records for the first N calibration-split questions of
dev-a — edge and cloud answer each — then fits three logistic regressions over the edge
features (the edge answer is correct; the question is unanswerable; the cloud answer beats the
edge's), reports their 5-fold cross-validated AUROC and expected calibration error, and picks
the policy thresholds on the out-of-fold probabilities: the best F1 with at most
``--max-cloud-rate`` of questions escalated. Writes pipelines/calibration/default.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from eval.records import labelled, read_records
from eval.replay import cloud_answer, edge_answer, route_records, summarize
from pipelines.calibration import DEFAULT_CALIBRATION, FEATURES, Calibration, LogisticModel
from pipelines.policies import CascadePolicy, CloudPolicy, EdgePolicy, LearnedPolicy


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (p >= lo) & (p < hi) if hi < 1 else (p >= lo) & (p <= hi)
        if mask.any():
            ece += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(ece)


def fit_model(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[LogisticModel, np.ndarray, dict[str, float]]:
    """Fitted model, out-of-fold probabilities and their AUROC/ECE."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    if len(set(y.tolist())) < 2:
        raise ValueError("a calibration label has one class only — use more questions (--n)")
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    oof = cross_val_predict(pipe, x, y, cv=folds, method="predict_proba")[:, 1]
    pipe.fit(x, y)
    scaler, lr = pipe[0], pipe[1]
    model = LogisticModel(
        weights={f: float(w) for f, w in zip(FEATURES, lr.coef_[0])},
        bias=float(lr.intercept_[0]),
        mean={f: float(m) for f, m in zip(FEATURES, scaler.mean_)},
        scale={f: float(s) for f, s in zip(FEATURES, scaler.scale_)},
    )
    metrics = {"auroc": float(roc_auc_score(y, oof)), "ece": expected_calibration_error(oof, y), "positives": float(y.mean())}
    return model, oof, metrics


def choose_thresholds(records: list[dict[str, Any]], oof: dict[str, np.ndarray], max_cloud_rate: float,
                      budget_ms: float) -> tuple[dict[str, float], dict[str, Any]]:
    """Grid-search the abstain and cascade thresholds, then the learned one, for best F1 under the cap."""
    idx = {r["id"]: i for i, r in enumerate(records)}

    def scores(r: dict[str, Any]) -> tuple[float, float, float]:
        i = idx[r["id"]]
        return float(oof["correct"][i]), float(oof["unanswerable"][i]), float(oof["gain"][i])

    grid = [round(x, 2) for x in np.arange(0.0, 1.0001, 0.05)]
    # The cloud's own gate first: the p(answerable) and confidence under which its answer is dropped to "".
    cloud_f1: dict[str, float] = {}
    best_gate: tuple[float, dict[str, float]] | None = None
    for ma in grid:
        for mc in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
            gate = {"cloud_min_answerable": ma, "cloud_min_confidence": mc}
            f1 = summarize(route_records(records, CloudPolicy(), scores, budget_ms, gate=gate), records)["f1"]
            cloud_f1[f"{ma:.2f}/{mc:.1f}"] = f1
            if best_gate is None or f1 > best_gate[0]:
                best_gate = (f1, gate)
    assert best_gate is not None
    gate = best_gate[1]
    # The edge alone: the abstain gate that serves it best, searched over the same range as the
    # cascade's (≥ 0.2, ties to the higher gate): a gate of 0 would make the edge policy abstain on
    # every question, stated or not, whenever its answers do not beat the empty one on average.
    edge_best = max(((summarize(route_records(records, EdgePolicy(0.5, ta), scores, budget_ms), records)["f1"], ta)
                     for ta in [*grid[4:], 1.01]))
    best: tuple[float, float, float] | None = None
    for ta in [*grid[4:], 1.01]:
        for tc in grid:
            s = summarize(route_records(records, CascadePolicy(tc, ta), scores, budget_ms, gate=gate), records)
            if s["cloud_call_rate"] <= max_cloud_rate and (best is None or s["f1"] > best[0]):
                best = (s["f1"], tc, ta)
    assert best is not None
    _, tc, ta = best
    best_l: tuple[float, float] | None = None
    for tl in grid:
        s = summarize(route_records(records, LearnedPolicy(tl, ta), scores, budget_ms, gate=gate), records)
        if s["cloud_call_rate"] <= max_cloud_rate and (best_l is None or s["f1"] > best_l[0]):
            best_l = (s["f1"], tl)
    assert best_l is not None
    thresholds = {"cascade": tc, "latency": tc, "abstain": ta, "learned": best_l[1], "edge": 0.5, "cloud": 0.5,
                  "edge_abstain": edge_best[1], **gate}
    return thresholds, {"cascade_f1_oof": best[0], "learned_f1_oof": best_l[0], "edge_f1": edge_best[0],
                        "cloud_f1": best_gate[0], "cloud_f1_by_gate": cloud_f1}


def answerability_metrics(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """AUROC and ECE of each tier's raw p(answerable) (the yes/no probe) against "the question has
    an answer", and the ECE of the edge's after the logistic calibration (out of fold)."""
    from sklearn.metrics import roc_auc_score

    y = np.array([r["has_answer"] for r in records], dtype=int)
    out: dict[str, dict[str, float]] = {}
    for tier, values in (("edge", [r["edge"]["features"]["p_answerable"] for r in records]),
                         ("cloud", [r["cloud"].get("p_answerable", 0.5) for r in records])):
        p = np.array(values, dtype=float)
        out[tier] = {"auroc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
                     "ece": expected_calibration_error(p, y), "n": float(len(y))}
        if 0 < y.sum() < len(y):
            _, oof, m = _fit_one(p.reshape(-1, 1), y)
            out[tier]["ece_calibrated"] = m["ece"]
    return out


def _fit_one(x: np.ndarray, y: np.ndarray) -> tuple[Any, np.ndarray, dict[str, float]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    lr = LogisticRegression(max_iter=1000)
    oof = cross_val_predict(lr, x, y, cv=folds, method="predict_proba")[:, 1]
    return lr.fit(x, y), oof, {"ece": expected_calibration_error(oof, y)}


def fit(records: list[dict[str, Any]], max_cloud_rate: float, budget_ms: float, provenance: dict[str, Any]) -> dict[str, Any]:
    x = np.array([[r["edge"]["features"][f] for f in FEATURES] for r in records], dtype=float)
    labels = {
        "correct": np.array([edge_answer(r)[1] >= 0.5 for r in records], dtype=int),
        "unanswerable": np.array([not r["has_answer"] for r in records], dtype=int),
        # Against the cloud answer as returned (grounded, no gate yet).
        "gain": np.array([cloud_answer(r, {})[1] > edge_answer(r)[1] for r in records], dtype=int),
    }
    models, oof, metrics = {}, {}, {}
    for name, y in labels.items():
        model, probs, m = fit_model(x, y)
        models[name], oof[name], metrics[name] = model, probs, m
    thresholds, chosen = choose_thresholds(records, oof, max_cloud_rate, budget_ms)
    metrics["answerability"] = answerability_metrics(records)
    return {
        "models": {k: {"weights": m.weights, "bias": m.bias, "mean": m.mean, "scale": m.scale} for k, m in models.items()},
        "thresholds": thresholds,
        "metrics": {**metrics, **chosen, "max_cloud_rate": max_cloud_rate, "n": len(records)},
        "provenance": provenance,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=Path, required=True, help="JSONL written by eval.records (calibration split)")
    ap.add_argument("--out", type=Path, default=DEFAULT_CALIBRATION)
    ap.add_argument("--max-cloud-rate", type=float, default=0.4)
    ap.add_argument("--budget-ms", type=float, default=4000.0)
    args = ap.parse_args()

    records = labelled(read_records(args.records).values())
    provenance = {"records": str(args.records), "records_sha256": hashlib.sha256(args.records.read_bytes()).hexdigest(),
                  "fitted_at": time.strftime("%Y-%m-%d"), "question_ids": sorted(r["id"] for r in records)}
    data = fit(records, args.max_cloud_rate, args.budget_ms, provenance)
    args.out.write_text(json.dumps(data, indent=1))
    Calibration.load(args.out)  # round-trip check
    print(json.dumps({"metrics": data["metrics"], "thresholds": data["thresholds"]}, indent=1))


if __name__ == "__main__":
    main()
