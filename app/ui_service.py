"""What the web UI runs on: one open document store, one cascade and the link to the cloud, shared
by every browser session of the process.

The UI answers through :meth:`pipelines.cascade.Cascade.answer` like the CLI and the evaluation;
this module only adds what a page shows next to the answer (the predicted and measured latency
per stage, whether the cloud was unreachable) and the run-time switch of the emulated link.
"""

from __future__ import annotations

# Imports inside functions: a command loads only what it runs, so `ecqa --help` and a bad flag's one-line
# error do not wait seconds for haystack, torch and llama.cpp (the UI builds its tabs the same way).
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

from pipelines import IndexStore, get_profile, open_store
from pipelines.answer import (
    POLICIES,
    build_cascade,
    check_configured_policy,
)
from pipelines.ask import Ask
from pipelines.cascade import Cascade
from pipelines.errors import USER_ERRORS, PipelineError
from pipelines.index import index_files
from pipelines.policies import policy_class
from pipelines.settings import Settings
from pipelines.stages import split_stages

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
# What `make index` builds: the bundled SQuAD 2.0 sample (data/README.md).
BUNDLED_CORPUS = (REPO / "data" / "squad-v2-dev-a.json", REPO / "data" / "squad-v2-extra-paragraphs.json")
DIRECT = "none"  # the network choice that talks to the gateway without an emulated link
MODELS_QUEUE = "models"  # Gradio concurrency id of every event that touches a model or the store
# Bytes of a sealed reply the latency model assumes before the call (LatencyModel.predict's default).
_PREDICTED_BYTES_DOWN = 400

# The latency chart's stages, in the order a question travels.
STAGES = ("embed", "retrieve", "edge generate", "network up", "cloud", "network down", "other")


@dataclass(frozen=True)
class Answered:
    """One answered question as the page shows it.

    :param result: ``AskResult.to_json()`` — the contract the CLI prints.
    :param measured: ms per stage of :data:`STAGES`, summing to the measured total.
    :param predicted: ms per stage of the latency model's T_total if escalated (None for a cache hit).
    :param degraded: the policy wanted the cloud but it failed or its breaker is open: the edge decided alone.
    :param budget_ms: the Tmax the question was answered under.
    :param network: the link profile the cloud was reached over (``none`` = direct).
    :param ui_ms: wall time of :meth:`UiService.ask`, to compare with ``result['timings_ms']['total']``.
    """

    result: dict[str, Any]
    measured: dict[str, float]
    predicted: dict[str, float] | None
    degraded: bool
    budget_ms: float
    network: str
    ui_ms: float

    @property
    def badge(self) -> str:
        """edge, cloud, cache, abstained or degraded."""
        if self.degraded:
            return "degraded"
        tier = str(self.result["tier"])
        return "abstained" if tier == "abstain" else tier


class UiService:
    """The UI process's edge: settings, the open store and the cascade, with a lock around model calls.

    ``settings.cloud_url`` is the gateway itself; when a link profile is chosen the cascade's
    cloud client goes through a :class:`~netem.link.LinkEmulator` in front of it (the cascade owns that link).

    :param settings: the entry point's settings (``cloud_url`` = the gateway, direct).
    :param store: an open document store (closed by :meth:`close`).
    :param cascade: a cascade over ``store``, built for ``settings`` (closed by :meth:`close`).
    """

    def __init__(self, settings: Settings, store: IndexStore, cascade: Cascade) -> None:
        self.settings = settings
        self.store = store
        self.cascade = cascade
        self.gateway_url = settings.cloud_url
        self.models_queue = MODELS_QUEUE
        # llama.cpp and embedded Qdrant are not safe to call from two threads; Gradio's queue already
        # runs one model event at a time (MODELS_QUEUE), the lock also covers callers outside it.
        self.lock = threading.RLock()

    @classmethod
    def open(cls, settings: Settings) -> Self:
        """Open the store, the link (for ``settings.network``) and the cascade; warm the edge models.

        :raises PipelineError: unknown policy, or one that needs a cloud with none configured.
        :raises EdgeError: index folder locked, collection missing, model files missing.
        :raises CloudError: cloud URL not https://, cloud material missing.
        :raises LinkError: unknown network profile.
        """
        check_configured_policy(settings)  # a bad --policy fails before anything loads
        store = open_store(settings)
        try:
            cascade = build_cascade(settings, store)
        except BaseException:
            store.close()
            raise
        try:
            cascade.warm_up()  # the first question should not pay for loading the models (none: workers hold them)
        except BaseException:
            cascade.close()
            store.close()
            raise
        return cls(settings, store, cascade)

    def close(self) -> None:
        """Close the cascade's cloud link and the store."""
        with self.lock:
            self.cascade.close()
            self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what the controls offer ----------------------------------------------------------------
    @property
    def has_cloud(self) -> bool:
        return self.cascade.cloud is not None

    @property
    def network(self) -> str:
        return self.settings.network or DIRECT

    def policies(self) -> list[str]:
        """The policies this UI can run: all of them with a cloud, else only those that stay on the edge."""
        return [p for p in POLICIES if self.has_cloud or not policy_class(p).uses_cloud]

    def default_policy(self) -> str:
        return check_configured_policy(self.settings)

    def threshold(self, policy: str) -> float | None:
        """The calibrated threshold of ``policy``, or None when it has none (edge, cloud)."""
        if policy not in ("cascade", "latency", "learned"):
            return None
        return self.cascade.calibration.threshold(policy)

    # --- asking -----------------------------------------------------------------------------------
    def ask(self, question: str, policy: str, threshold: float | None = None, budget_ms: float | None = None,
            top_k: int | None = None, use_cache: bool = True) -> Answered:
        """Answer one question with the cascade (``use_cache=False``: past answers are not served).

        :raises PipelineError: empty or oversized question, unknown policy, cloud policy without a cloud,
            an out-of-range threshold, Tmax or top-k.
        :raises EdgeError: the collection disappeared, the prompt does not fit the context window.
        """
        t0 = time.perf_counter()
        ask = Ask.check(question, policy, threshold, budget_ms, top_k, have_cloud=self.has_cloud)  # the API may send anything
        budget = self.settings.budget_ms if ask.budget_ms is None else ask.budget_ms
        with self.lock:
            # The latency model as the policy saw it: it learns from this very question afterwards.
            before = self.cascade.latency.snapshot()
            data = self.cascade.answer(replace(ask, budget_ms=budget), use_cache=use_cache).to_json()
        predicted = None if data["tier"] == "cache" else predicted_stages(data, before)
        return Answered(data, measured_stages(data, before), predicted, cloud_unreachable(data.get("decision")), budget,
                        self.network, (time.perf_counter() - t0) * 1000.0)

    # --- the emulated link --------------------------------------------------------------------------
    def set_network(self, name: str | None) -> str:
        """Re-point the cloud client through a link emulator for profile ``name`` (None/``none``: direct).

        The latency model restarts from the profile's RTT and bandwidth and keeps what it learned
        about the edge and the cloud's compute.

        :returns: a one-line description of the link now in use.
        :raises PipelineError: no cloud gateway configured.
        :raises LinkError: unknown profile (the cloud link in use stays as it was).
        """
        profile = None if name in (None, "", DIRECT) else name
        with self.lock:
            if self.gateway_url is None or self.cascade.cloud is None:
                raise PipelineError("no cloud gateway is configured — start the UI with `make run` (or `ecqa up`), "
                                    "or pass --cloud-url to `ecqa ui`")
            self.cascade.relink(profile)
            self.settings = self.settings.model_copy(update={"network": profile})
            logger.info("cloud link now %s", profile or DIRECT)
            return self.describe_link()

    def describe_link(self) -> str:
        if self.gateway_url is None:
            return "no cloud configured: every answer comes from the edge"
        if self.settings.network:
            p = get_profile(self.settings.network)
            return f"{p.name} link ({p.rtt_ms:g} ms RTT, {p.bandwidth_mbit:g} Mbit/s) → gateway {self.gateway_url}"
        return f"direct → gateway {self.gateway_url}"

    @property
    def has_workers(self) -> bool:
        return self.cascade.dispatcher is not None

    def workers(self) -> list[dict[str, Any]] | None:
        """The edge workers' live loads (None: the edge reads in this process)."""
        if self.cascade.dispatcher is None:
            return None
        try:
            return self.cascade.dispatcher.loads(fresh=True)
        except USER_ERRORS:  # a registry that went away: shown as no workers, the page keeps working
            return []

    # --- the index ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """``ecqa index stats --json`` of the served collection.

        :raises CollectionNotFoundError: it was dropped meanwhile.
        """
        with self.lock:
            return self.store.info(self.settings.collection).as_dict()

    def build_index(self, paths: Sequence[Path], recreate: bool = False,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Index files into the served collection (atomic: on an error the previous version keeps serving).

        :param progress: called with (passages embedded, passages to embed).
        :returns: the build report (``ecqa index build --json``).
        :raises PipelineError: no files, unreadable or malformed file, empty corpus, embedder mismatch.
        """
        if not paths:
            raise PipelineError("no files to index — upload SQuAD v2 .json, .jsonl, .txt or .md files, "
                                "or tick the bundled corpus")
        s = self.settings
        with self.lock:
            embedder = self.cascade.edge.embedder.embedder  # the question embedder: one MiniLM in memory
            report = index_files(s, self.store, paths, embedder=embedder, recreate=recreate, progress=progress).report
            self.cascade.edge.retriever.refresh_if_stale(every_s=0.0)  # answer from the new version now
        return report.as_dict()


def cloud_unreachable(decision: dict[str, Any] | None) -> bool:
    """The policy wanted the cloud and the edge decided alone instead: the call failed (``degraded``), or
    the circuit breaker, open after failed calls, let none through (the policies then say
    "cloud unavailable")."""
    d = decision or {}
    return bool(d.get("degraded")) or "cloud unavailable" in str(d.get("reason", ""))


def bundled_corpus() -> list[Path]:
    """The bundled SQuAD 2.0 sample.

    :raises PipelineError: not there (an installed package without the repository's data/).
    """
    missing = [p for p in BUNDLED_CORPUS if not p.is_file()]
    if missing:
        raise PipelineError(f"the bundled corpus is not at {missing[0]} — run the UI from a clone of the "
                            "repository, or upload files instead")
    return list(BUNDLED_CORPUS)


# --- latency per stage ---------------------------------------------------------------------------------
def _link_terms(snapshot: dict[str, float], bytes_up: float, bytes_down: float) -> tuple[float, float]:
    """The latency model's one-way times (half the RTT plus the payload over the bandwidth), up and down."""
    bytes_per_ms = max(snapshot["bandwidth_mbit"] * 1e6 / 8 / 1000, 1e-6)
    half_rtt = snapshot["rtt_ms"] / 2
    return half_rtt + bytes_up / bytes_per_ms, half_rtt + bytes_down / bytes_per_ms


def measured_stages(data: dict[str, Any], snapshot: dict[str, float]) -> dict[str, float]:
    """Measured ms per stage of :data:`STAGES`; they sum to ``timings_ms.total``.

    The edge measures the network time of a cloud call as one number (request time minus the
    gateway's own); it is split into up and down in the proportion the latency model expects
    for these payload sizes. Sealing counts as sending, opening the reply as receiving.
    """
    t = data["timings_ms"]
    split = split_stages(t, "other")  # one accounting for the chart and the evaluation; "cache" counts as other
    out = dict.fromkeys(STAGES, 0.0)
    out["embed"], out["retrieve"] = split.get("embed", 0.0), split.get("retrieve", 0.0)
    out["edge generate"] = split.get("edge_generate", 0.0)
    if "network" in split:
        up, down = _link_terms(snapshot, data.get("bytes_up", 0), data.get("bytes_down", 0))
        share_up = up / (up + down) if up + down > 0 else 0.5
        out["network up"] = split["network"] * share_up + t.get("seal", 0.0)
        out["network down"] = split["network"] * (1 - share_up) + t.get("open", 0.0)
        out["cloud"] = split.get("cloud", 0.0)
    out["other"] = max(0.0, t["total"] - sum(out.values()))  # cache lookups, routing, a failed cloud call
    return out


def predicted_stages(data: dict[str, Any], snapshot: dict[str, float]) -> dict[str, float]:
    """The latency model's T_total = T_edge + S/B + RTT + T_cloud if escalated, per stage.

    T_edge is what the edge had measured when the policy decided (embed + retrieve, plus the SLM
    unless the policy escalates without it), so it is split with the measured embed and retrieve.
    """
    decision = data.get("decision") or {}
    total = float(decision.get("predicted_total_ms", 0.0))
    up, down = _link_terms(snapshot, decision.get("predicted_bytes_up", 0), _PREDICTED_BYTES_DOWN)
    cloud = (snapshot["cloud_base_ms"] + snapshot["cloud_ms_per_char"] * decision.get("predicted_fresh_chars", 0)
             + snapshot["cloud_ms_per_token"] * snapshot["expected_tokens"])
    edge = max(0.0, total - up - down - cloud)
    t = data["timings_ms"]
    embed = min(t.get("embed", 0.0), edge)
    retrieve = min(t.get("retrieve", 0.0), edge - embed)
    out = dict.fromkeys(STAGES, 0.0)
    out.update({"embed": embed, "retrieve": retrieve, "edge generate": edge - embed - retrieve,
                "network up": up, "cloud": cloud, "network down": down})
    return out
