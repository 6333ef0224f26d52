"""The one function every entry point uses to answer a question, and the policy names it knows."""

from __future__ import annotations

from pipelines.edge_pipeline import EdgeQA
from pipelines.errors import PipelineError
from pipelines.types import AskResult

# The cascade issue adds cloud, cascade, latency and learned policies to this registry.
POLICIES: tuple[str, ...] = ("edge",)


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise PipelineError(f"unknown policy {policy!r} — choose one of: {', '.join(POLICIES)}")
    return policy


def answer_question(edge: EdgeQA, question: str, policy: str = "edge", top_k: int | None = None) -> AskResult:
    """Answer ``question`` with ``policy``.

    :raises PipelineError: unknown policy, empty or oversized question.
    """
    check_policy(policy)
    return edge.answer(question, top_k=top_k)
