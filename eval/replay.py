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
from pipelines import FULL, ReadPlan, under_plan
from pipelines.calibration import Calibration, Valued
from pipelines.cascade import AnswerCacheLike
from pipelines.latency import LatencyModel
from pipelines.outcome import EdgeRead, settle
from pipelines.policies import Policy
from pipelines.router import CascadeRouter
from pipelines.signals import (
    PassageReading,
    PassageScore,
    cloud_signals,
    edge_signals,
    keep_cloud_answer,
    scores_from_json,
)
from pipelines.stages import split_stages


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
    degraded: bool = False  # the cloud call failed and the edge decided alone

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_scores(r: dict[str, Any]) -> list[PassageScore]:
    """A record's per-passage retrieval scores."""
    return scores_from_json(r["passage_scores"])


def record_edge_signals(r: dict[str, Any]) -> dict[str, float]:
    """A record's edge signals, computed from its raw reading as the live edge computes them (so a change
    of the signals needs no new records)."""
    return edge_signals(r["question"], record_scores(r), PassageReading.from_json(r["edge"]["reading"]))


def record_cloud_signals(r: dict[str, Any]) -> dict[str, float]:
    """A record's cloud-only signals (the cloud policy's keep / drop reads these)."""
    return cloud_signals(r["question"], record_scores(r), PassageReading.from_json(r["cloud"]["reading"]))


def record_both_signals(r: dict[str, Any]) -> dict[str, float]:
    """A record's signals of both tiers and their agreement (the cascade's keep / drop reads these)."""
    return cloud_signals(r["question"], record_scores(r), PassageReading.from_json(r["cloud"]["reading"]),
                         record_edge_signals(r), r["edge"]["answer"])


def planned(records: Sequence[dict[str, Any]], plan: ReadPlan, cloud_plan: ReadPlan = FULL) -> list[dict[str, Any]]:
    """The records as the edge (``plan``) and the cloud (``cloud_plan``) would have read them
    (:func:`reading.passages.under_plan`: a plan's steps are a subset of the full reading's): each full
    reading, and its answer, replaced; a reading that is not a full one (read under a leaner plan already)
    kept as it is. Nothing else changes."""
    if plan == FULL and cloud_plan == FULL:
        return list(records)
    out = []
    for r in records:
        scores = [s["fused"] for s in r["passage_scores"]]
        edge = _under(r["edge"], plan, scores)
        cloud = _under(r["cloud"], cloud_plan, scores) if "reading" in r.get("cloud", {}) else r.get("cloud")
        out.append(r | {"edge": edge} | ({"cloud": cloud} if cloud is not None else {}))
    return out


def _under(tier: dict[str, Any], plan: ReadPlan, scores: list[float]) -> dict[str, Any]:
    full = PassageReading.from_json(tier["reading"])
    if plan == FULL or len(full.passages) != len(scores) or not all(s.asked for s in full.passages):
        return tier
    reading = under_plan(full, plan, scores)
    return tier | {"reading": reading.to_json(), "answer": reading.answer}


def raw_cloud_f1(r: dict[str, Any]) -> float:
    """F1 (0-1) of the cloud's answer before its keep / drop."""
    return score_question(_question(r), PassageReading.from_json(r["cloud"]["reading"]).answer)["f1"]


def _question(r: dict[str, Any]) -> Question:
    return Question(r["id"], r["question"], "", "", tuple(r["answers"]))


def cloud_answer(r: dict[str, Any], cal: Calibration, with_edge: bool) -> tuple[str, float]:
    """The cloud answer of a record as the live cascade returns it — kept or dropped by the cloud's
    keep / drop model (the cascade's, seeing the edge's reading too, when ``with_edge``) — and its F1 (0-1)."""
    edge = edge_answer(r)[0] if with_edge else ""
    answer, _ = keep_cloud_answer(cal, r["question"], record_scores(r), PassageReading.from_json(r["cloud"]["reading"]),
                                  record_edge_signals(r) if with_edge else None, edge)
    return answer, score_question(_question(r), answer)["f1"]


def edge_answer(r: dict[str, Any]) -> tuple[str, float]:
    """The edge answer of a record and its F1 (0-1)."""
    answer = r["edge"]["answer"]
    return answer, score_question(_question(r), answer)["f1"]


Values = Callable[[dict[str, Any]], tuple[Valued, float]]  # record -> the edge's values, escalation's F1


def calibrated_values(cal: Calibration) -> Values:
    """A record's routing values from its edge signals, as the live cascade computes them."""
    return lambda r: cal.edge_values(record_edge_signals(r))


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


def route_records(records: Sequence[dict[str, Any]], policy: Policy, cal: Calibration, budget_ms: float,
                  latency: LatencyModel | None = None, cache: AnswerCacheLike | None = None,
                  values: Values | None = None) -> list[Routed]:
    """Each record under ``policy``, in order; with ``cache``, repeated and near-duplicate questions
    are served from a real :class:`~edge.answer_cache.AnswerCache` as the live cascade would.

    :param values: the edge's values per record (default: ``cal``'s models over its signals).

    Full edge readings are first cut to the calibration's read plan (:func:`planned`), as the live edge
    would have read them.
    """
    records = planned(records, cal.read_plan, cal.cloud_read_plan)
    values = values or calibrated_values(cal)
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
        routed_to = router.route(policy, values(r), edge["total_ms"], bytes_up, budget_ms, True,
                                 fresh_chars=latency.fresh_chars(r["passages"]))
        d = routed_to.decision
        failed = d.route == "cloud" and "error" in cloud
        # The live cascade's edge reading at the outcome: none under the cloud policy, unless it read after a failed call.
        read = EdgeRead(edge["answer"], record_edge_signals(r), values(r)[0]) \
            if d.route != "cloud" or failed or policy.name != "cloud" else None
        reply = (RuntimeError(cloud["error"]) if failed else PassageReading.from_json(cloud["reading"])) \
            if d.route == "cloud" else None
        outcome = settle(d, routed_to.signals, read, reply, cal, r["question"],
                         record_scores(r) if d.route == "cloud" else ())
        f1 = score_question(_question(r), outcome.answer)["f1"]
        if d.route == "cloud":
            stages = record_stages(r, "cloud", generated=failed or policy.name != "cloud", cloud=cloud)
            routed = Routed(r["id"], outcome.tier, outcome.answer, f1, sum(stages.values()), True, stages,
                            {} if failed else _cloud_tokens(cloud), outcome.degraded)
            if failed:  # as live: a degraded answer teaches the latency model nothing and is not cached
                out.append(routed)
                continue
            latency.observe_reply(cloud["timings"], bytes_up, cloud["bytes_down"], cloud["usage"], r["passages"])
        else:
            routed = Routed(r["id"], outcome.tier, outcome.answer, f1, edge["total_ms"], False, record_stages(r, outcome.tier))
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
