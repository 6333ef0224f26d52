"""Fusing a dense and a sparse ranked list into one.

``convex`` (default): ``alpha * cosine + (1 - alpha) * bm25 / max_bm25`` over the union of both
lists. ``rrf``: reciprocal-rank fusion, weighted. On dev-a + distractors (BENCHMARKS.md,
retrieval table) convex with alpha 0.6 gave recall@1 0.81 against 0.77 for the best RRF; the
optimum is flat for alpha 0.5-0.7.
"""

from __future__ import annotations

from collections.abc import Sequence

FUSIONS = ("convex", "rrf")
RRF_K = 60  # the usual constant


def fuse(
    dense: Sequence[tuple[str, float]],
    sparse: Sequence[tuple[str, float]],
    top_k: int,
    method: str = "convex",
    dense_weight: float = 0.6,
    sparse_weight: float = 1.0,
) -> list[tuple[str, float]]:
    """Top-k ``(id, fused score)`` from two ``(id, score)`` lists, each best first.

    :param dense_weight: alpha for ``convex``; the dense list's weight for ``rrf``.
    :param sparse_weight: the sparse list's weight for ``rrf`` (``convex`` uses 1 - alpha).
    """
    fused: dict[str, float] = {}
    if method == "rrf":
        for rank, (pid, _) in enumerate(dense):
            fused[pid] = fused.get(pid, 0.0) + dense_weight / (RRF_K + rank + 1)
        for rank, (pid, _) in enumerate(sparse):
            fused[pid] = fused.get(pid, 0.0) + sparse_weight / (RRF_K + rank + 1)
    elif method == "convex":
        top_sparse = max((s for _, s in sparse), default=0.0) or 1.0
        for pid, score in dense:
            fused[pid] = fused.get(pid, 0.0) + dense_weight * score
        for pid, score in sparse:
            fused[pid] = fused.get(pid, 0.0) + (1.0 - dense_weight) * score / top_sparse
    else:
        raise ValueError(f"unknown fusion {method!r}; choose one of {', '.join(FUSIONS)}")
    return sorted(fused.items(), key=lambda kv: kv[1], reverse=True)[:top_k]
