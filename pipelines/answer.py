"""The one place a Cascade is built from settings, and the one answer function the CLI, the UI
and the evaluation call."""

from __future__ import annotations

from typing import Any

from edge.answer_cache import AnswerCache
from edge.store import IndexStore
from pipelines.ask import Ask, require_cloud
from pipelines.calibration import Calibration
from pipelines.cascade import Cascade
from pipelines.cloud_path import CloudLink, link_priors, open_cloud_link
from pipelines.dispatch import Dispatcher
from pipelines.edge_pipeline import EdgeQA
from pipelines.fleet import dispatcher_fleet
from pipelines.latency import CircuitBreaker, LatencyModel
from pipelines.policies import REGISTRY, policy_class
from pipelines.settings import Settings
from pipelines.types import AskResult
from pipelines.workers import registry_for

POLICIES: tuple[str, ...] = tuple(REGISTRY)


def effective_policy(settings: Settings, policy: str | None = None) -> str:
    """The policy asked for, else the configured one, else cascade with a cloud and edge without (not checked:
    :func:`check_configured_policy` or :meth:`Ask.check` does that)."""
    return policy or settings.policy or ("cascade" if settings.cloud_url else "edge")


def check_configured_policy(settings: Settings) -> str:
    """The settings' policy, checked before anything loads (a UI or a shell serves it to every question).

    :raises PipelineError: unknown policy, or one that escalates with no cloud URL configured.
    """
    name = effective_policy(settings)
    require_cloud(name, settings.cloud_url is not None)
    return name


def check_policy(policy: str) -> str:
    """:raises PipelineError: unknown policy name (the message lists the valid ones)."""
    policy_class(policy)
    return policy


def latency_model_for(network: str | None, **priors: float) -> LatencyModel:
    """A latency model starting from link profile ``network``'s RTT and bandwidth (default priors without one).

    :raises LinkError: unknown profile.
    """
    return LatencyModel(**{**link_priors(network), **priors})


def answer_cache_from(settings: Settings) -> AnswerCache | None:
    return AnswerCache(settings.cache_max_entries, settings.cache_threshold) if settings.cache_enabled else None


def build_cascade(settings: Settings, store: IndexStore, edge: EdgeQA | None = None,
                  cloud: Any = None) -> Cascade:
    """A cascade configured from the settings: edge, cloud client, cache, latency model, breaker.

    :param edge: edge models already loaded, over ``settings.collection`` (else loaded from the settings).
    :param cloud: a cloud client to use, the caller's to close (else the cascade opens and owns a link to
        ``settings.cloud_url``, if set, through an emulated ``settings.network``; :meth:`Cascade.close`).
    :raises CollectionNotFoundError: no such collection.
    :raises ConfigError: missing or malformed calibration file.
    :raises CloudError: a cloud URL that is not https://, missing cloud material.
    :raises LinkError: unknown network profile.
    """
    latency = latency_model_for(settings.network)  # an unknown link profile is a bad flag: told before the store's state
    edge = edge or EdgeQA(settings, store)
    edge.retriever.warm_up()  # of the store's, a missing collection is the likelier mistake: report it first
    calibration = Calibration.load(settings.calibration_path)
    dispatcher = dispatcher_from(settings)
    link = linker = None
    if cloud is None and settings.cloud_url:
        def linker(network: str | None) -> CloudLink:
            return open_cloud_link(settings.model_copy(update={"network": network}))

        link = linker(settings.network)
        cost = link.answer_cost()  # the gateway's own answer times: the first question's prediction is not a guess
        if cost is not None:
            latency.seed_cloud(cost)
    breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
    return Cascade(edge, calibration, cloud=cloud, cache=answer_cache_from(settings), latency=latency, breaker=breaker,
                   budget_ms=settings.budget_ms, dispatcher=dispatcher,
                   prices=(settings.cloud_price_prompt_per_1k, settings.cloud_price_completion_per_1k),
                   link=link, linker=linker)


def dispatcher_from(settings: Settings) -> Dispatcher | None:
    """The dispatcher over the configured workers' registry, or None (the edge reads in this process).

    :raises RegistryError: a malformed Redis URL; :raises MaterialError: a secure fleet without its certificates.
    """
    if not settings.effective_registry():
        return None
    fleet = dispatcher_fleet(settings)
    return Dispatcher(registry_for(settings, fleet.seal), settings.dispatch_policy, settings.dispatch_overflow,
                      tls=fleet.client_tls)


def answer_question(cascade: Cascade, question: str, policy: str = "edge", top_k: int | None = None,
                    threshold: float | None = None, budget_ms: float | None = None, use_cache: bool = True) -> AskResult:
    """Answer ``question`` with ``policy`` (``use_cache=False``: neither read nor fill the answer cache).

    :raises PipelineError: unknown policy, a policy that escalates with no cloud configured,
        empty or oversized question, an out-of-range threshold, budget or top-k.
    """
    ask = Ask.check(question, policy, threshold, budget_ms, top_k, have_cloud=cascade.cloud is not None)
    return cascade.answer(ask, use_cache=use_cache)
