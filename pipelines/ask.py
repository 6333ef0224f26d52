"""Ask: one question and how to answer it, checked once — what the answer function takes.

Every entry point hands the cascade either the raw inputs (it checks them, :meth:`Cascade.answer`) or an
:class:`Ask` it made with :meth:`Ask.check` before loading anything (the CLI: a bad flag's one-line error
must not wait for the models). Either way each input is checked once, here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipelines.edge_pipeline import check_question
from pipelines.errors import PipelineError
from pipelines.policies import check_threshold, policy_class

MAX_TOP_K = 50  # Settings.top_k's bound


@dataclass(frozen=True)
class Ask:
    """A checked question (surrounding space stripped, bytes that were not UTF-8 replaced), a known policy,
    and the per-question overrides (None: the configured value) as numbers in range."""

    question: str
    policy: str = "cascade"
    threshold: float | None = None
    budget_ms: float | None = None
    top_k: int | None = None

    @classmethod
    def check(cls, question: Any, policy: str = "cascade", threshold: Any = None, budget_ms: Any = None,
              top_k: Any = None, *, have_cloud: bool | None) -> Ask:
        """The inputs, checked in the order a user reads the errors: the question, the overrides, the policy.

        :param have_cloud: whether a cloud is configured (a policy that escalates needs one); None: not checked —
            a :class:`~pipelines.cascade.Cascade` built without a cloud answers on the edge ("cloud unavailable").
        :raises PipelineError: an empty or oversized question, an out-of-range threshold, budget or top-k, an
            unknown policy, one that escalates with no cloud — one line saying how to fix it.
        """
        q = check_question(question)
        options = check_ask_options(threshold, budget_ms, top_k)
        policy_class(policy)
        if have_cloud is not None:
            require_cloud(policy, have_cloud)
        return cls(q, policy, *options)


def require_cloud(policy: str, have_cloud: bool) -> None:
    """:raises PipelineError: unknown policy, or one that escalates to the cloud when none is configured."""
    if policy_class(policy).uses_cloud and not have_cloud:
        raise PipelineError(
            f"policy {policy!r} escalates to the cloud but no gateway is configured — pass --cloud-url URL "
            "(printed by `ecqa cloud serve`) or set ECQA_CLOUD_URL, or use --policy edge"
        )


def check_ask_options(threshold: Any = None, budget_ms: Any = None,
                      top_k: Any = None) -> tuple[float | None, float | None, int | None]:
    """The per-question overrides (None = the configured value) as numbers, or a clear error.

    Where they come from a user (CLI flags, the UI's controls or its API) they are checked here, once,
    before anything loads: NaN or an infinity would otherwise run and end up in the JSON output.

    :raises PipelineError: a threshold outside [0, 1], a budget that is not a positive finite number of
        ms, a top-k that is not a whole number from 1 to 50.
    """
    th = None if threshold is None else check_threshold(threshold)
    budget = None
    if budget_ms is not None:
        if isinstance(budget_ms, bool) or not isinstance(budget_ms, (int, float)) or not math.isfinite(budget_ms) \
                or budget_ms <= 0:
            raise PipelineError(f"the latency budget {repr(budget_ms)[:40]} ms is not a positive number — give Tmax in "
                                "ms, e.g. --budget-ms 4000")
        budget = float(budget_ms)
    k = None
    if top_k is not None:
        whole = isinstance(top_k, (int, float)) and not isinstance(top_k, bool) and math.isfinite(top_k) \
            and float(top_k).is_integer()
        if not whole or not 1 <= top_k <= MAX_TOP_K:
            raise PipelineError(f"top-k {repr(top_k)[:40]} is not a whole number from 1 to {MAX_TOP_K} — give how many "
                                "passages to retrieve, e.g. 3")
        k = int(top_k)
    return th, budget, k
