"""Gateway metrics in the Prometheus text exposition format (no client library needed)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

# Backend latency buckets (s): gemma-3-270m answers in ~0.3-1.5 s on 2 CPU cores, vLLM on a GPU in 20-200 ms.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_KIND_LABELS = 24  # distinct redaction kinds counted by name; later ones count as "other"


class GatewayMetrics:
    """Counters of requests and refusals and a histogram of backend latency; thread-safe.

    :param reasons: refusal reasons exported as 0 before the first one happens.
    """

    def __init__(self, reasons: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, int]] = Counter()
        self._refusals: Counter[str] = Counter({r: 0 for r in reasons})
        self._buckets = [0] * len(LATENCY_BUCKETS)
        self._latency_sum = 0.0
        self._latency_count = 0
        self._backend_errors = 0
        self._redacted: Counter[str] = Counter()
        self._answer_requests = 0

    def request(self, path: str, status: int) -> None:
        with self._lock:
            self._requests[(path, status)] += 1

    def refusal(self, reason: str) -> None:
        with self._lock:
            self._refusals[reason] += 1

    def backend(self, seconds: float, ok: bool) -> None:
        with self._lock:
            self._latency_sum += seconds
            self._latency_count += 1
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self._buckets[i] += 1
            if not ok:
                self._backend_errors += 1

    def redactions(self, counts: dict[str, int]) -> None:
        """One opened answer request and what its edge redacted (kinds only: the values never reach the gateway)."""
        with self._lock:
            self._answer_requests += 1
            self._redacted["any"] += 1 if any(counts.values()) else 0
            for kind, n in counts.items():
                if n > 0:  # label values bounded: an edge cannot grow the exposition without limit
                    self._redacted[kind if kind in self._redacted or len(self._redacted) < MAX_KIND_LABELS else "other"] += 1

    def refusals(self) -> dict[str, int]:
        with self._lock:
            return dict(self._refusals)

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP ecqa_gateway_requests_total HTTP requests answered, by path and status code.",
                "# TYPE ecqa_gateway_requests_total counter",
            ]
            for (path, status), n in sorted(self._requests.items()):
                lines.append(f'ecqa_gateway_requests_total{{path="{path}",code="{status}"}} {n}')
            lines += [
                "# HELP ecqa_gateway_refusals_total Requests or connections refused before any backend call, by reason.",
                "# TYPE ecqa_gateway_refusals_total counter",
            ]
            for reason, n in sorted(self._refusals.items()):
                lines.append(f'ecqa_gateway_refusals_total{{reason="{reason}"}} {n}')
            lines += [
                "# HELP ecqa_gateway_backend_latency_seconds Time of one backend completion call.",
                "# TYPE ecqa_gateway_backend_latency_seconds histogram",
            ]
            for bound, n in zip(LATENCY_BUCKETS, self._buckets, strict=True):
                lines.append(f'ecqa_gateway_backend_latency_seconds_bucket{{le="{bound:g}"}} {n}')
            lines.append(f'ecqa_gateway_backend_latency_seconds_bucket{{le="+Inf"}} {self._latency_count}')
            lines.append(f"ecqa_gateway_backend_latency_seconds_sum {self._latency_sum:.6f}")
            lines.append(f"ecqa_gateway_backend_latency_seconds_count {self._latency_count}")
            lines += [
                "# HELP ecqa_gateway_backend_errors_total Backend calls that failed.",
                "# TYPE ecqa_gateway_backend_errors_total counter",
                f"ecqa_gateway_backend_errors_total {self._backend_errors}",
                "# HELP ecqa_gateway_answer_requests_total Answer requests opened.",
                "# TYPE ecqa_gateway_answer_requests_total counter",
                f"ecqa_gateway_answer_requests_total {self._answer_requests}",
                "# HELP ecqa_gateway_redacted_requests_total Answer requests in which the edge replaced personal data "
                "by placeholders, by kind ('any': at least one kind).",
                "# TYPE ecqa_gateway_redacted_requests_total counter",
            ]
            for kind, n in sorted({"any": 0, **self._redacted}.items()):
                lines.append(f'ecqa_gateway_redacted_requests_total{{kind="{kind}"}} {n}')
        return "\n".join(lines) + "\n"
