"""`make calibrate`: fit every routing decision's answer/abstain models on the calibration split.

From the per-question records of the calibration split (each question read on the edge and in the
cloud, every passage's raw signals kept), for each decision (see :mod:`pipelines.calibration`):

1. **Signals, each alone.** The out-of-fold AUROC of every signal against "the question has an
   answer", as a one-signal logistic regression (reported; the table in BENCHMARKS.md).
2. **Kept only if it helps.** Greedy forward selection, per model, by out-of-fold log-loss (5 folds):
   a signal joins only when it lowers the loss by at least :data:`MIN_GAIN`.
3. **Two models per decision**: p(answerable) (logistic) and the expected F1 of the tier's answer when
   the question has one (logistic on the F1 as a soft label).
4. **Thresholds out of fold, by expected F1**: each on the out-of-fold predictions of every calibration
   question (the cloud's keep / drop as if each were escalated), the cascade's escalation under the
   cloud-call cap. The escalation model's label is the cloud's out-of-fold outcome under the cascade's
   keep / drop.

5. **The read plans** (:class:`reading.passages.ReadPlan`). The cloud's: the full reading, or the lean
   one (only the best passage answered, its answer checked), kept when neither its cloud-only nor its
   cascade F1 drops by more than :data:`PLAN_TOLERANCE`. The edge's: the full reading, or the lean one
   (probe every passage, answer only the best, no check) reading only the passages within a gap of
   the best retrieval score. Each plan's readings are derived from the recorded full ones (its steps
   are a subset of them), all of the above is fitted for each, and the cheapest edge plan (fewest model
   passes per question) whose out-of-fold cascade F1 is within :data:`PLAN_TOLERANCE` of the full
   reading's is kept.

Nothing is fitted or chosen on a question outside the calibration split. Writes
pipelines/calibration/default.json (with provenance: records, their hash, the question ids).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from eval.records import labelled, read_records
from eval.replay import (
    edge_answer,
    planned,
    raw_cloud_f1,
    record_both_signals,
    record_cloud_signals,
    record_edge_signals,
)
from pipelines import FULL, ReadPlan
from pipelines.calibration import (
    DEFAULT_CALIBRATION,
    AnswerModel,
    Calibration,
    LogisticModel,
)
from pipelines.policies import gain_score
from pipelines.signals import PassageReading

FOLDS = 5
SEED = 0
# A signal joins a model only when it lowers the out-of-fold log-loss by at least this (nats per question).
MIN_GAIN = 0.002
# The cascade's cloud-call cap when choosing its escalation threshold: under the 50% the cascade is held
# to, with room for the held-out questions to differ from the calibration split.
MAX_CLOUD_RATE = 0.45
# Threshold grid (answer scores and escalation scores); the F1 curve is smoothed over +-SMOOTH steps so
# that a threshold is not chosen on one lucky question.
GRID = np.round(np.linspace(0.0, 1.0, 101), 2)
SMOOTH = 2
# The escalation threshold's grid is finer: the cascade's F1 climbs with its cloud-call rate, so its best
# threshold sits at the cap, and a coarse step would stop well short of it.
ESC_GRID = np.round(np.linspace(0.0, 1.0, 1001), 3)
# The edge's read plans tried (see 5. above): the full reading, and the lean one at each retrieval-score gap
# (None: every passage read). The cheapest within PLAN_TOLERANCE F1 points (out of fold) of the full one wins.
LEAN_GAPS = (0.05, 0.1, 0.15, 0.2, 0.3, None)
PLAN_TOLERANCE = 0.5
# The cloud's lean plan: every passage probed (it has no retrieval scores), only the best answered, that answer
# checked (its check is among the cloud's strongest answer-quality signals).
CLOUD_LEAN = ReadPlan("best", verify=True)
C = 1.0  # inverse L2 strength of every logistic regression (standardized signals; as scikit-learn's default)


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (p >= lo) & (p < hi) if hi < 1 else (p >= lo) & (p <= hi)
        if mask.any():
            ece += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(ece)


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN with one class only."""
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


# --- the data of one fit ------------------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    """The calibration records as arrays: signals per decision, labels, each tier's answer F1."""

    ids: list[str]
    has_answer: np.ndarray  # 1 = the question has an answer
    edge: list[dict[str, float]]  # retrieval + edge.*
    cloud: list[dict[str, float]]  # retrieval + cloud.*
    both: list[dict[str, float]]  # retrieval + edge.* + cloud.* + agreement
    f1_edge: np.ndarray  # F1 (0-1) of the edge's answer
    f1_cloud: np.ndarray  # F1 of the cloud's answer
    edge_answered: np.ndarray  # the edge's answer is not empty
    cloud_answered: np.ndarray


def table(records: Sequence[dict[str, Any]]) -> Table:
    """Every signal of every record, computed from its raw readings as the live cascade computes them."""
    edge, cloud, both = [], [], []
    f1e, f1c, ae, ac = [], [], [], []
    for r in records:
        edge.append(record_edge_signals(r))
        cloud.append(record_cloud_signals(r))
        both.append(record_both_signals(r))
        f1e.append(edge_answer(r)[1] if r["edge"]["answer"] else 0.0)
        f1c.append(raw_cloud_f1(r) if cloud[-1]["cloud.has_answer"] else 0.0)
        ae.append(bool(r["edge"]["answer"]))
        ac.append(bool(cloud[-1]["cloud.has_answer"]))
    return Table([r["id"] for r in records], np.array([r["has_answer"] for r in records], dtype=int), edge, cloud, both,
                 np.array(f1e), np.array(f1c), np.array(ae), np.array(ac))


def matrix(rows: Sequence[dict[str, float]], features: Sequence[str]) -> np.ndarray:
    return np.array([[row[f] for f in features] for row in rows], dtype=float).reshape(len(rows), len(features))


# --- logistic regressions with soft labels, out of fold -------------------------------------------
@dataclass(frozen=True)
class Logistic:
    """An L2-regularized logistic regression over standardized columns, fitted by Newton's method on
    soft labels (y in [0, 1]: the F1 of an answer as well as 0/1). Thousands of fits are needed by
    the signal selection, each a few Newton steps on a handful of columns: milliseconds."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> Logistic:
        mean = x.mean(axis=0) if x.shape[1] else np.zeros(0)
        scale = x.std(axis=0) if x.shape[1] else np.ones(0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
        beta = np.zeros(z.shape[1])
        ybar = float(np.clip(y.mean(), 1e-4, 1 - 1e-4))
        beta[0] = np.log(ybar / (1 - ybar))
        penalty = np.eye(z.shape[1]) / C
        penalty[0, 0] = 0.0  # the intercept is not shrunk
        for _ in range(50):
            p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -50, 50)))
            grad = z.T @ (p - y) + penalty @ beta
            hess = (z * (p * (1 - p))[:, None]).T @ z + penalty + 1e-9 * np.eye(len(beta))
            step = np.linalg.solve(hess, grad)
            beta -= step
            if np.max(np.abs(step)) < 1e-8:
                break
        return cls(mean, scale, beta[1:], float(beta[0]))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.intercept + ((x - self.mean) / self.scale) @ self.coef, -50, 50)))


def folds(n: int, strata: np.ndarray) -> list[np.ndarray]:
    """Fixed stratified folds (by ``strata``) over n rows: the test indices of each."""
    kf = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    return [test for _, test in kf.split(np.zeros(n), strata)]


def out_of_fold(x: np.ndarray, y: np.ndarray, test_folds: list[np.ndarray]) -> np.ndarray:
    """Each row's prediction by a model fitted without its fold."""
    p = np.zeros(len(y))
    for test in test_folds:
        train = np.setdiff1d(np.arange(len(y)), test)
        p[test] = Logistic.fit(x[train], y[train]).predict(x[test])
    return p


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def select(rows: Sequence[dict[str, float]], candidates: Sequence[str], y: np.ndarray,
           test_folds: list[np.ndarray]) -> tuple[list[str], list[dict[str, float]]]:
    """Greedy forward selection by out-of-fold log-loss; returns the kept signals and each step's loss."""
    x_all = matrix(rows, candidates)
    kept: list[int] = []
    best = log_loss(y, out_of_fold(x_all[:, []], y, test_folds))
    trace = [{"signal": "(base rate)", "log_loss": round(best, 5)}]
    while True:
        trials = [(log_loss(y, out_of_fold(x_all[:, kept + [j]], y, test_folds)), j)
                  for j in range(len(candidates)) if j not in kept]
        if not trials:
            break
        loss, j = min(trials)
        if best - loss < MIN_GAIN:
            break
        kept.append(j)
        best = loss
        trace.append({"signal": candidates[j], "log_loss": round(loss, 5)})
    return [candidates[j] for j in kept], trace


def to_model(x: np.ndarray, y: np.ndarray, features: Sequence[str]) -> LogisticModel:
    """The fitted regression as the edge evaluates it."""
    m = Logistic.fit(x, y)
    return LogisticModel(tuple(features), tuple(float(w) for w in m.coef), m.intercept,
                         tuple(float(v) for v in m.mean), tuple(float(v) for v in m.scale))


# --- one decision -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Fitted:
    """One answer/abstain decision: its models, their out-of-fold predictions and what was chosen."""

    answerable: LogisticModel
    quality: LogisticModel
    p_answerable: np.ndarray  # out of fold
    quality_oof: np.ndarray  # out of fold
    report: dict[str, Any]

    @property
    def answer(self) -> np.ndarray:
        """The expected F1 of answering, out of fold."""
        return self.p_answerable * self.quality_oof

    @property
    def score(self) -> np.ndarray:
        """The answer score, out of fold (:attr:`pipelines.calibration.Valued.score`)."""
        return gain_score(self.answer, 1.0 - self.p_answerable)


def fit_decision(rows: Sequence[dict[str, float]], has_answer: np.ndarray, f1: np.ndarray,
                 test_folds: list[np.ndarray]) -> Fitted:
    """p(answerable) over every question, the answer's expected F1 over the answerable ones."""
    names = sorted(rows[0])
    a_feats, a_trace = select(rows, names, has_answer.astype(float), test_folds)
    x_a = matrix(rows, a_feats)
    p_a = out_of_fold(x_a, has_answer.astype(float), test_folds)
    idx = np.flatnonzero(has_answer)
    rows_q = [rows[i] for i in idx]
    q_folds = [np.flatnonzero(np.isin(idx, t)) for t in test_folds]
    q_feats, q_trace = select(rows_q, names, f1[idx], q_folds)
    x_q = matrix(rows, q_feats)
    # Out of fold for every question (the unanswerable ones too: their answer is scored by p_answerable).
    q = np.zeros(len(rows))
    for test in test_folds:
        train = np.setdiff1d(idx, test)
        q[test] = Logistic.fit(x_q[train], f1[train]).predict(x_q[test])
    report = {"answerable": {"signals": a_feats, "selection": a_trace, "auroc": auroc(has_answer, p_a),
                             "ece": expected_calibration_error(p_a, has_answer)},
              "quality": {"signals": q_feats, "selection": q_trace,
                          "mean_abs_error": float(np.mean(np.abs(q[idx] - f1[idx])))}}
    return Fitted(to_model(x_a, has_answer.astype(float), a_feats), to_model(x_q[idx], f1[idx], q_feats), p_a, q, report)


def smoothed_best(values: Sequence[float], allowed: Sequence[bool] | None = None) -> int:
    """The grid index whose F1, averaged over its +-SMOOTH neighbours, is highest (among ``allowed``)."""
    v = np.asarray(values, dtype=float)
    pad = np.pad(v, SMOOTH, mode="edge")
    smooth = np.convolve(pad, np.ones(2 * SMOOTH + 1) / (2 * SMOOTH + 1), mode="valid")
    if allowed is not None:
        smooth = np.where(np.asarray(allowed), smooth, -np.inf)
    return int(np.argmax(smooth))


def keep_f1(score: np.ndarray, answered: np.ndarray, f1: np.ndarray, has_answer: np.ndarray, t: float) -> np.ndarray:
    """Per-question F1 when an answer stands at score >= t (an empty answer is "no answer" either way)."""
    keep = (score >= t) & answered
    return np.where(keep, f1, 1.0 - has_answer)


def choose_threshold(score: np.ndarray, answered: np.ndarray, f1: np.ndarray, has_answer: np.ndarray) -> tuple[float, float]:
    """The answer-score threshold with the best (smoothed) mean F1; returns it and that F1 (0-100)."""
    curve = [float(keep_f1(score, answered, f1, has_answer, t).mean()) for t in GRID]
    i = smoothed_best(curve)
    return float(GRID[i]), 100 * curve[i]


def cascade_outcome(esc_score: np.ndarray, t_esc: float, edge_score: np.ndarray, t_edge: float,
                    edge_answered: np.ndarray, f1_edge: np.ndarray, cloud_f1: np.ndarray,
                    has_answer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-question F1 and escalation of the cascade (:class:`pipelines.policies.CascadePolicy`)."""
    escalate = esc_score >= t_esc
    edge = keep_f1(edge_score, edge_answered, f1_edge, has_answer, t_edge)
    return np.where(escalate, cloud_f1, edge), escalate


def cascade_curve(esc_score: np.ndarray, edge: Fitted, t_edge: float, t: Table,
                  outcome: np.ndarray) -> tuple[list[float], list[float]]:
    """The cascade's mean F1 and cloud-call rate at each escalation threshold of :data:`ESC_GRID`."""
    curve, rates = [], []
    for th in ESC_GRID:
        f1, escalated = cascade_outcome(esc_score, th, edge.score, t_edge, t.edge_answered, t.f1_edge, outcome,
                                        t.has_answer)
        curve.append(float(f1.mean()))
        rates.append(float(escalated.mean()))
    return curve, rates


def plan_passes(records: Sequence[dict[str, Any]], tier: str = "edge") -> float:
    """Model passes per question of a tier's readings in ``records`` (probes, answers, checks): the cost
    a read plan is chosen by."""
    total = sum(PassageReading.from_json(r[tier]["reading"]).passes for r in records)
    return total / max(len(records), 1)


def candidate_plans() -> list[ReadPlan]:
    return [FULL, *(ReadPlan("best", verify=False, gap=g) for g in LEAN_GAPS)]


def choose_cloud_plan(records: list[dict[str, Any]], max_cloud_rate: float,
                      progress: Callable[[str], None] = print) -> tuple[ReadPlan, list[dict[str, Any]]]:
    """The cloud's read plan: :data:`CLOUD_LEAN` (only the best passage answered, its answer checked) when its
    out-of-fold cloud-only and cascade F1 are both within :data:`PLAN_TOLERANCE` of the full reading's, else
    the full reading; and both plans' figures."""
    rows = []
    for plan in (FULL, CLOUD_LEAN):
        recs = planned(records, FULL, plan)
        m = fit(recs, max_cloud_rate, {}, progress=lambda _: None).metrics
        rows.append({"plan": plan.to_json(), "passes": round(plan_passes(recs, "cloud"), 3),
                     "cloud_f1": round(m["oof_f1"]["cloud"], 3), "cascade_f1": round(m["oof_f1"]["cascade"], 3),
                     "cloud_auroc": round(m["cloud"]["answerable"]["auroc"], 4)})
        progress(f"cloud read plan {plan.to_json()}: {rows[-1]['passes']:.2f} passes a question, out-of-fold cloud-only "
                 f"F1 {rows[-1]['cloud_f1']:.2f}, cascade F1 {rows[-1]['cascade_f1']:.2f}")
    full, lean = rows
    keep = all(lean[k] >= full[k] - PLAN_TOLERANCE for k in ("cloud_f1", "cascade_f1"))
    full["chosen"], lean["chosen"] = not keep, keep
    return (CLOUD_LEAN if keep else FULL), rows


def choose_plan(records: list[dict[str, Any]], max_cloud_rate: float, progress: Callable[[str], None] = print,
                cloud_plan: ReadPlan = FULL) -> tuple[ReadPlan, list[dict[str, Any]]]:
    """The cheapest edge read plan whose out-of-fold cascade F1 is within :data:`PLAN_TOLERANCE` of the full
    reading's (the cloud reading by ``cloud_plan``); and every plan's figures (for the report)."""
    rows = []
    for plan in candidate_plans():
        recs = planned(records, plan, cloud_plan)
        m = fit(recs, max_cloud_rate, {}, progress=lambda _: None, plan=plan, cloud_plan=cloud_plan).metrics
        rows.append({"plan": plan.to_json(), "passes": round(plan_passes(recs), 3),
                     "cascade_f1": round(m["oof_f1"]["cascade"], 3), "edge_f1": round(m["oof_f1"]["edge"], 3),
                     "learned_f1": round(m["oof_f1"]["learned"], 3), "edge_auroc": round(m["edge"]["answerable"]["auroc"], 4)})
        progress(f"read plan {plan.to_json()}: {rows[-1]['passes']:.2f} passes a question, out-of-fold cascade F1 "
                 f"{rows[-1]['cascade_f1']:.2f}")
    full = rows[0]["cascade_f1"]
    ok = [(row["passes"], i) for i, row in enumerate(rows) if row["cascade_f1"] >= full - PLAN_TOLERANCE]
    best = min(ok)[1]
    for i, row in enumerate(rows):
        row["chosen"] = i == best
    return candidate_plans()[best], rows


def fit(records: list[dict[str, Any]], max_cloud_rate: float, provenance: dict[str, Any],
        progress: Callable[[str], None] = print, plan: ReadPlan = FULL, cloud_plan: ReadPlan = FULL) -> Calibration:
    """Fit every decision on ``records`` (the calibration split, their edge and cloud readings already those
    of ``plan`` and ``cloud_plan``) and choose its threshold out of fold."""
    t = table(records)
    test_folds = folds(len(records), t.has_answer)
    progress(f"{len(records)} questions ({int(t.has_answer.sum())} answerable); fitting the edge's decision")
    edge = fit_decision(t.edge, t.has_answer, t.f1_edge, test_folds)
    t_edge, f1_edge_only = choose_threshold(edge.score, t.edge_answered, t.f1_edge, t.has_answer)
    progress("the cloud's keep / drop (cloud-only)")
    cloud = fit_decision(t.cloud, t.has_answer, t.f1_cloud, test_folds)
    t_cloud, f1_cloud_only = choose_threshold(cloud.score, t.cloud_answered, t.f1_cloud, t.has_answer)
    progress("the cloud's keep / drop in the cascade (both tiers' signals)")
    both = fit_decision(t.both, t.has_answer, t.f1_cloud, test_folds)
    t_both, f1_both = choose_threshold(both.score, t.cloud_answered, t.f1_cloud, t.has_answer)
    # The escalation model learns the cloud's out-of-fold outcome under the cascade's keep / drop. Its signals:
    # the forward selection's, or all of the edge's (L2-regularized) — whichever gives the cascade the better
    # out-of-fold F1 under the cloud-call cap (a soft label with little signal per question: the selection
    # by log-loss alone can stop after one).
    outcome = keep_f1(both.score, t.cloud_answered, t.f1_cloud, t.has_answer, t_both)
    progress("the escalation model")
    selected, esc_trace = select(t.edge, sorted(t.edge[0]), outcome, test_folds)
    edge_best = np.maximum(edge.answer, 1 - edge.p_answerable)
    candidates = {}
    for name, feats in (("selected", selected), ("all", sorted(t.edge[0]))):
        esc_oof = out_of_fold(matrix(t.edge, feats), outcome, test_folds)
        esc_score = gain_score(esc_oof, edge_best)
        curve, rates = cascade_curve(esc_score, edge, t_edge, t, outcome)
        i = smoothed_best(curve, [r <= max_cloud_rate for r in rates])
        candidates[name] = (curve[i], feats, esc_oof, esc_score, curve, rates, i)
    choice = max(candidates, key=lambda k: candidates[k][0])
    _, esc_feats, esc_oof, esc_score, curve, rates, i = candidates[choice]
    x_esc = matrix(t.edge, esc_feats)
    learned = float(np.mean(cascade_outcome(esc_score, 0.5, edge.score, t_edge, t.edge_answered, t.f1_edge, outcome,
                                            t.has_answer)[0]))
    metrics = {
        "n": len(records), "answerable": int(t.has_answer.sum()), "folds": FOLDS, "max_cloud_rate": max_cloud_rate,
        "always_empty_f1": 100 * float(1 - t.has_answer.mean()),
        "signals_alone": signals_alone(t, test_folds),
        "edge": edge.report, "cloud": cloud.report, "cloud_edge": both.report,
        "escalate": {"signals": esc_feats, "selection": esc_trace, "chosen": choice,
                     "cascade_f1_by_signals": {k: 100 * v[0] for k, v in candidates.items()},
                     "mean_abs_error": float(np.mean(np.abs(esc_oof - outcome)))},
        "oof_f1": {"edge": f1_edge_only, "cloud": f1_cloud_only, "cloud_keep_in_cascade": f1_both,
                   "cascade": 100 * curve[i], "learned": 100 * learned},
        "oof_cloud_rate": {"cascade": rates[i]},
        "cascade_curve": [{"threshold": float(th), "f1": 100 * f, "cloud_rate": r}
                          for th, f, r in list(zip(ESC_GRID, curve, rates, strict=True))[::10]],
    }
    return Calibration(
        edge=AnswerModel(edge.answerable, edge.quality, t_edge),
        escalate=to_model(x_esc, outcome, esc_feats), escalate_threshold=float(ESC_GRID[i]),
        cloud=AnswerModel(cloud.answerable, cloud.quality, t_cloud),
        cloud_edge=AnswerModel(both.answerable, both.quality, t_both),
        metrics=metrics, provenance=provenance, read_plan=plan, cloud_read_plan=cloud_plan)


def signals_alone(t: Table, test_folds: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Each signal's out-of-fold AUROC against "the question has an answer", as a one-signal logistic
    regression (so a signal that says "unanswerable" when high scores as well as one that says "answerable")."""
    out: dict[str, dict[str, float]] = {}
    y = t.has_answer.astype(float)
    for name in sorted(t.both[0]):
        p = out_of_fold(matrix(t.both, [name]), y, test_folds)
        out[name] = {"auroc": round(auroc(t.has_answer, p), 4)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=Path, required=True, help="JSONL written by eval.records (calibration split)")
    ap.add_argument("--out", type=Path, default=DEFAULT_CALIBRATION)
    ap.add_argument("--max-cloud-rate", type=float, default=MAX_CLOUD_RATE)
    ap.add_argument("--full-reading", dest="choose_plan", action="store_false",
                    help="fit for the edge's full reading (every passage answered, the answer checked) rather than "
                         "choosing the cheapest read plan that costs no F1")
    args = ap.parse_args()

    records = labelled(read_records(args.records).values())
    provenance = {"records": str(args.records), "records_sha256": hashlib.sha256(args.records.read_bytes()).hexdigest(),
                  "fitted_at": time.strftime("%Y-%m-%d"), "question_ids": sorted(r["id"] for r in records)}
    cloud_plan, cloud_plans = choose_cloud_plan(records, args.max_cloud_rate) if args.choose_plan else (FULL, [])
    plan, plans = choose_plan(records, args.max_cloud_rate, cloud_plan=cloud_plan) if args.choose_plan else (FULL, [])
    cal = fit(planned(records, plan, cloud_plan), args.max_cloud_rate, provenance, plan=plan, cloud_plan=cloud_plan)
    cal.metrics["read_plans"] = plans
    cal.metrics["cloud_read_plans"] = cloud_plans
    cal.save(args.out)
    Calibration.load(args.out)  # round-trip check
    m = cal.metrics
    print(json.dumps({"oof_f1": m["oof_f1"], "oof_cloud_rate": m["oof_cloud_rate"],
                      "auroc": {k: m[k]["answerable"]["auroc"] for k in ("edge", "cloud", "cloud_edge")},
                      "read_plan": plan.to_json(), "cloud_read_plan": cloud_plan.to_json(),
                     "thresholds": {"edge": cal.edge.threshold, "cloud": cal.cloud.threshold,
                                     "cloud_edge": cal.cloud_edge.threshold, "escalate": cal.escalate_threshold}},
                     indent=1))


if __name__ == "__main__":
    main()
