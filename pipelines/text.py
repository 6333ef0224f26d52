"""The front door of reading/ for eval/: how an answer is cut from a reply, and which prompts were used."""

from __future__ import annotations

import hashlib
from pathlib import Path

import reading.prompts
from reading.text import extract_answer_span

__all__ = ["extract_answer_span", "prompts_fingerprint"]


def prompts_fingerprint() -> str:
    """The prompts both tiers read with: records made with other prompts are not this run's."""
    return hashlib.sha256(Path(reading.prompts.__file__).read_bytes()).hexdigest()[:16]
