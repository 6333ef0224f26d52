"""Online latency model T_total = T_edge + S/B + RTT + T_cloud, and a circuit breaker for the cloud.

Every term is an exponentially weighted moving average of what the edge measured on earlier
questions, so the model follows the link and the cloud as they change. It starts from the
configured network profile (or a Wi-Fi-like guess) until the first measurements arrive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass


class Ewma:
    """Exponentially weighted moving average; ``alpha`` is the weight of a new sample."""

    def __init__(self, initial: float, alpha: float = 0.2) -> None:
        self.value = initial
        self.alpha = alpha
        self.samples = 0

    def update(self, sample: float) -> float:
        self.value = sample if self.samples == 0 else self.alpha * sample + (1 - self.alpha) * self.value
        self.samples += 1
        return self.value


@dataclass(frozen=True)
class Prediction:
    """A predicted end-to-end time if the question escalates, by term (ms)."""

    edge_ms: float
    transfer_ms: float
    rtt_ms: float
    cloud_ms: float

    @property
    def total_ms(self) -> float:
        return self.edge_ms + self.transfer_ms + self.rtt_ms + self.cloud_ms

    def as_dict(self) -> dict[str, float]:
        return {"edge": self.edge_ms, "transfer": self.transfer_ms, "rtt": self.rtt_ms, "cloud": self.cloud_ms,
                "total": self.total_ms}


class LatencyModel:
    """EWMA estimates of edge compute, RTT, bandwidth and cloud time per generated token.

    :param rtt_ms: initial round-trip time.
    :param bandwidth_mbit: initial bandwidth (both directions).
    :param cloud_base_ms: initial fixed cloud cost per request (prefill, sealing, queueing).
    :param cloud_ms_per_token: initial cloud decode time per generated token.
    :param edge_ms: initial edge compute per question.
    """

    def __init__(self, rtt_ms: float = 30.0, bandwidth_mbit: float = 50.0, cloud_base_ms: float = 600.0,
                 cloud_ms_per_token: float = 25.0, edge_ms: float = 2000.0, expected_tokens: float = 8.0) -> None:
        self.rtt = Ewma(rtt_ms)
        self.bytes_per_ms = Ewma(bandwidth_mbit * 1e6 / 8 / 1000)
        self.cloud_base = Ewma(cloud_base_ms)
        self.cloud_per_token = Ewma(cloud_ms_per_token)
        self.edge = Ewma(edge_ms)
        self.tokens = Ewma(expected_tokens)
        self._lock = threading.Lock()

    def predict(self, edge_ms: float | None, bytes_up: int, bytes_down: int = 400) -> Prediction:
        """Predicted time if escalated; ``edge_ms`` None = use the running edge estimate."""
        with self._lock:
            return Prediction(
                edge_ms=self.edge.value if edge_ms is None else edge_ms,
                transfer_ms=(bytes_up + bytes_down) / max(self.bytes_per_ms.value, 1e-6),
                rtt_ms=self.rtt.value,
                cloud_ms=self.cloud_base.value + self.cloud_per_token.value * self.tokens.value,
            )

    def seed_cloud(self, cloud_ms: float) -> None:
        """Start the cloud term from what the cloud says an answer costs there (its /healthz), rather than from
        the default guess: the prediction's cloud time becomes ``cloud_ms``. Not a sample: the first measured
        call replaces it, as it replaces any prior."""
        with self._lock:
            self.cloud_base.value = max(cloud_ms - self.cloud_per_token.value * self.tokens.value, 0.0)

    def observe_edge(self, edge_ms: float) -> None:
        with self._lock:
            self.edge.update(edge_ms)

    def observe_cloud(self, network_ms: float, bytes_up: int, bytes_down: int, server_ms: float,
                      completion_tokens: int, decode_ms: float | None = None) -> None:
        """Fold in one measured cloud call.

        ``network_ms`` is the client-side time minus the server's own time: one RTT plus the
        transfer of both payloads. The RTT estimate follows the fastest calls (payload-free
        limit), and the bandwidth follows what is left once the RTT is taken out.
        """
        with self._lock:
            transfer = network_ms - self.rtt.value
            if transfer <= 0.5 or network_ms < self.rtt.value:
                self.rtt.update(network_ms)
            else:
                self.rtt.update(min(self.rtt.value, network_ms))
                self.bytes_per_ms.update((bytes_up + bytes_down) / transfer)
            tokens = max(completion_tokens, 1)
            self.tokens.update(tokens)
            per_token = (decode_ms / tokens) if decode_ms else None
            if per_token is not None:
                self.cloud_per_token.update(per_token)
                self.cloud_base.update(max(server_ms - per_token * tokens, 0.0))
            else:
                self.cloud_base.update(max(server_ms - self.cloud_per_token.value * tokens, 0.0))

    def observe_reply(self, timings: Mapping[str, float], bytes_up: int, bytes_down: int, usage: Mapping[str, int]) -> None:
        """Fold in one cloud reply as the edge measured it (the live cascade's and a record's alike).

        :param timings: ms: ``network``, ``cloud`` (the gateway's total; ``server`` in records of older runs) and
            ``cloud_decode`` when the backend reports it (``decode`` in older records).
        :param usage: the reply's token counts (``completion_tokens``).
        """
        self.observe_cloud(timings.get("network", 0.0), bytes_up, bytes_down, timings.get("cloud", timings.get("server", 0.0)),
                           usage.get("completion_tokens", 0), timings.get("cloud_decode", timings.get("decode")))

    def for_link(self, rtt_ms: float | None = None, bandwidth_mbit: float | None = None) -> LatencyModel:
        """A model for another link: its RTT and bandwidth as priors (the defaults when not given), what this
        one learned of the edge's and the cloud's compute carried over."""
        snap = self.snapshot()
        link = {k: v for k, v in (("rtt_ms", rtt_ms), ("bandwidth_mbit", bandwidth_mbit)) if v is not None}
        return LatencyModel(**link, cloud_base_ms=snap["cloud_base_ms"], cloud_ms_per_token=snap["cloud_ms_per_token"],
                            edge_ms=snap["edge_ms"], expected_tokens=snap["expected_tokens"])

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {"edge_ms": self.edge.value, "rtt_ms": self.rtt.value,
                    "bandwidth_mbit": self.bytes_per_ms.value * 8 * 1000 / 1e6,
                    "cloud_base_ms": self.cloud_base.value, "cloud_ms_per_token": self.cloud_per_token.value,
                    "expected_tokens": self.tokens.value}


class CircuitBreaker:
    """Stops calling a dead cloud: opens after ``failures`` consecutive failures, lets one probe
    through after ``reset_s`` (half-open), closes again on a success.

    :param clock: a monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(self, failures: int = 3, reset_s: float = 30.0, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.threshold = failures
        self.reset_s = reset_s
        self.clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self._probing = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.reset_s else "open"

    def allow(self) -> bool:
        """May the cloud be called now? In half-open state only one probe at a time."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half-open" and not self._probing:
                self._probing = True
                return True
            return False

    def record(self, ok: bool) -> None:
        with self._lock:
            self._probing = False
            if ok:
                self.consecutive = 0
                self.opened_at = None
                return
            self.consecutive += 1
            if self.consecutive >= self.threshold or self.opened_at is not None:
                self.opened_at = self.clock()
