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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge.errors import PiiBlockedError
from edge.features import passage_scores
from edge.pii import counts_line
from pipelines.ask import Ask
from pipelines.calibration import Calibration
from pipelines.dispatch import Dispatcher, EdgeOverflow, redirect_cost_usd
from pipelines.edge_pipeline import EdgeAnswer, EdgeQA, Retrieved
from pipelines.errors import PipelineError
from pipelines.latency import CircuitBreaker, LatencyModel
from pipelines.outcome import EdgeRead, settle, short_error
from pipelines.policies import Policy
from pipelines.router import CascadeRouter, Routed
from pipelines.types import AskResult
from reading.passages import PassageReading
from reading.prompts import Passage
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
    reading: PassageReading  # every passage's signals (the keep / drop reads them), placeholders restored
    redactions: dict[str, int] = field(default_factory=dict)  # kind -> values replaced by placeholders before sealing
    restored: bool = False  # the answer had placeholders, and the values are back in it
    undetected: tuple[str, ...] = ()  # kinds the redaction cannot find (no verified NER model: places, …)
    pii: str = "off"  # the redaction mode it was sent under: off, redact or block


class CloudClient(Protocol):
    """Anything that answers a question from passages in the cloud."""

    def ask(self, question: str, passages: Sequence[Passage], timeout_s: float) -> CloudReply: ...

    def estimate_bytes_up(self, question: str, passages: Sequence[Passage]) -> int: ...


class Link(Protocol):
    """A cloud client over one link, and what keeps the link open (:class:`pipelines.cloud_path.CloudLink`)."""

    client: CloudClient

    def priors(self) -> dict[str, float]: ...

    def close(self) -> None: ...


Linker = Callable[[str | None], Link]  # a link profile (None: direct to the gateway) -> a cloud link over it


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
    :param link: the cloud link ``cloud`` came from, closed by :meth:`close` (None: the caller owns ``cloud``).
    :param linker: opens a cloud link over another profile (:meth:`relink`; None: the link cannot be switched).
    """

    def __init__(self, edge: EdgeQA, calibration: Calibration, cloud: CloudClient | None = None,
                 cache: AnswerCacheLike | None = None, latency: LatencyModel | None = None,
                 breaker: CircuitBreaker | None = None, budget_ms: float = 4000.0,
                 dispatcher: Dispatcher | None = None, prices: tuple[float, float] = (0.0, 0.0),
                 link: Link | None = None, linker: Linker | None = None) -> None:
        self.edge = edge
        self.calibration = calibration
        self._link = link
        self._linker = linker
        self.cloud = link.client if link is not None and cloud is None else cloud
        self.cache = cache
        self.router = CascadeRouter(latency or LatencyModel())
        self.breaker = breaker or CircuitBreaker()
        self.budget_ms = budget_ms
        self.dispatcher = dispatcher
        self.prices = prices
        self._cached_version = ""

    @property
    def latency(self) -> LatencyModel:
        """The online latency model: the one the router predicts with, so replacing it re-points the router."""
        return self.router.latency

    @latency.setter
    def latency(self, model: LatencyModel) -> None:
        self.router.latency = model

    def relink(self, network: str | None) -> None:
        """Reach the cloud over link profile ``network`` (None: direct): a new link and client, and a latency
        model starting from the profile's RTT and bandwidth with what was learned of the compute carried over.
        The old link is closed only once the new one is open: a failed switch leaves everything as it was.

        :raises PipelineError: no cloud link that can be switched.
        :raises LinkError: unknown profile.
        :raises CloudError: the cloud material went missing.
        """
        if self._linker is None:
            raise PipelineError("no cloud gateway is configured — start the UI with `make run` (or `ecqa up`), "
                                "or pass --cloud-url to `ecqa ui`")
        new = self._linker(network)
        old, self._link = self._link, new
        self.cloud = new.client
        self.latency = self.latency.for_link(**new.priors())
        if old is not None:
            old.close()

    def close(self) -> None:
        """Close the cloud link this cascade owns (a caller-given client is the caller's to close)."""
        if self._link is not None:
            self._link.close()
            self._link = None

    def __enter__(self) -> Cascade:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
    def answer(self, question: str | Ask, policy: str = "cascade", threshold: float | None = None,
               budget_ms: float | None = None, top_k: int | None = None, use_cache: bool = True) -> AskResult:
        """Answer ``question`` with ``policy``.

        :param question: an :class:`~pipelines.ask.Ask` (checked by its maker: the other arguments but ``use_cache``
            are then not read), or the question's text (then it and the arguments are checked here).
        :raises PipelineError: unknown policy, empty or oversized question, an out-of-range override.
        :raises EdgeError: missing collection, embedder mismatch.
        """
        ask = question if isinstance(question, Ask) else Ask.check(question, policy, threshold, budget_ms, top_k,
                                                                  have_cloud=None)
        q, top_k = ask.question, ask.top_k
        pol = self.make_policy(ask.policy, ask.threshold)
        budget = self.budget_ms if ask.budget_ms is None else ask.budget_ms
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

        up = retrieved.passages
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
                routed = self.router.route(pol, None, elapsed, self.cloud.estimate_bytes_up(q, up), budget, True,
                                           fresh_chars=self.latency.fresh_chars([p.text for p in up]),
                                           redirected=dispatch["reason"])
                return self._finish(q, pol, routed, retrieved, None, up, budget, t0, dispatch)
                # a redirection is not cached: the next time an edge may be free
        if edge_ans is None and not (pol.name == "cloud" and cloud_ok):
            edge_ans = self.edge.generate(q, retrieved)
        # Retrieval only when the SLM did not run (the cloud policy escalates before it).
        elapsed = (time.perf_counter() - t0) * 1000.0
        bytes_up = self.cloud.estimate_bytes_up(q, up) if self.cloud is not None else 0
        values = self.calibration.edge_values(edge_ans.features) if edge_ans is not None else None
        breaker_open = self.cloud is not None and pol.uses_cloud and not cloud_ok and self.breaker.state != "closed"
        routed = self.router.route(pol, values, elapsed, bytes_up, budget, cloud_ok if edge_ans is not None else True,
                                   fresh_chars=self.latency.fresh_chars([p.text for p in up]), breaker_open=breaker_open)
        result = self._finish(q, pol, routed, retrieved, edge_ans, up, budget, t0, dispatch)
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

    def _finish(self, q: str, pol: Policy, routed: Routed, retrieved: Retrieved, edge_ans: EdgeAnswer | None,
                up: list[Passage], budget: float, t0: float, dispatch: dict[str, Any] | None = None) -> AskResult:
        """Make the calls ``routed`` asks for, then :func:`~pipelines.outcome.settle` what they returned."""
        decision, signals = routed.decision, routed.signals
        timings: dict[str, float] = dict(retrieved.timings)
        usage: dict[str, int] = {}
        if edge_ans is not None:
            timings.update(edge_ans.timings)
            usage.update(edge_ans.usage)
            self.latency.observe_edge((time.perf_counter() - t0) * 1000.0)
        passages = edge_ans.passages if edge_ans is not None else [p.to_json() for p in up]
        bytes_up = bytes_down = 0
        sent: dict[str, Any] = {}
        cloud_usage: dict[str, int] = {}
        models = self.edge.models()
        if dispatch is not None:
            models.pop("slm", None)
            if dispatch.get("worker_model"):
                models["slm"] = dispatch["worker_model"]
        cloud: PassageReading | BaseException | None = None
        note = ""
        replied: CloudReply | None = None
        if decision.route == "cloud" and self.cloud is not None:
            remaining_ms = budget - (time.perf_counter() - t0) * 1000.0 - DEGRADED_MARGIN_MS
            try:
                if remaining_ms <= 0:
                    raise TimeoutError(f"the edge stages took {(time.perf_counter() - t0) * 1000.0:.0f} ms of the "
                                       f"{budget:.0f} ms budget, leaving none for the cloud")
                reply = self.cloud.ask(q, up, timeout_s=remaining_ms / 1000.0)
            except PiiBlockedError as exc:  # nothing was sent: not a cloud failure (the breaker is not told)
                if edge_ans is None:  # cloud-only, or redirected by the workers: the refusal is the answer
                    raise
                cloud = exc
                note = f"; not sent to the cloud: the question carries personal data ({counts_line(exc.counts)})"
            except Exception as exc:  # any cloud failure degrades to the edge's own choice, never to an error
                self.breaker.record(False)
                cloud = exc
                logger.warning("cloud call failed: %s", short_error(exc))
                if edge_ans is None and not (dispatch or {}).get("redirected"):  # cloud-only policy: the edge reads after all
                    try:
                        edge_ans, more = self._edge_read(q, retrieved, budget, t0)
                        dispatch = more or dispatch
                    except EdgeOverflow as overflow:
                        note = f"; {str(overflow).split(' — ')[0]}"
                    if edge_ans is not None:
                        timings.update(edge_ans.timings)
                        usage.update(edge_ans.usage)
                        passages = edge_ans.passages
            else:
                self.breaker.record(True)
                cloud = reply.reading
                bytes_up, bytes_down, sent, cloud_usage = reply.bytes_up, reply.bytes_down, reply.sent, reply.usage
                replied = reply
                timings.update(reply.timings)
                models["cloud"] = reply.model
                self.latency.observe_reply(reply.timings, reply.bytes_up, reply.bytes_down, reply.usage,
                                           [p.text for p in up])
                if dispatch is not None and dispatch.get("redirected"):
                    dispatch["cloud_cost_usd"] = round(redirect_cost_usd(reply.usage, *self.prices), 8)
        edge = None
        if edge_ans is not None:
            edge = EdgeRead(edge_ans.answer, edge_ans.features, self.calibration.edge_values(edge_ans.features)[0])
        scores = passage_scores(q, retrieved.documents) if isinstance(cloud, PassageReading) else ()
        out = settle(decision, signals, edge, cloud, self.calibration, q, scores, note)
        if out.tier == "cloud":
            passages = _mark_spans(passages, out.answer)
        timings["total"] = (time.perf_counter() - t0) * 1000.0
        decision_out = {
            "route": out.tier if out.degraded else decision.route,  # the edge's own choice: its answer or "no answer"
            "reason": out.reason,
            "confidence": round(decision.confidence, 4),
            "threshold": round(decision.threshold, 4),
            "predicted_total_ms": round(signals.predicted_total_ms, 1),
            "predicted_bytes_up": routed.bytes_up,  # the sealed request's size the prediction assumed
            "predicted_fresh_chars": routed.fresh_chars,  # and the passage characters new to the cloud
            "measured_total_ms": round(timings["total"], 1),
            "degraded": out.degraded,
            "over_budget": decision.over_budget,
            "policy": pol.name,
            "p_unanswerable": round(signals.abstain_value, 4),
            "values": {"answer": round(signals.answer_value, 4), "abstain": round(signals.abstain_value, 4),
                       "escalate": round(signals.escalate_value, 4)},
        }
        return AskResult(
            question=q, answer=out.answer, tier=out.tier, confidence=round(float(out.confidence), 4), passages=passages,
            timings_ms=timings, usage={**usage, **{f"cloud_{k}": v for k, v in cloud_usage.items()}},
            collection=self.edge.settings.collection, models=models, decision=decision_out,
            bytes_up=bytes_up, bytes_down=bytes_down, sent=sent,
            features=edge_ans.features if edge_ans is not None else {}, dispatch=dispatch,
            redactions=dict(replied.redactions) if replied else {},
            restored=replied is not None and replied.restored and out.tier == "cloud",  # the cloud's answer was given
            pii_undetected=list(replied.undetected) if replied else [], pii=replied.pii if replied else "",
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


def _mark_spans(passages: list[dict[str, Any]], answer: str) -> list[dict[str, Any]]:
    out = []
    for p in passages:
        span = find_span(answer, p["text"]) if answer else None
        out.append({**p, "answer_span": list(span) if span else None})
    return out
