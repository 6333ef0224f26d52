"""edgecloud-qa: pipelines layer, and its one door: what app/, eval/ and benchmarks/ import of it.

``from pipelines import open_store`` loads only the module that defines ``open_store`` (PEP 562
``__getattr__`` below), not the whole layer: most modules here import haystack, torch or llama.cpp,
and `ecqa --help` or a bad flag's one-line error must not wait seconds for them.
"""

from __future__ import annotations

import importlib
from typing import Any

# Module -> the names the door gives from it. A few come from a lower package as they are: the document
# store, where the placeholders are in what was sent, the link profiles, the llama.cpp check's error, the read
# plans of a reading.
# pipelines.dispatch_policies.POLICIES (the worker pickers) stays behind its module: here POLICIES are the
# routing policies.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "pipelines.answer": ("POLICIES", "answer_cache_from", "answer_question", "build_cascade", "check_configured_policy",
                         "check_policy", "effective_policy", "latency_model_for"),
    "pipelines.ask": ("Ask", "check_ask_options"),
    "pipelines.calibration": ("AnswerModel", "Calibration", "DEFAULT_CALIBRATION", "LogisticModel", "Valued",
                              "in_calibration_split"),
    "pipelines.cascade": ("AnswerCacheLike", "Cascade", "CloudClient"),
    "pipelines.cloud_client": ("AnswererClient", "privacy_line"),
    "pipelines.cloud_path": ("cloud_answerer_from", "cloud_client_from", "cloud_dir_of", "open_cloud_link", "redactor_from"),
    "pipelines.dispatch": ("Dispatcher", "EdgeOverflow", "OVERFLOW_MODES", "redirect_cost_usd"),
    "pipelines.dispatch_policies": ("WorkerLoad", "make_policy"),
    "pipelines.edge_pipeline": ("EdgeQA", "Retrieved", "check_question"),
    "pipelines.errors": ("ConfigError", "PipelineError", "USER_ERRORS"),
    "pipelines.fleet": ("dispatcher_fleet", "issue_worker_certificates", "worker_fleet"),
    "pipelines.index": ("InputFormatError", "document_id", "embedder_for", "index_files", "load_files",
                        "prepare_kv_states", "pull_index", "read_squad", "snapshot_index", "stored_passages"),
    "pipelines.latency": ("LatencyModel",),
    "pipelines.outcome": ("EdgeRead", "settle"),
    "pipelines.policies": ("REGISTRY", "Policy", "Signals", "gain_score", "policy_class"),
    "pipelines.router": ("CascadeRouter",),
    "pipelines.settings": ("Settings", "default_data_dir", "doctor_report", "load_settings", "open_store",
                           "prompts_fingerprint"),
    "pipelines.signals": ("PassageReading", "PassageScore", "cloud_signals", "edge_signals", "keep_cloud_answer",
                          "scores_from_json"),
    "pipelines.stack": ("embedded_stack",),
    "pipelines.stages": ("split_stages",),
    "pipelines.workers": ("build_worker", "check_worker_id", "make_server", "parse_cores", "registry_for"),
    "edge.pii": ("placeholders",),
    "edge.store": ("DocumentStore", "IndexStore"),
    "netem.profiles": ("PROFILES", "get_profile"),
    "reading.llama_check": ("CheckFailed",),
    "reading.passages": ("FULL", "ReadPlan", "under_plan"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup finds it without coming here
    return value
