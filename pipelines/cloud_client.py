"""The cascade's view of the cloud tier: :class:`CloudAnswerer` behind the ``CloudClient`` protocol, with personal
data kept on the device (:mod:`edge.pii`): redacted before sealing, restored in the answer."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

from cloud.cloud_answerer import CloudAnswerer
from edge.pii import Redaction, Redactor, counts_line, noun, passthrough
from pipelines.cascade import CloudReply
from reading.passages import PassageReading
from reading.prompts import Passage


class AnswererClient:
    """Adapts a :class:`CloudAnswerer` (sealed HTTPS to the gateway) to the cascade.

    :param answerer: a configured cloud answerer (warmed up on first use).
    :param pii: "off", "redact" or "block" (see :class:`pipelines.settings.Settings`).
    :param redactor: what finds personal data (needed unless ``pii`` is "off").
    """

    def __init__(self, answerer: CloudAnswerer, pii: str = "off", redactor: Redactor | None = None) -> None:
        if pii != "off" and redactor is None:
            raise ValueError(f"pii {pii!r} needs a redactor")
        self.answerer = answerer
        self.pii = pii
        self.redactor = redactor
        self._last: tuple[str, tuple[Passage, ...], Redaction] | None = None
        self._lock = threading.Lock()

    def redaction(self, question: str, passages: Sequence[Passage]) -> Redaction:
        """What of ``question`` and ``passages`` may leave the device, and the map back (the last one is kept:
        the routing's size estimate and the call redact the same request once)."""
        if self.pii == "off" or self.redactor is None:
            return passthrough(question, passages)
        key = (question, tuple(passages))
        with self._lock:
            if self._last is not None and self._last[:2] == key:
                return self._last[2]
        red = self.redactor.redact(question, passages)
        with self._lock:
            self._last = (*key, red)
        return red

    def estimate_bytes_up(self, question: str, passages: Sequence[Passage]) -> int:
        red = self.redaction(question, passages)
        return int(self.answerer.sealed_size(red.question, red.passages, red.counts))

    def ask(self, question: str, passages: Sequence[Passage], timeout_s: float) -> CloudReply:
        """:raises PiiBlockedError: pii is "block" and the question carries personal data (nothing is sent).
        :raises CloudError: connection, TLS, timeout (``timeout_s`` bounds the whole call), refusal."""
        red = self.redaction(question, passages)
        if self.pii == "block":
            red.check_question()
        out = self.answerer.ask(red.question, red.passages, timeout_s=timeout_s, redactions=red.counts)
        reading = restore_reading(out["reading"], red)
        # The edge's own stages share these names: prefix them on the cloud side.
        timings = {(f"cloud_{k}" if k in ("generate", "prefill", "decode") else k): v for k, v in out["timings"].items()}
        if red.ms:  # preparing what is sealed: the redaction counts with the seal (stage seal_open)
            timings["redact"] = red.ms
            timings["seal"] = timings.get("seal", 0.0) + red.ms
        return CloudReply(reading.answer, out["confidence"], timings, out["bytes_up"], out["bytes_down"], out["usage"],
                          self.answerer.payload(red.question, red.passages, red.counts), out["model"],
                          out["p_answerable"], reading, red.counts,
                          red.restores(out["reading"].answer),
                          self.redactor.undetected if self.redactor is not None and self.pii != "off" else (), self.pii)


def restore_reading(reading: PassageReading, red: Redaction) -> PassageReading:
    """The cloud's reading with this request's placeholders put back in every answer and reply."""
    if not red.values:
        return reading
    return replace(reading, passages=tuple(replace(p, answer=red.restore(p.answer), reply=red.restore(p.reply))
                                          for p in reading.passages))


def privacy_line(redactions: dict[str, int], restored: bool, undetected: Sequence[str] = (), pii: str = "redact") -> str:
    """One line on what left the device: "2 names, 1 email removed · answer restored" (counts, never values)."""
    if pii == "off":
        return "sent as it is (pii is off: personal data was not looked for)"
    line = f"{counts_line(redactions)} removed" if redactions else "no personal data found"
    if restored:
        line += " · answer restored"
    if undetected:
        line += f" · {', '.join(noun(k) for k in undetected)} not looked for (no verified NER model)"
    return line
