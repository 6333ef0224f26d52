"""The cascade: one function answers a question with a policy — edge, cloud, abstain or cache.

    exact cache ─ hit ──────────────────────────────────────────────► answer (route=cache)
    embed → retrieve → semantic cache ─ hit ─────────────────────────► answer (route=cache)
    SLM answer + features → calibrated scores → policy.decide ─┬─ edge / abstain ─► answer
                                                               └─ cloud (within Tmax, breaker closed)
                                                                   ├─ ok ─► cloud answer
                                                                   └─ error/slow ─► edge answer, degraded

With edge workers configured (a :class:`~pipelines.dispatch.Dispatcher`), the SLM step runs in the
worker the dispatch policy picks; when none can take the question it is rejected
(:class:`~pipelines.dispatch.EdgeOverflow`) or redirected to the cloud, costed, as the settings say.

The UI, the CLI and the evaluation all call :meth:`Cascade.answer`, so what the benchmark
measures is what a user gets.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from haystack import Document

from edge.features import passage_scores
from pipelines.calibration import Calibration
from pipelines.dispatch import Dispatcher, EdgeOverflow, redirect_cost_usd
from pipelines.edge_pipeline import EdgeAnswer, EdgeQA, Retrieved, check_question
from pipelines.latency import CircuitBreaker, LatencyModel
from pipelines.policies import Decision, Policy, Signals
from pipelines.router import CascadeRouter
from pipelines.signals import keep_cloud_answer
from pipelines.types import AskResult
from reading.passages import PassageReading
from reading.text import find_span

logger = logging.getLogger(__name__)

# Time kept back from Tmax for assembling the answer after a cloud call is abandoned.
DEGRADED_MARGIN_MS = 50.0


@dataclass(frozen=True)
class CloudReply:
    """What the cloud tier returned for one question (the shape the cascade needs)."""

    answer: str
    confidence: float
    # "seal", "network" (request time minus the gateway's), "cloud" (gateway total), "open",
    # "cloud_generate" (+ "cloud_prefill", "cloud_decode" when the backend reports them), in ms
    timings: dict[str, float]
    bytes_up: int
    bytes_down: int
    usage: dict[str, int]
    sent: dict[str, Any]  # what left the device (plaintext, before sealing)
    model: str
    p_answerable: float  # the cloud model's highest per-passage p(yes) to "is the answer stated in the passage?"
    reading: PassageReading  # every passage's signals (the keep / drop reads them)


class CloudClient(Protocol):
    """Anything that answers a question from passages in the cloud."""

    def ask(self, question: str, passages: list[dict[str, Any]], timeout_s: float) -> CloudReply: ...

    def estimate_bytes_up(self, question: str, passages: list[dict[str, Any]]) -> int: ...


class AnswerCacheLike(Protocol):
    def lookup_exact(self, question: str, index_version: str) -> Any: ...

    def lookup(self, question: str, embedding: Any, passage_ids: Any, index_version: str) -> Any: ...

    def put(self, question: str, answer: dict[str, Any], embedding: Any, passage_ids: Any,
            index_version: str) -> None: ...

    def invalidate(self, index_version: str | None = None) -> int: ...


class Cascade:
    """Edge-first question answering with escalation, abstention, a cache and degraded mode.

    :param edge: the edge QA stages (models loaded once).
    :param calibration: routing models and thresholds.
    :param cloud: the cloud client, or None when no cloud is configured.
    :param cache: the semantic answer cache, or None.
    :param latency: the online latency model.
    :param breaker: the cloud circuit breaker.
    :param budget_ms: the latency budget Tmax.
    :param dispatcher: edge workers to read with (None: the edge model of this process reads).
    :param prices: cloud USD per 1000 prompt and completion tokens (the cost of a redirection).
    """

    def __init__(self, edge: EdgeQA, calibration: Calibration, cloud: CloudClient | None = None,
                 cache: AnswerCacheLike | None = None, latency: LatencyModel | None = None,
                 breaker: CircuitBreaker | None = None, budget_ms: float = 4000.0,
                 dispatcher: Dispatcher | None = None, prices: tuple[float, float] = (0.0, 0.0)) -> None:
        self.edge = edge
        self.calibration = calibration
        self.cloud = cloud
        self.cache = cache
        self.latency = latency or LatencyModel()
        self.router = CascadeRouter(self.latency)
        self.breaker = breaker or CircuitBreaker()
        self.budget_ms = budget_ms
        self.dispatcher = dispatcher
        self.prices = prices
        self._cached_version = ""

    def make_policy(self, name: str, threshold: float | None = None) -> Policy:
        return self.calibration.policy(name, threshold)

    def warm_up(self, policy: str | None = None) -> Cascade:
        """Load the models ``policy`` needs (every one without a policy) before a question's clock starts.

        The cloud policy needs the embedder and the retriever only, unless no cloud call can be made
        (no cloud, breaker not closed) and the edge answers after all.
        """
        self.edge.warm_up_retrieval()
        if self.dispatcher is not None:
            return self  # the workers hold the edge models
        if policy != "cloud" or self.cloud is None or self.breaker.state != "closed":
            self.edge.warm_up_generator()
        return self

    def index_version(self) -> str:
        """The backing collection now serving: a rebuild switches the alias to a new one."""
        self.edge.retriever.refresh_if_stale()
        return self.edge.retriever.info.backing

    # --- the one answer function ------------------------------------------------------------
    def answer(self, question: str, policy: str = "cascade", threshold: float | None = None,
               budget_ms: float | None = None, top_k: int | None = None, use_cache: bool = True) -> AskResult:
        """Answer ``question`` with ``policy``.

        :raises PipelineError: unknown policy, empty or oversized question.
        :raises EdgeError: missing collection, embedder mismatch.
        """
        q = check_question(question)
        pol = self.make_policy(policy, threshold)
        budget = self.budget_ms if budget_ms is None else budget_ms
        self.warm_up(pol.name)  # one-time model loading is never charged to a question's budget
        t0 = time.perf_counter()
        version = self.index_version()
        if self.cache is not None and version != self._cached_version:
            self.cache.invalidate(None)  # a reindex: answers of the old index never come back
            self._cached_version = version
        # An answer is reused only under the routing that produced it: asking again with another
        # policy, threshold or budget must take that route, not return the earlier answer.
        scope = f"{version}|{pol.name}|{pol.threshold:.4f}|{budget:.0f}"
        if use_cache and self.cache is not None:
            hit = self.cache.lookup_exact(q, scope)
            if hit is not None:
                return self._from_cache(q, hit, t0, pol, budget)
        retrieved = self.edge.retrieve(q, top_k)
        if use_cache and self.cache is not None:
            hit = self.cache.lookup(q, retrieved.embedding, retrieved.ids, scope)
            if hit is not None:
                return self._from_cache(q, hit, t0, pol, budget, retrieved.timings)

        up = passages_up(retrieved.documents)
        cloud_ok = self.cloud is not None and pol.uses_cloud and self.breaker.allow()
        edge_ans: EdgeAnswer | None = None
        dispatch: dict[str, Any] | None = None
        if self.dispatcher is not None and not (pol.name == "cloud" and cloud_ok):
            try:
                edge_ans, dispatch = self._dispatch(q, retrieved, budget, t0)
            except EdgeOverflow as exc:
                can_redirect = (self.dispatcher.overflow == "cloud" and pol.uses_cloud and self.cloud is not None
                                and self.breaker.allow())
                if not can_redirect:
                    raise
                dispatch = {"policy": self.dispatcher.policy.name, "worker": None, "attempts": exc.attempts,
                            "loads": exc.loads, "redirected": True, "reason": str(exc).split(" — ")[0]}
                elapsed = (time.perf_counter() - t0) * 1000.0
                assert self.cloud is not None
                signals = self.router.route(pol, None, elapsed, self.cloud.estimate_bytes_up(q, up), budget,
                                            True).signals
                decision = Decision("cloud", f"{dispatch['reason']} → redirected to the cloud", 0.0, 0.0,
                                    signals.predicted_total_ms > budget)
                result = self._finish(q, pol, decision, signals, retrieved, None, up, budget, t0, dispatch)
                return result  # a redirection is not cached: the next time an edge may be free
        if edge_ans is None and not (pol.name == "cloud" and cloud_ok):
            edge_ans = self.edge.generate(q, retrieved)
        # Retrieval only when the SLM did not run (the cloud policy escalates before it).
        elapsed = (time.perf_counter() - t0) * 1000.0
        bytes_up = self.cloud.estimate_bytes_up(q, up) if self.cloud is not None else 0
        values = self.calibration.edge_values(edge_ans.features) if edge_ans is not None else None
        routed = self.router.route(pol, values, elapsed, bytes_up, budget, cloud_ok if edge_ans is not None else True)
        signals, decision = routed.signals, routed.decision
        if pol.uses_cloud and cloud_ok is False and self.cloud is not None and self.breaker.state != "closed":
            decision = Decision(decision.route, decision.reason + " (circuit breaker open)", decision.confidence,
                                decision.threshold, decision.over_budget)
        result = self._finish(q, pol, decision, signals, retrieved, edge_ans, up, budget, t0, dispatch)
        if use_cache and self.cache is not None and result.decision and not result.decision.get("degraded"):
            self.cache.put(q, result.to_json(), retrieved.embedding, retrieved.ids, scope)
        return result

    # --- pieces -----------------------------------------------------------------------------
    def _edge_read(self, q: str, retrieved: Retrieved, budget: float, t0: float) -> tuple[EdgeAnswer, dict[str, Any] | None]:
        """The edge's reading: by a worker when workers are configured, else in this process."""
        if self.dispatcher is None:
            return self.edge.generate(q, retrieved), None
        return self._dispatch(q, retrieved, budget, t0)

    def _dispatch(self, q: str, retrieved: Retrieved, budget: float, t0: float) -> tuple[EdgeAnswer, dict[str, Any]]:
        """:raises EdgeOverflow: no worker could take it."""
        assert self.dispatcher is not None
        left_s = max(0.05, (budget - (time.perf_counter() - t0) * 1000.0) / 1000.0)
        d = self.dispatcher.read(q, retrieved.documents, timeout_s=left_s)
        ans = d.answer
        ans = dataclasses.replace(ans, timings={**ans.timings, **d.timings})
        info = {"policy": self.dispatcher.policy.name, "worker": d.worker.id, "worker_model": d.worker.model,
                "worker_url": d.worker.url, "attempts": d.attempts, "loads": d.loads, "redirected": False}
        return ans, info

    def _finish(self, q: str, pol: Policy, decision: Decision, signals: Signals, retrieved: Retrieved,
                edge_ans: EdgeAnswer | None, up: list[dict[str, Any]], budget: float, t0: float,
                dispatch: dict[str, Any] | None = None) -> AskResult:
        timings: dict[str, float] = dict(retrieved.timings)
        usage: dict[str, int] = {}
        if edge_ans is not None:
            timings.update(edge_ans.timings)
            usage.update(edge_ans.usage)
            self.latency.observe_edge((time.perf_counter() - t0) * 1000.0)
        degraded = False
        reason = decision.reason
        answer, confidence, tier = "", signals.answer_value, "edge"
        passages = edge_ans.passages if edge_ans is not None else _plain_passages(retrieved)
        bytes_up = bytes_down = 0
        sent: dict[str, Any] = {}
        cloud_usage: dict[str, int] = {}
        models = self.edge.models()
        if dispatch is not None:
            models.pop("slm", None)
            if dispatch.get("worker_model"):
                models["slm"] = dispatch["worker_model"]
        if decision.route == "cloud" and self.cloud is not None:
            remaining_ms = budget - (time.perf_counter() - t0) * 1000.0 - DEGRADED_MARGIN_MS
            try:
                if remaining_ms <= 0:
                    raise TimeoutError(f"the edge stages took {(time.perf_counter() - t0) * 1000.0:.0f} ms of the "
                                       f"{budget:.0f} ms budget, leaving none for the cloud")
                reply = self.cloud.ask(q, up, timeout_s=remaining_ms / 1000.0)
            except Exception as exc:  # any cloud failure degrades to the edge answer, never to an error
                self.breaker.record(False)
                degraded = True
                reason = f"{decision.reason}; cloud failed ({_short(exc)})"
                logger.warning("cloud call failed: %s", _short(exc))
                if edge_ans is None and not (dispatch or {}).get("redirected"):  # cloud-only policy: the edge answers after all
                    try:
                        edge_ans, more = self._edge_read(q, retrieved, budget, t0)
                        dispatch = more or dispatch
                    except EdgeOverflow as overflow:
                        reason += f"; {str(overflow).split(' — ')[0]}"
                    if edge_ans is not None:
                        timings.update(edge_ans.timings)
                        usage.update(edge_ans.usage)
                        passages = edge_ans.passages
                if edge_ans is not None:  # the edge's own choice: its answer, or "no answer"
                    own, _ = self.calibration.edge_values(edge_ans.features)
                    if self.calibration.edge.stands(own):
                        answer, confidence = edge_ans.answer, own.answer
                    else:
                        tier, answer, confidence = "abstain", "", own.abstain
                else:  # redirected because no edge could read it, and the cloud failed: no answer
                    tier, answer, confidence = "abstain", "", 0.0
                reason += " → edge answer, degraded" if tier == "edge" else " → no answer, degraded"
            else:
                self.breaker.record(True)
                answer, valued = keep_cloud_answer(
                    self.calibration, q, passage_scores(q, retrieved.documents), reply.reading,
                    edge_ans.features if edge_ans is not None else None, edge_ans.answer if edge_ans is not None else "")
                tier, confidence = "cloud", (valued.answer if answer else valued.abstain)
                bytes_up, bytes_down, sent, cloud_usage = reply.bytes_up, reply.bytes_down, reply.sent, reply.usage
                timings.update(reply.timings)
                models["cloud"] = reply.model
                self.latency.observe_cloud(reply.timings.get("network", 0.0), reply.bytes_up, reply.bytes_down,
                                           reply.timings.get("cloud", 0.0), reply.usage.get("completion_tokens", 0),
                                           reply.timings.get("cloud_decode"))
                passages = _mark_spans(passages, answer)
                if dispatch is not None and dispatch.get("redirected"):
                    dispatch["cloud_cost_usd"] = round(redirect_cost_usd(reply.usage, *self.prices), 8)
        elif decision.route == "abstain":
            tier, answer, confidence = "abstain", "", signals.abstain_value
        else:
            assert edge_ans is not None
            answer = edge_ans.answer
        timings["total"] = (time.perf_counter() - t0) * 1000.0
        decision_out = {
            "route": tier if degraded else decision.route,  # the edge's own choice: its answer or "no answer"
            "reason": reason,
            "confidence": round(decision.confidence, 4),
            "threshold": round(decision.threshold, 4),
            "predicted_total_ms": round(signals.predicted_total_ms, 1),
            "measured_total_ms": round(timings["total"], 1),
            "degraded": degraded,
            "over_budget": decision.over_budget,
            "policy": pol.name,
            "p_unanswerable": round(signals.abstain_value, 4),
            "values": {"answer": round(signals.answer_value, 4), "abstain": round(signals.abstain_value, 4),
                       "escalate": round(signals.escalate_value, 4)},
        }
        return AskResult(
            question=q, answer=answer, tier=tier, confidence=round(float(confidence), 4), passages=passages,
            timings_ms=timings, usage={**usage, **{f"cloud_{k}": v for k, v in cloud_usage.items()}},
            collection=self.edge.settings.collection, models=models, decision=decision_out,
            bytes_up=bytes_up, bytes_down=bytes_down, sent=sent,
            features=edge_ans.features if edge_ans is not None else {}, dispatch=dispatch,
        )

    def _from_cache(self, q: str, hit: Any, t0: float, pol: Policy, budget: float,
                    timings: dict[str, float] | None = None) -> AskResult:
        cached: dict[str, Any] = dict(hit.answer)
        total = (time.perf_counter() - t0) * 1000.0
        decision = {
            "route": "cache", "reason": f"cached answer of {hit.question!r}", "confidence": cached.get("confidence", 0.0),
            "threshold": pol.threshold, "predicted_total_ms": round(total, 3), "measured_total_ms": round(total, 3),
            "degraded": False, "over_budget": False, "policy": pol.name,
            "p_unanswerable": (cached.get("decision") or {}).get("p_unanswerable", 0.0),
        }
        return AskResult(
            question=q, answer=cached.get("answer", ""), tier="cache", confidence=cached.get("confidence", 0.0),
            passages=cached.get("passages", []), timings_ms={**(timings or {}), "total": total},
            usage={}, collection=cached.get("collection", ""), models=cached.get("models", {}), decision=decision,
        )


def passages_up(documents: list[Document]) -> list[dict[str, Any]]:
    """The passages as the cloud client takes them: id, title, text."""
    return [{"id": d.id, "title": d.meta.get("title", ""), "text": d.content or ""} for d in documents]


def _plain_passages(retrieved: Retrieved) -> list[dict[str, Any]]:
    return [{"id": d.id, "title": d.meta.get("title", ""), "text": d.content or "", "score": round(float(d.score or 0), 6),
             "source": d.meta.get("source", ""), "answer_span": None} for d in retrieved.documents]


def _mark_spans(passages: list[dict[str, Any]], answer: str) -> list[dict[str, Any]]:
    out = []
    for p in passages:
        span = find_span(answer, p["text"]) if answer else None
        out.append({**p, "answer_span": list(span) if span else None})
    return out


def _short(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160] or type(exc).__name__
