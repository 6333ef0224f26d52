"""The dispatcher: which edge worker reads a question, and what happens when none can.

    registry (live entries) ─► W_i = max(advertised, own in-flight) ─► policy.order ─► POST /v1/read
        200 ─► the answer, with the worker that served it
        503 full ─► the next worker (load-aware) or overflow (random, weighted: blind to load)
        connection lost (worker died) ─► the next worker; the dead one is skipped until it heartbeats anew
        none left ─► EdgeOverflow: the cascade rejects it, or redirects it to the cloud (setting)

Exactly one answer comes back per request: a worker that died never replied, and a refusal
carries no answer, so failing over cannot answer a question twice.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from haystack import Document

from edge.reader import EdgeAnswer, documents_to_json
from edge.registry import Registry, WorkerEntry
from pipelines.dispatch_policies import DispatchPolicy, WorkerLoad, make_policy
from pipelines.errors import PipelineError

OVERFLOW_MODES = ("reject", "cloud")

logger = logging.getLogger(__name__)


class EdgeOverflow(PipelineError):
    """No edge worker could take the request (all full, none registered, or all failed)."""

    def __init__(self, message: str, attempts: list[dict[str, Any]], loads: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.loads = loads


@dataclass(frozen=True)
class Dispatched:
    """A worker's answer and how it was reached."""

    answer: EdgeAnswer
    worker: WorkerEntry
    attempts: list[dict[str, Any]]
    loads: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)  # "dispatch": the dispatcher's own cost (ms)


def load_view(entries: list[WorkerEntry], own: dict[str, int],
              failed: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """The workers' live loads, as the answer records them and the UI shows them; ``failed``: the replies
    this dispatcher could not use from each (malformed, or an unexpected status)."""
    failed = failed or {}
    return [{"id": e.id, "model": e.model, "in_flight": max(e.in_flight, own.get(e.id, 0)), "limit": e.limit,
             "capacity_tps": round(e.capacity, 1), "served": e.served, "rejected": e.rejected,
             "bad_replies": failed.get(e.id, 0), "url": e.url}
            for e in entries]


class Dispatcher:
    """Sends reads to the edge workers of a registry with a dispatch policy.

    :param registry: where the workers advertise.
    :param policy: "random", "weighted" or "load-aware".
    :param overflow: "reject" or "cloud": what the cascade does when no worker can take a request.
    :param refresh_s: how long a read of the registry is reused (one read per request would cost a
        file or Redis round trip each time; the dispatcher's own in-flight counts stay exact).
    :param seed: seeds the random policies (tests, simulations).
    :param tls: the client side of the workers' mutual TLS (the edge certificate, the fleet's CA); None
        in an insecure fleet (plain HTTP).
    :raises PipelineError: an unknown policy or overflow mode.
    """

    def __init__(self, registry: Registry, policy: str = "load-aware", overflow: str = "reject",
                 refresh_s: float = 0.25, seed: int | None = None, tls: ssl.SSLContext | None = None) -> None:
        try:
            self.policy: DispatchPolicy = make_policy(policy)
        except ValueError as exc:
            raise PipelineError(f"{exc} (ECQA_DISPATCH_POLICY)") from None
        if overflow not in OVERFLOW_MODES:
            raise PipelineError(f"unknown overflow mode {overflow!r} — use reject or cloud (ECQA_DISPATCH_OVERFLOW)")
        self.registry = registry
        self.overflow = overflow
        self.refresh_s = refresh_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._own: Counter[str] = Counter()  # requests this dispatcher has in flight per worker
        self._dead: dict[str, float] = {}  # worker id -> heartbeat it had when its connection failed
        self._failed: Counter[str] = Counter()  # replies not usable (malformed, a 5xx) per worker
        self._cache: tuple[float, list[WorkerEntry]] = (-1e9, [])
        # Workers are on 127.0.0.1 or the LAN: never a proxy. With TLS, only workers whose certificate the fleet's
        # CA issued for the URL's host are spoken to.
        self._client = httpx.Client(trust_env=False, verify=tls if tls is not None else True)

    def close(self) -> None:
        self._client.close()

    # --- the registry view -----------------------------------------------------------------
    def workers(self, fresh: bool = False) -> list[WorkerEntry]:
        """Live workers, minus those that failed since their last heartbeat."""
        now = time.monotonic()
        with self._lock:
            at, cached = self._cache
        if fresh or now - at > self.refresh_s:
            cached = self.registry.entries()
            with self._lock:
                self._cache = (now, cached)
        with self._lock:
            return [e for e in cached if self._dead.get(e.id, -1.0) < e.heartbeat]

    def loads(self, fresh: bool = False) -> list[dict[str, Any]]:
        """The live load of each worker (for the UI)."""
        entries = self.workers(fresh)
        with self._lock:
            return load_view(entries, dict(self._own), dict(self._failed))

    # --- one request -----------------------------------------------------------------------
    def read(self, question: str, documents: list[Document], timeout_s: float) -> Dispatched:
        """The answer of the worker the policy picks, failing over when a worker is full or dies.

        :raises EdgeOverflow: no worker could take it; the message says why and what to do.
        :raises PipelineError: the worker refused the request itself (too long for its context).
        """
        t0 = time.perf_counter()
        entries = self.workers()
        with self._lock:
            own, failed = dict(self._own), dict(self._failed)
        view = load_view(entries, own, failed)
        if not entries:
            raise EdgeOverflow(f"no edge worker is registered in {self.registry.describe()} — start one with "
                               "`ecqa edge serve`, or unset ECQA_EDGE_REGISTRY to read in this process", [], view)
        by_id = {e.id: e for e in entries}
        loads = [WorkerLoad(e.id, e.capacity, max(e.in_flight, own.get(e.id, 0)), e.limit) for e in entries]
        with self._lock:
            order = self.policy.order(loads, self._rng)
        attempts: list[dict[str, Any]] = []
        body = {"question": question, "documents": documents_to_json(documents)}
        overhead = (time.perf_counter() - t0) * 1000.0
        deadline = time.perf_counter() + timeout_s
        for w in order:
            if attempts and attempts[-1]["outcome"] == "full" and not self.policy.retry_when_full:
                break  # a load-blind policy does not look for a free worker: that is its cost
            entry = by_id[w.id]
            left = deadline - time.perf_counter()
            if left <= 0:
                attempts.append({"worker": w.id, "outcome": "no time left"})
                break
            with self._lock:
                self._own[w.id] += 1
            t_send = time.perf_counter()
            try:
                resp = self._client.post(f"{entry.url}/v1/read", json=body, timeout=left)
            except httpx.TimeoutException:
                attempts.append({"worker": w.id, "outcome": "timed out"})
                break  # the budget is spent: no other worker could answer in time
            except httpx.TransportError as exc:  # refused, reset, closed mid-request: it died
                with self._lock:
                    self._dead[w.id] = entry.heartbeat
                attempts.append({"worker": w.id, "outcome": f"died ({type(exc).__name__})"})
                continue
            finally:
                with self._lock:
                    self._own[w.id] -= 1
            t_back = time.perf_counter()
            data = _json(resp)
            if resp.status_code == 200:
                try:
                    answer = EdgeAnswer.from_json(data)
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    # Not an answer (a broken or foreign worker): skipped until its next heartbeat, next worker.
                    with self._lock:
                        self._dead[w.id] = entry.heartbeat
                        self._failed[w.id] += 1
                    logger.warning("edge worker %s sent a 200 that is not an answer (%s) — trying the next one",
                                   w.id, type(exc).__name__)
                    attempts.append({"worker": w.id, "outcome": f"malformed reply ({type(exc).__name__})"})
                    continue
                attempts.append({"worker": w.id, "outcome": "served"})
                worker_ms = sum(v for k, v in answer.timings.items() if k in ("prompt", "generate", "parse"))
                timings = {"dispatch": overhead, "worker_http": max(0.0, (t_back - t_send) * 1000.0 - worker_ms
                                                                    - answer.timings.get("worker_queue", 0.0))}
                return Dispatched(answer, entry, attempts, view, timings)
            if resp.status_code == 503:
                attempts.append({"worker": w.id, "outcome": "full"})
                continue
            message = str(data.get("message", ""))[:200]
            if resp.status_code in (400, 413):
                raise PipelineError(f"edge worker {w.id}: {message or resp.status_code}")
            with self._lock:
                self._failed[w.id] += 1
            attempts.append({"worker": w.id, "outcome": f"failed ({resp.status_code}: {message[:80]})"})
        outcomes = ", ".join(f"{a['worker']} {a['outcome']}" for a in attempts) or "every worker is full"
        raise EdgeOverflow(f"no edge worker could take the question ({outcomes}) — retry in a moment, start another "
                           "worker (`ecqa edge serve`), or set ECQA_DISPATCH_OVERFLOW=cloud", attempts, view)


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {"message": resp.text[:200]}
    return data if isinstance(data, dict) else {"message": str(data)[:200]}


def redirect_cost_usd(usage: dict[str, int], price_prompt_per_1k: float, price_completion_per_1k: float) -> float:
    """What a request redirected to the cloud cost: its tokens x the configured prices."""
    return (usage.get("prompt_tokens", 0) * price_prompt_per_1k
            + usage.get("completion_tokens", 0) * price_completion_per_1k) / 1000.0
