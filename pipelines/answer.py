"""The one place a Cascade is built from settings, and the one answer function the CLI, the UI
and the evaluation call."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from edge.answer_cache import AnswerCache
from edge.store import DocumentStore
from netem.link import LinkEmulator, get_profile
from pipelines.calibration import Calibration
from pipelines.cascade import Cascade
from pipelines.cloud_client import AnswererClient
from pipelines.cloud_path import cloud_answerer_from
from pipelines.dispatch import Dispatcher
from pipelines.edge_pipeline import EdgeQA
from pipelines.errors import PipelineError
from pipelines.fleet import dispatcher_fleet
from pipelines.latency import CircuitBreaker, LatencyModel
from pipelines.policies import REGISTRY, check_threshold, policy_class
from pipelines.settings import Settings
from pipelines.types import AskResult
from pipelines.workers import registry_for

POLICIES: tuple[str, ...] = tuple(REGISTRY)
MAX_TOP_K = 50  # Settings.top_k's bound


def effective_policy(settings: Settings, policy: str | None = None) -> str:
    """The policy asked for, else the configured one, else cascade with a cloud and edge without.

    :raises PipelineError: unknown policy, or one that escalates with no cloud URL configured.
    """
    name = policy or settings.policy or ("cascade" if settings.cloud_url else "edge")
    _require_cloud(name, settings.cloud_url is not None)
    return name


def _require_cloud(policy: str, have_cloud: bool) -> None:
    if policy_class(policy).uses_cloud and not have_cloud:
        raise PipelineError(
            f"policy {policy!r} escalates to the cloud but no gateway is configured — pass --cloud-url URL "
            "(printed by `ecqa cloud serve`) or set ECQA_CLOUD_URL, or use --policy edge"
        )


def check_policy(policy: str) -> str:
    """:raises PipelineError: unknown policy name (the message lists the valid ones)."""
    policy_class(policy)
    return policy


@contextlib.contextmanager
def emulated_link(settings: Settings) -> Iterator[Settings]:
    """Settings whose cloud URL goes through a link emulator for ``settings.network``, while open.

    :raises EdgeError: unknown profile.
    """
    if not settings.network or not settings.cloud_url:
        yield settings
        return
    profile = get_profile(settings.network)
    parts = urlsplit(settings.cloud_url)
    if not parts.hostname or not parts.port:
        raise PipelineError(f"cannot emulate a link to {settings.cloud_url!r} — give the cloud URL with a port, "
                            "e.g. https://127.0.0.1:8443")
    with LinkEmulator(profile, (parts.hostname, parts.port)) as link:
        # The gateway's certificate names 127.0.0.1 and localhost, so the proxy keeps TLS valid.
        yield settings.model_copy(update={"cloud_url": f"https://127.0.0.1:{link.address[1]}"})


def latency_model_for(network: str | None, **priors: float) -> LatencyModel:
    """A latency model starting from link profile ``network``'s RTT and bandwidth (default priors without one).

    :raises EdgeError: unknown profile.
    """
    if network:
        profile = get_profile(network)
        priors = {"rtt_ms": profile.rtt_ms, "bandwidth_mbit": profile.bandwidth_mbit, **priors}
    return LatencyModel(**priors)


def answer_cache_from(settings: Settings) -> AnswerCache | None:
    return AnswerCache(settings.cache_max_entries, settings.cache_threshold) if settings.cache_enabled else None


def build_cascade(settings: Settings, store: DocumentStore, edge: EdgeQA | None = None,
                  cloud: Any = None) -> Cascade:
    """A cascade configured from the settings: edge, cloud client, cache, latency model, breaker.

    :param edge: edge models already loaded, over ``settings.collection`` (else loaded from the settings).
    :param cloud: a cloud client to use (else one for ``settings.cloud_url``, if set).
    :raises CollectionNotFoundError: no such collection.
    :raises ConfigError: missing or malformed calibration file.
    :raises CloudError: a cloud URL that is not https://, missing cloud material.
    """
    edge = edge or EdgeQA(settings, store)
    edge.retriever.warm_up()  # a missing collection is the likelier mistake: report it first
    calibration = Calibration.load(settings.calibration_path)
    if cloud is None and settings.cloud_url:

        cloud = AnswererClient(cloud_answerer_from(settings))
        # Configuration mistakes (bad URL, missing certificates) are errors now; only failures at
        # call time (unreachable, slow, refused) degrade to the edge answer.
        cloud.answerer.warm_up()
    breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
    return Cascade(edge, calibration, cloud=cloud, cache=answer_cache_from(settings),
                   latency=latency_model_for(settings.network), breaker=breaker, budget_ms=settings.budget_ms,
                   dispatcher=dispatcher_from(settings),
                   prices=(settings.cloud_price_prompt_per_1k, settings.cloud_price_completion_per_1k))


def dispatcher_from(settings: Settings) -> Dispatcher | None:
    """The dispatcher over the configured workers' registry, or None (the edge reads in this process).

    :raises RegistryError: a malformed Redis URL; :raises MaterialError: a secure fleet without its certificates.
    """
    if not settings.effective_registry():
        return None
    fleet = dispatcher_fleet(settings)
    return Dispatcher(registry_for(settings, fleet.seal), settings.dispatch_policy, settings.dispatch_overflow,
                      tls=fleet.client_tls)


def check_ask_options(threshold: Any = None, budget_ms: Any = None, top_k: Any = None) -> tuple[float | None, float | None, int | None]:
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


def answer_question(cascade: Cascade, question: str, policy: str = "edge", top_k: int | None = None,
                    threshold: float | None = None, budget_ms: float | None = None, use_cache: bool = True) -> AskResult:
    """Answer ``question`` with ``policy`` (``use_cache=False``: neither read nor fill the answer cache).

    :raises PipelineError: unknown policy, a policy that escalates with no cloud configured,
        empty or oversized question, an out-of-range threshold, budget or top-k.
    """
    threshold, budget_ms, top_k = check_ask_options(threshold, budget_ms, top_k)
    _require_cloud(policy, cascade.cloud is not None)
    return cascade.answer(question, policy=policy, threshold=threshold, budget_ms=budget_ms, top_k=top_k,
                          use_cache=use_cache)
