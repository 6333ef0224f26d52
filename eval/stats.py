"""The one percentile every latency column of the project uses (BENCHMARKS.md says which)."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default, "linear") of ``values``; 0 for none.

    Between two samples it interpolates, so a p95 of 20 values lies between the 19th and the 20th;
    the nearest-rank p95 that some benchmarks took before picked one sample, and their columns were
    not comparable with the others.
    """
    if not values:
        return 0.0
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
