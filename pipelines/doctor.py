"""What `ecqa doctor` reports: the llama.cpp build, the CPU variant it runs here, the CPU's flags."""

from __future__ import annotations

from typing import Any

from pipelines.settings import Settings
from reading.llama_check import CheckFailed, check
from reading.llama_runtime import relevant_cpu_flags
from reading.models import DEFAULT_EDGE_MODEL, resolve_gguf


def doctor_report(settings: Settings) -> dict[str, Any]:
    """Generate one token with the edge model in a child process and describe what ran it.

    A crash of the child (SIGILL on a CPU the build does not fit) is reported, not suffered.

    :raises CheckFailed: llama.cpp cannot generate a token here; the message says how to fix it.
    :raises ReadingError: the edge model is not pulled or does not verify.
    """
    model = resolve_gguf(settings.slm_model_path, DEFAULT_EDGE_MODEL)
    report = check(str(model))
    report["cpu_flags"] = relevant_cpu_flags()
    return report


__all__ = ["CheckFailed", "doctor_report"]
