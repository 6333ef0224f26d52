"""Sealing and opening envelopes: JSON -> zstd -> AES-256-GCM, pure functions.

The associated data binds the direction, key id, request id, edge identity and timestamp, so
an envelope cannot be replayed as a reply, moved to another request, presented by another edge
(whose identity the gateway takes from its client certificate) or re-dated. The nonce is 96
random bits per message; the gateway remembers nonces for the timestamp window (replay check).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from typing import Any, NoReturn

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloud.errors import BadPayloadError, SealError, StaleTimestampError, TooLargeError
from cloud.wire import DEFAULT_MAX_PLAINTEXT_BYTES, NONCE_BYTES, PROTOCOL_VERSION, Envelope, json_object

KEY_BYTES = 32  # AES-256
# zstd level 3 (the library default): level 19 saves <3% more on SQuAD payloads for ~10x the
# time (BENCHMARKS.md, bench-cloud "zstd ratio").
ZSTD_LEVEL = 3
REDACTED = "**********"


class AesKey:
    """A 256-bit AES key and its id. ``repr``/``str`` never show the key; it cannot be pickled.

    :param kid: key id, sent in clear in every envelope.
    :param key: 32 random bytes.
    """

    __slots__ = ("kid", "_key")

    def __init__(self, kid: str, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"an AES-256 key has {KEY_BYTES} bytes, not {len(key)}")
        self.kid = kid
        self._key = bytes(key)

    @classmethod
    def generate(cls, kid: str | None = None) -> AesKey:
        return cls(kid or f"k-{secrets.token_hex(6)}", secrets.token_bytes(KEY_BYTES))

    def secret_bytes(self) -> bytes:
        """The raw key: only for the AEAD and for writing the key file."""
        return self._key

    def __repr__(self) -> str:
        return f"AesKey(kid={self.kid!r}, key={REDACTED!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AesKey) and other.kid == self.kid and secrets.compare_digest(other._key, self._key)

    def __hash__(self) -> int:
        return hash(self.kid)

    def __reduce__(self) -> NoReturn:
        raise TypeError("AesKey is not serializable — read it from the key file where it is needed")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_request_id() -> str:
    return secrets.token_hex(16)


def associated_data(direction: str, kid: str, rid: str, edge: str, ts_ms: int) -> bytes:
    """Canonical associated data; a JSON array so no field can bleed into another."""
    return json.dumps(["ecqa-envelope", PROTOCOL_VERSION, direction, kid, rid, edge, ts_ms], separators=(",", ":")).encode()


def pack(payload: dict[str, Any], level: int = ZSTD_LEVEL) -> bytes:
    """Compact JSON, zstd-compressed (the frame records its size, checked by :func:`unpack`)."""
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)


def unpack(blob: bytes, max_bytes: int = DEFAULT_MAX_PLAINTEXT_BYTES) -> dict[str, Any]:
    """Inverse of :func:`pack`, refusing more than ``max_bytes`` of plaintext before allocating it.

    :raises TooLargeError: the payload decompresses to more than ``max_bytes``.
    :raises BadPayloadError: not a zstd frame of a JSON object.
    """
    try:
        size = zstandard.frame_content_size(blob)
    except zstandard.ZstdError:
        raise BadPayloadError("the sealed payload is not a zstd frame — update the edge") from None
    # A frame that declares its size is decompressed into a buffer of that size regardless of
    # max_output_size (zstandard 0.25), so check the declared size first.
    if size > max_bytes:
        raise TooLargeError(f"the payload decompresses to more than {max_bytes} bytes — send fewer or shorter passages")
    try:
        raw = zstandard.ZstdDecompressor().decompress(blob, max_output_size=max_bytes)
    except zstandard.ZstdError:
        if size < 0:
            raise TooLargeError(f"the payload decompresses to more than {max_bytes} bytes — send fewer or shorter passages") from None
        raise BadPayloadError("the sealed payload is not a valid zstd frame — update the edge") from None
    return json_object(raw, BadPayloadError, "the sealed payload", "update the edge")


def seal(
    payload: dict[str, Any],
    key: AesKey,
    *,
    rid: str,
    edge: str,
    direction: str,
    ts_ms: int,
    nonce: bytes | None = None,
) -> Envelope:
    """Compress and encrypt ``payload`` for ``edge``.

    :param nonce: only for tests; by default 12 fresh random bytes.
    """
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"the nonce must have {NONCE_BYTES} bytes")
    aad = associated_data(direction, key.kid, rid, edge, ts_ms)
    ct = AESGCM(key.secret_bytes()).encrypt(nonce, pack(payload), aad)
    return Envelope(kid=key.kid, rid=rid, ts_ms=ts_ms, nonce=nonce, ct=ct)


def unseal(
    envelope: Envelope,
    key: AesKey,
    *,
    edge: str,
    direction: str,
    max_plaintext_bytes: int = DEFAULT_MAX_PLAINTEXT_BYTES,
) -> dict[str, Any]:
    """Authenticate, decrypt and decompress ``envelope`` (the inverse of :func:`seal`).

    :raises SealError: the ciphertext, tag or any associated field (including ``edge`` and ``direction``) was altered.
    :raises TooLargeError: / :raises BadPayloadError: see :func:`unpack`.
    """
    if envelope.kid != key.kid:
        raise SealError("the envelope's key id does not match the key — use the aes.key written by `ecqa cloud init`")
    aad = associated_data(direction, envelope.kid, envelope.rid, edge, envelope.ts_ms)
    try:
        blob = AESGCM(key.secret_bytes()).decrypt(envelope.nonce, envelope.ct, aad)
    except InvalidTag:
        raise SealError(
            "the envelope does not authenticate (ciphertext, request id, timestamp or edge identity altered, "
            "or sealed with another key) — re-send it sealed by this edge with the current aes.key"
        ) from None
    return unpack(blob, max_plaintext_bytes)


def check_timestamp(ts_ms: int, now: int, skew_s: float) -> None:
    """:raises StaleTimestampError: ``ts_ms`` is more than ``skew_s`` seconds from ``now`` (ms)."""
    if abs(now - ts_ms) > skew_s * 1000.0:
        raise StaleTimestampError(
            f"the envelope's timestamp is more than {skew_s:g} s from the gateway's clock — sync the edge's clock (NTP) and re-send"
        )
