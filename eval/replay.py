"""Replay routing policies over per-question records (see eval/records.py).

Each question's answer and latency under a policy are those of the route the policy's real
``decide`` takes: the edge run, the cloud run (retrieval on the edge, then the cloud), or an
abstention; a cascade that escalates pays the edge time and then the cloud time. The latency
policy's predictions come from an online :class:`LatencyModel` fed, question by question, with
the measured cloud calls — as it is live.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from eval.squad_metrics import Question, score_question
from eval.stats import percentile
from pipelines.calibration import Calibration
from pipelines.cascade import AnswerCacheLike, verify_answer
from pipelines.latency import LatencyModel
from pipelines.policies import Policy
from pipelines.router import CascadeRouter
from pipelines.stages import split_stages
from pipelines.text import extract_answer_span


@dataclass(frozen=True)
class Routed:
    """One question under one policy."""

    id: str
    route: str  # edge, cloud, abstain or cache
    answer: str
    f1: float
    latency_ms: float
    cloud_called: bool
    stages: dict[str, float] = field(default_factory=dict)  # ms per stage; they add up to latency_ms
    cloud_tokens: dict[str, int] = field(default_factory=dict)  # prompt, completion
    degraded: bool = False  # the cloud call failed and the edge answered

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cloud_answer(r: dict[str, Any], gate: dict[str, float]) -> tuple[str, float]:
    """The verified cloud answer of a record and its F1 (0-1), as the live cascade would return it
    under the calibrated cloud gate (``cloud_min_confidence``, ``cloud_min_answerable``)."""
    c = r["cloud"]
    answer = verify_answer(c["answer"], c["confidence"], c.get("p_answerable", 1.0), r["question"], r["passages"], gate)
    q = Question(r["id"], r["question"], "", "", tuple(r["answers"]))
    return answer, score_question(q, answer)["f1"]


def edge_answer(r: dict[str, Any]) -> tuple[str, float]:
    """The edge answer of a record as the current AnswerParser returns it, and its F1 (0-1).

    Re-applying the span extraction to the recorded answer gives what the current parser gives
    (it is idempotent on an extracted span), so records stay valid across parser changes.
    """
    answer = r["edge"]["answer"]
    if answer:
        answer = extract_answer_span(answer, r["question"], r["passages"]) or answer
    q = Question(r["id"], r["question"], "", "", tuple(r["answers"]))
    return answer, score_question(q, answer)["f1"]


Scores = Callable[[dict[str, Any]], tuple[float, float, float]]  # record -> (p_correct, p_unans, p_gain)


def calibrated_scores(cal: Calibration) -> Scores:
    """A record's routing scores from its edge features, as the live cascade computes them."""
    return lambda r: cal.scores(r["edge"]["features"])


def record_stages(r: dict[str, Any], route: str, *, generated: bool = True, cloud: dict[str, Any] | None = None,
                  extra_ms: float = 0.0) -> dict[str, float]:
    """A record's measured times split into the stages of :func:`~pipelines.stages.split_stages`, as the
    live answer's are: embed and retrieve, the edge generation if it ran (``generated``), the cloud call
    if one was made (a failed one counts as "other"), and ``extra_ms`` (a cache lookup) as the rest."""
    embed = min(r["edge"].get("timings", {}).get("embed", 0.0), r["retrieval_ms"])
    t = {"embed": embed, "retrieve": r["retrieval_ms"] - embed}
    if generated:
        t["generate"] = max(r["edge"]["total_ms"] - r["retrieval_ms"], 0.0)
    if cloud is not None and "error" not in cloud:
        ct = cloud["timings"]
        t.update(seal=ct.get("seal", 0.0), open=ct.get("open", 0.0), network=ct.get("network", 0.0),
                 cloud=ct.get("cloud", ct.get("server", 0.0)))
    cloud_ms = cloud.get("total_ms", 0.0) if cloud is not None else 0.0
    t["total"] = r["retrieval_ms"] + t.get("generate", 0.0) + cloud_ms + extra_ms
    return split_stages(t, route)


def _cloud_tokens(c: dict[str, Any]) -> dict[str, int]:
    u = c.get("usage") or {}
    return {"prompt": int(u.get("prompt_tokens", 0)), "completion": int(u.get("completion_tokens", 0))}


def route_records(records: Sequence[dict[str, Any]], policy: Policy, scores: Scores, budget_ms: float,
                  latency: LatencyModel | None = None, gate: dict[str, float] | None = None,
                  cache: AnswerCacheLike | None = None) -> list[Routed]:
    """Each record under ``policy``, in order; with ``cache``, repeated and near-duplicate questions
    are served from a real :class:`~edge.answer_cache.AnswerCache` as the live cascade would."""
    latency = latency or LatencyModel()
    router = CascadeRouter(latency)  # the live cascade's routing step, on recorded answers
    out = []
    for r in records:
        hit = _cache_hit(r, cache)
        if hit is not None:
            out.append(hit)
            continue
        edge, cloud = r["edge"], r["cloud"]
        bytes_up = cloud.get("bytes_up", 0)
        d = router.route(policy, scores(r), edge["total_ms"], bytes_up, budget_ms, True).decision
        if d.route == "cloud":
            failed = "error" in cloud  # the live cascade degrades to the edge answer (generating it if it had not)
            stages = record_stages(r, "cloud", generated=failed or policy.name != "cloud", cloud=cloud)
            if failed:
                answer, f1 = edge_answer(r)
                out.append(Routed(r["id"], "edge", answer, f1, sum(stages.values()), True, stages, {}, True))
                continue
            t = cloud["timings"]
            latency.observe_cloud(t.get("network", 0.0), bytes_up, cloud["bytes_down"], t.get("cloud", t.get("server", 0.0)),
                                  cloud["usage"].get("completion_tokens", 0), t.get("cloud_decode", t.get("decode")))
            answer, f1 = cloud_answer(r, gate or {})
            routed = Routed(r["id"], "cloud", answer, f1, sum(stages.values()), True, stages, _cloud_tokens(cloud))
        elif d.route == "abstain":
            routed = Routed(r["id"], "abstain", "", 0.0 if r["has_answer"] else 1.0, edge["total_ms"], False,
                            record_stages(r, "abstain"))
        else:
            answer, f1 = edge_answer(r)
            routed = Routed(r["id"], "edge", answer, f1, edge["total_ms"], False, record_stages(r, "edge"))
        latency.observe_edge(edge["total_ms"])
        out.append(routed)
        if cache is not None and "embedding" in r:
            cache.put(r["question"], {"answer": routed.answer, "route": routed.route}, r["embedding"],
                      r["passage_ids"], _VERSION)
    return out


_VERSION = "eval"  # one index for the whole run


def _cache_hit(r: dict[str, Any], cache: AnswerCacheLike | None) -> Routed | None:
    if cache is None or "embedding" not in r:
        return None
    t0 = time.perf_counter()
    hit = cache.lookup_exact(r["question"], _VERSION)
    retrieved = hit is None
    if retrieved:
        # A near-duplicate is found only after embedding and retrieval, as live.
        t0 = time.perf_counter()
        hit = cache.lookup(r["question"], r["embedding"], r["passage_ids"], _VERSION)
        if hit is None:
            return None
    lookup_ms = (time.perf_counter() - t0) * 1000.0
    stages = (record_stages(r, "cache", generated=False, extra_ms=lookup_ms) if retrieved else {"cache": lookup_ms})
    answer = str(hit.answer.get("answer", ""))
    q = Question(r["id"], r["question"], "", "", tuple(r["answers"]))
    return Routed(r["id"], "cache", answer, score_question(q, answer)["f1"], sum(stages.values()), False, stages)


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
        "latency_p95_ms": percentile(lat, 95),
        "cloud_call_rate": sum(x.cloud_called for x in routed) / n,
        "abstain_rate": sum(x.route == "abstain" for x in routed) / n,
    }
