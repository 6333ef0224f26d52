"""The wire shapes shared by the edge-side client and the gateway — the only place they are defined.

A request is one HTTPS POST of an :class:`Envelope` (JSON) to :data:`ANSWER_PATH`; the sealed
plaintext inside is an :class:`AnswerRequest`, and a 200 reply is an envelope sealing an
:class:`AnswerReply`. A refusal is plain JSON ``{"error": {"reason", "message"}}`` that never
echoes anything of the request.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from cloud.errors import (
    BadPayloadError,
    CloudProtocolError,
    EnvelopeError,
    MalformedError,
)
from reading.passages import ANSWER_MODES, FULL, PassageReading, ReadPlan
from reading.prompts import MAX_QUESTION_CHARS, Passage

PROTOCOL_VERSION = 1
ANSWER_PATH = "/v1/answer"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"

NONCE_BYTES = 12  # 96-bit GCM nonce
TAG_BYTES = 16
DEFAULT_MAX_ENVELOPE_BYTES = 1 << 20  # 1 MiB: 3 SQuAD passages seal to ~2 KB (BENCHMARKS.md, bench-cloud)
DEFAULT_MAX_PLAINTEXT_BYTES = 4 << 20  # decompressed payload limit (a zstd bomb stops here)
DEFAULT_CLOCK_SKEW_S = 30.0

MAX_PASSAGES = 50
MAX_PASSAGE_CHARS = 100_000
MAX_TITLE_CHARS = 1000
MAX_ANSWER_TOKENS = 512
MAX_REDACTION_KINDS = 32
MAX_REDACTIONS = 100_000
_KIND = re.compile(r"[a-z][a-z_]{0,31}")

DIRECTION_REQUEST = "request"
DIRECTION_REPLY = "reply"

_KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_RID = re.compile(r"^[0-9a-f]{32}$")


def json_object(data: bytes, error: type[EnvelopeError], what: str, fix: str) -> dict[str, Any]:
    """``data`` parsed as a JSON object, else ``error`` in one line: "<what> is not JSON — <fix>"."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise error(f"{what} is not JSON — {fix}") from None
    if not isinstance(obj, dict):
        raise error(f"{what} is not a JSON object — {fix}")
    return obj


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedError(f"envelope field {name!r} must be a base64 string — send an envelope made by cloud.envelope.seal")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise MalformedError(f"envelope field {name!r} is not valid base64 — send an envelope made by cloud.envelope.seal") from None


@dataclass(frozen=True)
class Envelope:
    """An AES-256-GCM sealed message as it travels.

    ``kid`` names the key, ``rid`` is the request id (32 hex chars; a reply carries its
    request's), ``ts_ms`` the sender's Unix time in milliseconds, ``nonce`` 12 random bytes and
    ``ct`` the ciphertext with its 16-byte tag. ``kid``, ``rid``, ``ts_ms``, the direction and the
    edge identity are the associated data (see :func:`cloud.envelope.associated_data`).
    """

    kid: str
    rid: str
    ts_ms: int
    nonce: bytes = field(repr=False)
    ct: bytes = field(repr=False)
    v: int = PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        body = {"v": self.v, "kid": self.kid, "rid": self.rid, "ts": self.ts_ms, "nonce": _b64(self.nonce), "ct": _b64(self.ct)}
        return json.dumps(body, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse and validate an envelope.

        :raises MalformedError: not JSON, or a missing/ill-typed field (the message names the field, never its value).
        """
        obj = json_object(data, MalformedError, "the request body", "send an envelope made by cloud.envelope.seal")
        missing = [k for k in ("v", "kid", "rid", "ts", "nonce", "ct") if k not in obj]
        if missing:
            raise MalformedError(f"envelope fields missing: {', '.join(missing)} — send an envelope made by cloud.envelope.seal")
        if obj["v"] != PROTOCOL_VERSION or isinstance(obj["v"], bool):
            raise MalformedError(f"unsupported envelope version — this gateway speaks version {PROTOCOL_VERSION}; update the edge")
        if not isinstance(obj["kid"], str) or not _KID.match(obj["kid"]):
            raise MalformedError("envelope field 'kid' is not a key id — use the aes.key written by `ecqa cloud init`")
        if not isinstance(obj["rid"], str) or not _RID.match(obj["rid"]):
            raise MalformedError("envelope field 'rid' must be 32 lowercase hex characters")
        ts = obj["ts"]
        if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts < 1 << 53:
            raise MalformedError("envelope field 'ts' must be Unix time in milliseconds (an integer)")
        nonce = _unb64(obj["nonce"], "nonce")
        if len(nonce) != NONCE_BYTES:
            raise MalformedError(f"envelope field 'nonce' must be {NONCE_BYTES} bytes")
        ct = _unb64(obj["ct"], "ct")
        if len(ct) < TAG_BYTES:
            raise MalformedError("envelope field 'ct' is shorter than the GCM tag")
        return cls(kid=obj["kid"], rid=obj["rid"], ts_ms=ts, nonce=nonce, ct=ct)


def _str(obj: dict[str, Any], key: str, limit: int, *, allow_empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or (not allow_empty and not value.strip()) or len(value) > limit:
        raise BadPayloadError(f"payload field {key!r} must be a {'' if allow_empty else 'non-empty '}string of at most {limit} characters")
    return value


@dataclass(frozen=True)
class AnswerRequest:
    """What the edge asks: a question, its passages and generation parameters (of each passage only its title and
    text go up; the reply refers to passages by their order)."""

    question: str
    passages: tuple[Passage, ...]
    max_tokens: int = 24
    # kind -> values the edge replaced by placeholders before sealing (counts only, for the gateway's metrics)
    redactions: dict[str, int] = field(default_factory=dict)
    # how the cloud reads the passages: the plan its keep / drop models were fitted for (the edge's calibration);
    # every passage is read (the cloud has no retrieval scores), so only the answer mode and the check travel
    read: ReadPlan = FULL

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "question": self.question,
            "passages": [{"title": p.title, "text": p.text} for p in self.passages],
            "max_tokens": self.max_tokens,
        }
        if self.redactions:
            out["redactions"] = dict(self.redactions)
        if self.read != FULL:  # additive: a gateway from before read plans reads in full, as this field's absence says
            out["read"] = {"answer": self.read.answer, "verify": self.read.verify}
        return out

    @classmethod
    def from_dict(cls, obj: Any) -> AnswerRequest:
        """:raises BadPayloadError: a missing or ill-typed field (never quoting its value)."""
        if not isinstance(obj, dict):
            raise BadPayloadError("the sealed payload is not a JSON object — update the edge")
        question = _str(obj, "question", MAX_QUESTION_CHARS)
        raw = obj.get("passages")
        if not isinstance(raw, list) or len(raw) > MAX_PASSAGES:
            raise BadPayloadError(f"payload field 'passages' must be a list of at most {MAX_PASSAGES} passages")
        passages = []
        for p in raw:
            if not isinstance(p, dict):
                raise BadPayloadError("each passage must be an object with 'title' and 'text'")
            passages.append(Passage(title=_str(p, "title", MAX_TITLE_CHARS, allow_empty=True),
                                    text=_str(p, "text", MAX_PASSAGE_CHARS)))
        max_tokens = obj.get("max_tokens", 24)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= MAX_ANSWER_TOKENS:
            raise BadPayloadError(f"payload field 'max_tokens' must be an integer from 1 to {MAX_ANSWER_TOKENS}")
        redactions = obj.get("redactions", {})
        if (not isinstance(redactions, dict) or len(redactions) > MAX_REDACTION_KINDS
                or not all(isinstance(k, str) and _KIND.fullmatch(k) and isinstance(v, int) and not isinstance(v, bool)
                           and 0 <= v <= MAX_REDACTIONS for k, v in redactions.items())):
            raise BadPayloadError(f"payload field 'redactions' must map at most {MAX_REDACTION_KINDS} kinds (lower-case "
                                  f"names) to counts from 0 to {MAX_REDACTIONS}")
        read = obj.get("read", {"answer": "all", "verify": True})
        if (not isinstance(read, dict) or set(read) != {"answer", "verify"} or read["answer"] not in ANSWER_MODES
                or not isinstance(read["verify"], bool)):
            raise BadPayloadError(f"payload field 'read' must be an object with 'answer' (one of {', '.join(ANSWER_MODES)}) "
                                  "and 'verify' (true or false)")
        return cls(question=question, passages=tuple(passages), max_tokens=max_tokens, redactions=dict(redactions),
                   read=ReadPlan(read["answer"], read["verify"]))


@dataclass(frozen=True)
class AnswerReply:
    """What the cloud answers. ``answer`` is '' for "no answer in the passages";
    ``answer_spans[i]`` is the answer's ``[start, end)`` in passage ``i`` or ``None``; ``reading`` is
    every passage's signals (the edge's routing reads them with its own)."""

    answer: str
    confidence: float
    answer_spans: tuple[tuple[int, int] | None, ...]
    usage: dict[str, int]
    timings_ms: dict[str, float]
    model: str
    p_answerable: float  # the highest per-passage p(yes) to "is the answer stated in the passage?"
    reading: PassageReading

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "confidence": self.confidence,
            "p_answerable": self.p_answerable,
            "answer_spans": [list(s) if s else None for s in self.answer_spans],
            "usage": dict(self.usage),
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "model": self.model,
            "reading": self.reading.to_json(),
        }

    @classmethod
    def from_dict(cls, obj: Any) -> AnswerReply:
        """:raises CloudProtocolError: a reply that does not have the expected shape."""
        try:
            spans = tuple((int(s[0]), int(s[1])) if s else None for s in obj["answer_spans"])
            confidence = float(obj["confidence"])
            p_answerable = float(obj["p_answerable"])
            timings = {str(k): float(v) for k, v in obj["timings_ms"].items()}
            # Not finite: NaN or Infinity would reach the edge's --json output, which must stay JSON.
            if not (isinstance(obj["answer"], str) and math.isfinite(confidence) and 0.0 <= p_answerable <= 1.0
                    and all(math.isfinite(v) for v in timings.values())):
                raise ValueError("answer")
            return cls(
                answer=obj["answer"],
                confidence=confidence,
                answer_spans=spans,
                usage={str(k): int(v) for k, v in obj["usage"].items()},
                timings_ms=timings,
                model=str(obj["model"]),
                p_answerable=p_answerable,
                reading=PassageReading.from_json(obj["reading"]),
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError):
            raise CloudProtocolError(
                "the gateway's reply does not have the expected shape — run the same edgecloud-qa version on both sides"
            ) from None


def refusal_body(reason: str, message: str) -> bytes:
    """The JSON body of a refusal: a reason code and a fixed message, nothing of the request."""
    return json.dumps({"error": {"reason": reason, "message": message}}, separators=(",", ":")).encode()


def parse_refusal(body: bytes) -> tuple[str, str]:
    """``(reason, message)`` of a refusal body; ``("unknown", "")`` if it is not one."""
    try:
        err = json.loads(body)["error"]
        return str(err["reason"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        return "unknown", ""
