"""Errors of the cloud tier. Messages say what went wrong and how to fix it.

Exception tree::

    CloudError
     ├── MaterialError            cloud init material missing, incomplete or not to be overwritten
     ├── CloudModelError          the cloud GGUF model cannot be assembled or loaded
     ├── BackendError             the OpenAI-compatible backend failed or cannot be reached
     │    └── BackendContextError     the backend refused a prompt over its context window (``prompt_tokens``, ``context_tokens``)
     ├── GatewayStartError        `cloud serve` cannot listen (port in use, bad host)
     ├── EnvelopeError            an envelope the gateway refuses (``reason``, ``status``); no backend call
     │    ├── TooLargeError           over the size limit (envelope or decompressed payload)  413
     │    ├── MalformedError          not JSON / not an envelope                              400
     │    ├── UnknownKeyError         key id not in the gateway's keyring                     401
     │    ├── StaleTimestampError     timestamp outside the ±skew window                      401
     │    ├── SealError               ciphertext, tag or associated data does not authenticate 401
     │    ├── ReplayError             nonce already seen                                      409
     │    ├── BadPayloadError         authenticated, but the plaintext is not a valid request 400
     │    └── PromptTooLongError      question + passages do not fit the backend's context    413
     └── ClientError              edge side (CloudAnswerer)
          ├── CloudConfigError        no gateway URL / no cloud directory configured
          ├── CloudConnectionError    cannot connect (after retries)
          ├── CloudTimeoutError       no reply within the read timeout (not retried)
          ├── CloudTLSError           server not trusted, or the gateway refused this edge's certificate
          ├── CloudRefusedError       the gateway answered with a refusal (``reason``)
          └── CloudProtocolError      a reply that does not unseal or does not parse

AES-GCM cannot tell a tampered ciphertext from tampered associated data (both fail the one
tag check), and saying which would only help an attacker: both are :class:`SealError`.
"""

from __future__ import annotations


class CloudError(Exception):
    """Base of errors raised in cloud/."""


class MaterialError(CloudError):
    """Certificates/keys written by `ecqa cloud init` are missing, invalid or protected."""


class CloudModelError(CloudError):
    """The cloud model file cannot be assembled or loaded."""


class BackendError(CloudError):
    """The OpenAI-compatible backend cannot be reached or answered with an error."""


class BackendContextError(BackendError):
    """The backend refused the prompt as longer than its context window.

    :param prompt_tokens: the prompt's tokens as the backend counted them (0 if it did not say).
    :param context_tokens: the backend's context window (0 if it did not say).
    """

    def __init__(self, message: str, prompt_tokens: int = 0, context_tokens: int = 0) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.context_tokens = context_tokens


class GatewayStartError(CloudError):
    """The gateway cannot start listening."""


class EnvelopeError(CloudError):
    """A request envelope the gateway refuses before any backend call.

    ``reason`` is the stable machine-readable code (also the metrics label), ``status`` the
    HTTP status. Messages never contain request content.
    """

    reason = "refused"
    status = 400


class TooLargeError(EnvelopeError):
    reason = "too_large"
    status = 413


class MalformedError(EnvelopeError):
    reason = "malformed"
    status = 400


class UnknownKeyError(EnvelopeError):
    reason = "unknown_key"
    status = 401


class StaleTimestampError(EnvelopeError):
    reason = "stale_timestamp"
    status = 401


class SealError(EnvelopeError):
    reason = "bad_seal"
    status = 401


class ReplayError(EnvelopeError):
    reason = "replay"
    status = 409


class BadPayloadError(EnvelopeError):
    reason = "bad_payload"
    status = 400


class PromptTooLongError(EnvelopeError):
    """A valid request whose prompt does not fit the backend's context (the message says how much fits)."""

    reason = "prompt_too_long"
    status = 413


REFUSAL_ERRORS: tuple[type[EnvelopeError], ...] = (
    TooLargeError,
    MalformedError,
    UnknownKeyError,
    StaleTimestampError,
    SealError,
    ReplayError,
    BadPayloadError,
    PromptTooLongError,
)


class ClientError(CloudError):
    """Edge-side failure of a cloud call."""


class CloudConfigError(ClientError):
    """The edge is not configured for the cloud tier."""


class CloudConnectionError(ClientError):
    """The gateway cannot be reached."""


class CloudTimeoutError(ClientError):
    """The gateway did not reply in time."""


class CloudTLSError(ClientError):
    """TLS failed: the server is not trusted or this edge's certificate was refused."""


class CloudRefusedError(ClientError):
    """The gateway refused the request; ``reason`` is its code (e.g. ``replay``)."""

    def __init__(self, message: str, reason: str, status: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class CloudProtocolError(ClientError):
    """The gateway's reply cannot be opened or parsed."""
