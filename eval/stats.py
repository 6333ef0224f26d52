"""The one percentile every latency column of the project uses (BENCHMARKS.md says which), and the
bootstrap interval every accuracy figure carries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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


def bootstrap_ci(values: Sequence[float], level: float = 95.0, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The ``level``% percentile-bootstrap interval of the mean of ``values`` (questions resampled with
    replacement, a fixed seed: the same interval every time for the same values); (0, 0) for none."""
    if not values:
        return 0.0, 0.0
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(samples, len(x)))].mean(axis=1)
    tail = (100.0 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100.0 - tail))


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], level: float = 95.0, samples: int = 2000,
                        seed: int = 0) -> tuple[float, float]:
    """The interval of mean(a) - mean(b) over the same questions, resampled together."""
    if len(a) != len(b):
        raise ValueError("paired values must be of the same questions")
    return bootstrap_ci([x - y for x, y in zip(a, b, strict=True)], level, samples, seed)
