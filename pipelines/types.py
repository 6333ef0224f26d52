"""Result of answering one question — the JSON contract of `ecqa ask --json`, the UI and eval."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# The most characters of a passage's text an answer carries (`ask --json`, the UI): a longer passage (a
# huge SQuAD paragraph) is cut there, or just past its answer span, and says how long it was.
MAX_PASSAGE_OUTPUT_CHARS = 20_000


def bounded_passage(p: dict[str, Any]) -> dict[str, Any]:
    """``p`` with its text cut to :data:`MAX_PASSAGE_OUTPUT_CHARS` (kept through its answer span), and
    ``text_chars`` (the full length) added when cut."""
    text = p.get("text")
    if not isinstance(text, str) or len(text) <= MAX_PASSAGE_OUTPUT_CHARS:
        return p
    span = p.get("answer_span")
    keep = max(MAX_PASSAGE_OUTPUT_CHARS, int(span[1]) + 200 if span else 0)
    if keep >= len(text):
        return p
    return {**p, "text": text[:keep], "text_chars": len(text)}


@dataclass(frozen=True)
class AskResult:
    """One answered question.

    ``answer`` is '' for "no answer"; ``tier`` says who answered ("edge" here; the cascade adds
    "cloud" and "cache"); ``timings_ms`` always carries ``total``.
    """

    question: str
    answer: str
    tier: str
    confidence: float
    passages: list[dict[str, Any]]
    timings_ms: dict[str, float]
    usage: dict[str, int] = field(default_factory=dict)
    collection: str = ""
    models: dict[str, str] = field(default_factory=dict)
    decision: dict[str, Any] | None = None  # the cascade's route and why (None: plain edge call)
    bytes_up: int = 0  # sealed request bytes sent to the cloud
    bytes_down: int = 0  # sealed reply bytes received
    sent: dict[str, Any] = field(default_factory=dict)  # what left the device, before sealing
    features: dict[str, float] = field(default_factory=dict)  # the routing models' inputs
    # With edge workers: the policy, the worker that read it (None: redirected), the attempts, each
    # worker's load when it was dispatched, and a redirection's cloud cost. None: read in this process.
    dispatch: dict[str, Any] | None = None
    redactions: dict[str, int] = field(default_factory=dict)  # kind -> values replaced by placeholders in what was sent
    restored: bool = False  # the answer is the cloud's, with the values its placeholders stood for put back
    pii_undetected: list[str] = field(default_factory=list)  # kinds the redaction could not look for (no NER model)
    pii: str = ""  # the redaction mode what was sent went under ("off", "redact", "block"); "" = nothing sent

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.decision is None:
            del out["decision"]
        if self.dispatch is None:
            del out["dispatch"]
        out["timings_ms"] = {k: round(v, 3) for k, v in self.timings_ms.items()}
        out["passages"] = [bounded_passage(p) for p in out["passages"]]
        return out
