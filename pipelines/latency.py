"""Online latency model T_total = T_edge + S/B + RTT + T_cloud, and a circuit breaker for the cloud.

Every term is an exponentially weighted moving average of what the edge measured on earlier
questions, so the model follows the link and the cloud as they change. It starts from the
configured network profile (or a Wi-Fi-like guess) until the first measurements arrive.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
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


class EwLine:
    """y = intercept + slope * x by exponentially weighted least squares: a new point weighs ``alpha`` (the first
    one, with no point before it, replaces the prior). The slope moves only while the points' x differ; until
    then it keeps its prior (or what it last was). Both stay ≥ 0.

    The latency model's cloud term: the cloud's time (its decoding taken out) over the passage characters it had
    not read, so that new passages' prefill and the fixed cost per request are told apart.
    """

    def __init__(self, intercept: float, slope: float, alpha: float = 0.2) -> None:
        self.intercept, self.slope, self.alpha = intercept, slope, alpha
        self._stats = [0.0] * 5  # weight, Σx, Σy, Σxx, Σxy

    def copy(self) -> EwLine:
        line = EwLine(self.intercept, self.slope, self.alpha)
        line._stats = list(self._stats)
        return line

    def seed(self, points: Sequence[tuple[float, float]]) -> None:
        """Start from these points (equal weights), forgetting every point before."""
        self._stats = [0.0] * 5
        for x, y in points:
            self._add(x, y, 1.0 / len(points))
        self._fit()

    def update(self, x: float, y: float) -> None:
        w = 1.0 if self._stats[0] == 0 else self.alpha
        self._stats = [v * (1 - w) for v in self._stats]
        self._add(x, y, w)
        self._fit()

    def __call__(self, x: float) -> float:
        return self.intercept + self.slope * x

    def _add(self, x: float, y: float, w: float) -> None:
        for i, v in enumerate((1.0, x, y, x * x, x * y)):
            self._stats[i] += w * v

    def _fit(self) -> None:
        w, sx, sy, sxx, sxy = self._stats
        mx, my = sx / w, sy / w
        var = sxx / w - mx * mx
        if var > 1.0:  # the points' x differ by more than a character
            self.slope = max((sxy / w - mx * my) / var, 0.0)
        self.intercept = max(my - self.slope * mx, 0.0)


# How many passages the edge remembers having sent (the cloud keeps the states of passages it has read: a
# passage sent before costs the cloud no prefill, as long as it is still in the cloud's cache).
SENT_PASSAGES = 4096


class SentPassages:
    """The passages this edge has sent to the cloud, the most recent :data:`SENT_PASSAGES` (by text digest)."""

    def __init__(self, capacity: int = SENT_PASSAGES) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()

    def fresh_chars(self, texts: Sequence[str]) -> int:
        """Characters of ``texts`` not sent before (each distinct text once)."""
        seen: set[bytes] = set()
        n = 0
        for text in texts:
            key = self._key(text)
            if key not in self._seen and key not in seen:
                n += len(text)
            seen.add(key)
        return n

    def add(self, texts: Sequence[str]) -> None:
        for text in texts:
            key = self._key(text)
            self._seen[key] = None
            self._seen.move_to_end(key)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)


@dataclass(frozen=True)
class CloudCost:
    """What the gateway measured of its own answers at start-up (its /healthz ``answer_ms``), ms.

    :param cold_ms: one answer over passages it had not read (their prefill included).
    :param warm_ms: the same answer again, the passages' states kept (None: not measured).
    :param chars: the characters of those passages (0: unknown).
    :param decode_ms: the warm answer's decoding time (None: not reported).
    :param tokens: the tokens it decoded.
    """

    cold_ms: float
    warm_ms: float | None = None
    chars: int = 0
    decode_ms: float | None = None
    tokens: int = 0


class LatencyModel:
    """EWMA estimates of edge compute, RTT, bandwidth and cloud time per generated token.

    The cloud term is a fixed cost per request, plus the prefill of the passage characters the cloud has not
    read before (``cloud_ms_per_char``), plus decode. The first two are one line fitted to the calls measured
    (:class:`EwLine`), started from the gateway's own measurement (:meth:`seed_cloud`).

    :param rtt_ms: initial round-trip time.
    :param bandwidth_mbit: initial bandwidth (both directions).
    :param cloud_base_ms: initial fixed cloud cost per request (the question's prefill, sealing, queueing).
    :param cloud_ms_per_token: initial cloud decode time per generated token.
    :param edge_ms: initial edge compute per question.
    :param cloud_ms_per_char: the cloud's prefill time per passage character it has not read (0: not known).
    """

    def __init__(self, rtt_ms: float = 30.0, bandwidth_mbit: float = 50.0, cloud_base_ms: float = 600.0,
                 cloud_ms_per_token: float = 25.0, edge_ms: float = 2000.0, expected_tokens: float = 8.0,
                 cloud_ms_per_char: float = 0.0, sent: SentPassages | None = None) -> None:
        self.rtt = Ewma(rtt_ms)
        self.bytes_per_ms = Ewma(bandwidth_mbit * 1e6 / 8 / 1000)
        self.cloud = EwLine(cloud_base_ms, cloud_ms_per_char)  # ms (decoding taken out) over new passage characters
        self.cloud_per_token = Ewma(cloud_ms_per_token)
        self.edge = Ewma(edge_ms)
        self.tokens = Ewma(expected_tokens)
        self.sent = sent if sent is not None else SentPassages()
        self._lock = threading.Lock()

    def predict(self, edge_ms: float | None, bytes_up: int, bytes_down: int = 400, fresh_chars: int = 0) -> Prediction:
        """Predicted time if escalated; ``edge_ms`` None = use the running edge estimate; ``fresh_chars``: the
        characters of the request's passages the cloud has not read (:meth:`fresh_chars`)."""
        with self._lock:
            return Prediction(
                edge_ms=self.edge.value if edge_ms is None else edge_ms,
                transfer_ms=(bytes_up + bytes_down) / max(self.bytes_per_ms.value, 1e-6),
                rtt_ms=self.rtt.value,
                cloud_ms=self.cloud(fresh_chars) + self.cloud_per_token.value * self.tokens.value,
            )

    def fresh_chars(self, passages: Sequence[str]) -> int:
        """Characters of these passages this edge has not sent to the cloud yet."""
        with self._lock:
            return self.sent.fresh_chars(passages)

    def seed_cloud(self, cost: CloudCost) -> None:
        """Start the cloud term from what the cloud says an answer costs there (its /healthz), rather than from
        the default guess. With its warm answer and its passages' size measured too, the line starts through
        both answers: a request whose passages are as long, and as new, as the measured ones is predicted at
        ``cost.cold_ms``, one whose passages the cloud has read at ``cost.warm_ms``. Otherwise the fixed cost is
        the cold answer's. With its decoding reported, that is taken out and sets the time per generated token
        (the measured reply is longer than most; the expected reply length stays). Not samples: the calls
        measured then move the line away from them."""
        with self._lock:
            shortest = min(cost.cold_ms, cost.warm_ms or cost.cold_ms)  # decoding is never more than a whole answer
            if cost.decode_ms is not None and cost.tokens > 0 and cost.decode_ms <= shortest:
                self.cloud_per_token.value = cost.decode_ms / cost.tokens
                decode = cost.decode_ms
            else:
                decode = min(self.cloud_per_token.value * self.tokens.value, shortest)
            warm = cost.warm_ms
            if warm is not None and cost.chars > 0 and cost.cold_ms >= warm:  # through both: the cost per new character
                self.cloud.seed([(float(cost.chars), cost.cold_ms - decode), (0.0, warm - decode)])
            else:
                self.cloud.seed([(0.0, cost.cold_ms - decode)])

    def observe_edge(self, edge_ms: float) -> None:
        with self._lock:
            self.edge.update(edge_ms)

    def observe_cloud(self, network_ms: float, bytes_up: int, bytes_down: int, server_ms: float,
                      completion_tokens: int, decode_ms: float | None = None, fresh_chars: int = 0) -> None:
        """Fold in one measured cloud call.

        ``network_ms`` is the client-side time minus the server's own time: one RTT plus the
        transfer of both payloads. The RTT estimate follows the fastest calls (payload-free
        limit), and the bandwidth follows what is left once the RTT is taken out. ``fresh_chars``: the
        passage characters the cloud had not read (their prefill is not part of the fixed cost).
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
            else:
                per_token = self.cloud_per_token.value
            self.cloud.update(float(fresh_chars), max(server_ms - per_token * tokens, 0.0))

    def observe_reply(self, timings: Mapping[str, float], bytes_up: int, bytes_down: int, usage: Mapping[str, int],
                      passages: Sequence[str] = ()) -> None:
        """Fold in one cloud reply as the edge measured it (the live cascade's and a record's alike).

        :param timings: ms: ``network``, ``cloud`` (the gateway's total; ``server`` in records of older runs) and
            ``cloud_decode`` when the backend reports it (``decode`` in older records).
        :param usage: the reply's token counts (``completion_tokens``).
        :param passages: the passages the request carried: those not sent before count as new to the cloud,
            and from now on as read.
        """
        with self._lock:
            fresh = self.sent.fresh_chars(passages)
            self.sent.add(passages)
        self.observe_cloud(timings.get("network", 0.0), bytes_up, bytes_down, timings.get("cloud", timings.get("server", 0.0)),
                           usage.get("completion_tokens", 0), timings.get("cloud_decode", timings.get("decode")), fresh)

    def for_link(self, rtt_ms: float | None = None, bandwidth_mbit: float | None = None) -> LatencyModel:
        """A model for another link: its RTT and bandwidth as priors (the defaults when not given), what this
        one learned of the edge's and the cloud's compute carried over."""
        snap = self.snapshot()
        link = {k: v for k, v in (("rtt_ms", rtt_ms), ("bandwidth_mbit", bandwidth_mbit)) if v is not None}
        model = LatencyModel(**link, cloud_ms_per_token=snap["cloud_ms_per_token"], edge_ms=snap["edge_ms"],
                             expected_tokens=snap["expected_tokens"], sent=self.sent)
        with self._lock:
            model.cloud = self.cloud.copy()
        return model

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {"edge_ms": self.edge.value, "rtt_ms": self.rtt.value,
                    "bandwidth_mbit": self.bytes_per_ms.value * 8 * 1000 / 1e6,
                    "cloud_base_ms": self.cloud.intercept, "cloud_ms_per_token": self.cloud_per_token.value,
                    "cloud_ms_per_char": self.cloud.slope, "expected_tokens": self.tokens.value}


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
