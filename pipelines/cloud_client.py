"""The cascade's view of the cloud tier: :class:`CloudAnswerer` behind the ``CloudClient`` protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cloud.cloud_answerer import CloudAnswerer
from pipelines.cascade import CloudReply
from reading.prompts import Passage


class AnswererClient:
    """Adapts a :class:`CloudAnswerer` (sealed HTTPS to the gateway) to the cascade.

    :param answerer: a configured cloud answerer (warmed up on first use).
    """

    def __init__(self, answerer: CloudAnswerer) -> None:
        self.answerer = answerer

    def sent(self, question: str, passages: Sequence[Passage]) -> dict[str, Any]:
        """Exactly what leaves the device, before compression and sealing."""
        return self.answerer.payload(question, passages)

    def estimate_bytes_up(self, question: str, passages: Sequence[Passage]) -> int:
        return int(self.answerer.sealed_size(question, passages))

    def ask(self, question: str, passages: Sequence[Passage], timeout_s: float) -> CloudReply:
        """:raises CloudError: connection, TLS, timeout (``timeout_s`` bounds the whole call), refusal."""
        out = self.answerer.ask(question, passages, timeout_s=timeout_s)
        # The edge's own stages share these names: prefix them on the cloud side.
        timings = {(f"cloud_{k}" if k in ("generate", "prefill", "decode") else k): v for k, v in out["timings"].items()}
        return CloudReply(out["answer"], out["confidence"], timings, out["bytes_up"], out["bytes_down"], out["usage"],
                          self.sent(question, passages), out["model"], out["p_answerable"], out["reading"])
