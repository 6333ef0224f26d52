"""The cascade's view of the cloud tier: :class:`CloudAnswerer` behind the ``CloudClient`` protocol."""

from __future__ import annotations

from typing import Any

from haystack import Document

from cloud.cloud_answerer import CloudAnswerer
from pipelines.cascade import CloudReply


class AnswererClient:
    """Adapts a :class:`CloudAnswerer` (sealed HTTPS to the gateway) to the cascade.

    :param answerer: a configured cloud answerer (warmed up on first use).
    """

    def __init__(self, answerer: CloudAnswerer) -> None:
        self.answerer = answerer

    @staticmethod
    def _documents(passages: list[dict[str, Any]]) -> list[Document]:
        return [Document(id=str(p.get("id", "")), content=p["text"], meta={"title": p.get("title", "")}) for p in passages]

    def sent(self, question: str, passages: list[dict[str, Any]]) -> dict[str, Any]:
        """Exactly what leaves the device, before compression and sealing."""
        return self.answerer.payload(question, self._documents(passages))

    def estimate_bytes_up(self, question: str, passages: list[dict[str, Any]]) -> int:
        return int(self.answerer.sealed_size(question, self._documents(passages)))

    def ask(self, question: str, passages: list[dict[str, Any]], timeout_s: float) -> CloudReply:
        """:raises CloudError: connection, TLS, timeout (``timeout_s`` bounds the whole call), refusal."""
        out = self.answerer.run(question=question, documents=self._documents(passages), timeout_s=timeout_s)
        # The edge's own stages share these names: prefix them on the cloud side.
        timings = {(f"cloud_{k}" if k in ("generate", "prefill", "decode") else k): v for k, v in out["timings"].items()}
        return CloudReply(out["answer"], out["confidence"], timings, out["bytes_up"], out["bytes_down"], out["usage"],
                          self.sent(question, passages), out["model"], out["p_answerable"], out["reading"])
