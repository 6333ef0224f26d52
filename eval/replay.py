"""Replay routing policies over per-question records (see eval/records.py).

Each question's answer and latency under a policy are those of the route the policy's real
``decide`` takes: the edge run, the cloud run (retrieval on the edge, then the cloud), or an
abstention; a cascade that escalates pays the edge time and then the cloud time. The latency
policy's predictions come from an online :class:`LatencyModel` fed, question by question, with
the measured cloud calls — as it is live.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eval.squad_metrics import Question, score_question
from pipelines.cascade import verify_answer
from pipelines.latency import LatencyModel
from pipelines.policies import Policy, Signals


@dataclass(frozen=True)
class Routed:
    """One question under one policy."""

    id: str
    route: str
    answer: str
    f1: float
    latency_ms: float
    cloud_called: bool


def cloud_answer(r: dict[str, Any], min_confidence: float) -> tuple[str, float]:
    """The verified cloud answer of a record and its F1 (0-1), as the live cascade would return it."""
    c = r["cloud"]
    answer = verify_answer(c["answer"], c["confidence"], r["question"], r["passages"], min_confidence)
    q = Question(r["id"], r["question"], "", "", tuple(r["answers"]))
    return answer, score_question(q, answer)["f1"]


def edge_answer(r: dict[str, Any]) -> tuple[str, float]:
    """The edge answer of a record as the current AnswerParser returns it, and its F1 (0-1).

    Re-applying the span extraction to the recorded answer gives what the current parser gives
    (it is idempotent on an extracted span), so records stay valid across parser changes.
    """
    from edge.text import extract_answer_span

    answer = r["edge"]["answer"]
    if answer:
        answer = extract_answer_span(answer, r["question"], r["passages"]) or answer
    q = Question(r["id"], r["question"], "", "", tuple(r["answers"]))
    return answer, score_question(q, answer)["f1"]


Scores = Callable[[dict[str, Any]], tuple[float, float, float]]  # record -> (p_correct, p_unans, p_gain)


def route_records(records: Sequence[dict[str, Any]], policy: Policy, scores: Scores, budget_ms: float,
                  latency: LatencyModel | None = None, cloud_min_confidence: float = 0.0) -> list[Routed]:
    latency = latency or LatencyModel()
    out = []
    for r in records:
        edge, cloud = r["edge"], r["cloud"]
        p_correct, p_unans, p_gain = scores(r)
        predicted = latency.predict(edge["total_ms"], cloud["bytes_up"]).total_ms
        d = policy.decide(Signals(p_correct, p_unans, p_gain, predicted, budget_ms, True))
        if d.route == "cloud":
            took_edge = policy.name != "cloud"
            ms = (edge["total_ms"] if took_edge else r["retrieval_ms"]) + cloud["total_ms"]
            t = cloud["timings"]
            latency.observe_cloud(t.get("network", 0.0), cloud["bytes_up"], cloud["bytes_down"], t.get("cloud", t.get("server", 0.0)),
                                  cloud["usage"].get("completion_tokens", 0), t.get("cloud_decode", t.get("decode")))
            answer, f1 = cloud_answer(r, cloud_min_confidence)
            out.append(Routed(r["id"], "cloud", answer, f1, ms, True))
        elif d.route == "abstain":
            out.append(Routed(r["id"], "abstain", "", 0.0 if r["has_answer"] else 1.0, edge["total_ms"], False))
        else:
            answer, f1 = edge_answer(r)
            out.append(Routed(r["id"], "edge", answer, f1, edge["total_ms"], False))
        latency.observe_edge(edge["total_ms"])
    return out


def summarize(routed: Sequence[Routed], records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """F1, HasAns F1, NoAns accuracy (0-100), latency mean/p95 and cloud-call rate."""
    has = {r["id"]: r["has_answer"] for r in records}
    n = len(routed)
    lat = sorted(x.latency_ms for x in routed)
    has_rows = [x for x in routed if has[x.id]]
    no_rows = [x for x in routed if not has[x.id]]
    return {
        "n": n,
        "f1": 100 * sum(x.f1 for x in routed) / n,
        "has_ans_f1": 100 * sum(x.f1 for x in has_rows) / max(len(has_rows), 1),
        "no_ans_accuracy": 100 * sum(x.f1 for x in no_rows) / max(len(no_rows), 1),
        "latency_mean_ms": sum(lat) / n,
        "latency_p95_ms": lat[min(n - 1, round(0.95 * (n - 1)))],
        "cloud_call_rate": sum(x.cloud_called for x in routed) / n,
        "abstain_rate": sum(x.route == "abstain" for x in routed) / n,
    }
