"""CloudAnswerer: the edge-side client of the cloud gateway, as a Haystack component."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from haystack import Document, component

from cloud.certs import EdgeMaterial, load_edge_material
from cloud.envelope import new_request_id, now_ms, seal, unseal
from cloud.errors import (
    CloudConfigError,
    CloudConnectionError,
    CloudProtocolError,
    CloudRefusedError,
    CloudTimeoutError,
    CloudTLSError,
    EnvelopeError,
)
from cloud.prompting import fit_passages
from cloud.wire import (
    ANSWER_PATH,
    HEALTH_PATH,
    DIRECTION_REPLY,
    DIRECTION_REQUEST,
    MAX_TITLE_CHARS,
    AnswerReply,
    AnswerRequest,
    Envelope,
    parse_refusal,
)
from reading.passages import FULL, PassageReading, ReadPlan
from reading.prompts import PASSAGE_CHARS, Passage

logger = logging.getLogger(__name__)
# How long the connection to the gateway stays open between questions. httpx's default (5 s) closed it whenever the
# edge's own reading took longer (on a slow 2-core edge it takes 5-20 s), so an escalation paid a new TLS handshake
# (three round trips, 90 ms over wifi) instead of one; kept under the gateway's idle timeout (cloud.gateway's
# IDLE_TIMEOUT_S, 30 s), so a connection the gateway has closed is never the one reused.
KEEPALIVE_S = 25.0

RETRY_BACKOFF_S = 0.2


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error somewhere in ``exc``'s cause/context chain."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


@component
@dataclass(eq=False)
class CloudAnswerer:
    """Answers a question from passages with the cloud tier: seals the question and passages,
    POSTs them over mutual TLS to the gateway, and unseals the answer.

    Returns the edge answerer's shape (``answer`` '' = no answer, ``confidence``, ``passages``
    with ``answer_span``, ``timings``) plus ``usage``, ``bytes_up``/``bytes_down`` (sealed
    envelope bytes of request and reply: HTTP headers, ~150 B each way, and TLS framing
    excluded) and the cloud ``model``. Timings (ms): ``seal``,
    ``network`` (request time minus the gateway's own), ``cloud`` (gateway total), ``generate``
    (the backend call inside it), ``open``; plus ``prefill``/``decode`` when the backend reports them.

    :param url: the gateway's HTTPS URL (printed by `ecqa cloud serve`).
    :param cloud_dir: the directory `ecqa cloud init` wrote (CA, this edge's certificate, aes.key).
    :param edge: edge name ('' = the only edge certificate in ``cloud_dir``).
    :param connect_timeout_s: TCP + TLS connect timeout.
    :param read_timeout_s: time allowed for the gateway's reply.
    :param retries: extra attempts after a connection error (never after a sent request).
    :param passage_chars: characters of each passage sent up (the `passage_chars` setting).
    :param max_tokens: most tokens of the cloud answer.
    :param read_plan: how the gateway reads the passages (the plan the calibration's cloud models were fitted
        for; only its answer mode and check travel).
    :param max_prompt_chars: the most characters the gateway's prompt may have (see
        :func:`cloud.prompting.prompt_char_limit` of the backend's context): the last passages are cut
        or left out to fit, so that no request is refused as too long. None = no limit.
    """

    url: str
    cloud_dir: str
    edge: str = ""
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 30.0
    retries: int = 2
    passage_chars: int = PASSAGE_CHARS
    max_tokens: int = 24
    max_prompt_chars: int | None = None
    read_plan: ReadPlan = FULL
    _material: EdgeMaterial | None = field(default=None, init=False, repr=False)
    _client: httpx.Client | None = field(default=None, init=False, repr=False)

    def warm_up(self) -> None:
        """Load this edge's certificate and key and open the HTTPS client. Idempotent.

        :raises CloudConfigError: the URL is not https://HOST[:PORT].
        :raises MaterialError: the cloud directory lacks this edge's files.
        """
        if self._client is not None:
            return
        parts = urlsplit(self.url or "")
        if parts.scheme != "https" or not parts.hostname:
            raise CloudConfigError(
                f"cloud URL {self.url!r} is not an https:// URL — use the URL `ecqa cloud serve` prints, e.g. https://127.0.0.1:8443"
            )
        material = load_edge_material(Path(self.cloud_dir), self.edge)
        ctx = material.ssl_context()
        timeout = httpx.Timeout(connect=self.connect_timeout_s, read=self.read_timeout_s, write=self.read_timeout_s, pool=self.connect_timeout_s)
        # trust_env=False: no proxy or CA bundle from the environment may stand between edge and gateway.
        self._client = httpx.Client(base_url=self.url.rstrip("/"), verify=ctx, timeout=timeout, trust_env=False,
                                    limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S))
        self._material = material
        logger.info("cloud client for edge %r -> %s (key id %s)", material.name, self.url, material.aes.kid)

    @property
    def edge_name(self) -> str:
        self.warm_up()
        assert self._material is not None
        return self._material.name

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def health(self, timeout_s: float = 3.0) -> dict[str, Any]:
        """The gateway's /healthz over the same mutual TLS: liveness and what an answer costs there.

        :raises CloudConnectionError: unreachable, a refusal, or not the JSON object a gateway sends.
        """
        self.warm_up()
        assert self._client is not None
        try:
            resp = self._client.get(HEALTH_PATH, timeout=timeout_s)
            body = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            raise CloudConnectionError(f"cannot read {self.url}{HEALTH_PATH} ({type(exc).__name__}) — "
                                       "check the gateway") from None
        if not isinstance(body, dict):
            raise CloudConnectionError(f"{self.url}{HEALTH_PATH} answered {resp.status_code} without its JSON — "
                                       "is it a gateway?")
        return body

    def _timeout(self, deadline: float | None) -> httpx.Timeout:
        """The configured timeouts, shortened to what is left before ``deadline`` (monotonic s).

        :raises CloudTimeoutError: nothing is left.
        """
        connect, read = self.connect_timeout_s, self.read_timeout_s
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0.001:
                raise CloudTimeoutError("the cloud call ran out of its time budget — raise the budget or check the gateway")
            connect, read = min(connect, left), min(read, left)
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)

    def _post(self, request: AnswerRequest, deadline: float | None) -> tuple[httpx.Response, Envelope, float, float, int]:
        """Seal and POST, retrying only connection errors (re-sealed: new nonce and timestamp).

        :returns: the response, the envelope sent, seal time and request time (ms), envelope bytes sent.
        """
        assert self._client is not None and self._material is not None
        mat = self._material
        payload = request.to_dict()
        last: Exception | None = None
        seal_ms = 0.0
        for attempt in range(self.retries + 1):
            timeout = self._timeout(deadline)
            t0 = time.perf_counter()
            env = seal(payload, mat.aes, rid=new_request_id(), edge=mat.name, direction=DIRECTION_REQUEST, ts_ms=now_ms())
            body = env.to_bytes()
            seal_ms = (time.perf_counter() - t0) * 1000.0
            req = self._client.build_request(
                "POST", ANSWER_PATH, content=body, headers={"Content-Type": "application/json"}, timeout=timeout
            )
            t1 = time.perf_counter()
            try:
                resp = self._client.send(req)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                cause = _ssl_cause(exc)
                if isinstance(cause, ssl.SSLCertVerificationError):
                    raise CloudTLSError(
                        f"the gateway at {self.url} is not trusted ({cause.verify_message}) — its certificate must be signed by "
                        f"{mat.ca_cert} and name the URL's host (`ecqa cloud init --host HOST`)"
                    ) from None
                last = exc
                logger.info("cloud connect attempt %d/%d failed: %s", attempt + 1, self.retries + 1, type(exc).__name__)
                if attempt < self.retries:
                    pause = RETRY_BACKOFF_S * 2**attempt
                    time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
                continue
            except httpx.TimeoutException:
                waited = round(timeout.read or 0.0, 2)
                if deadline is not None and (timeout.read or 0.0) < self.read_timeout_s:
                    # The caller's budget, not the read timeout, ended the wait: say so, or the gateway is blamed
                    # for time spent before the call.
                    raise CloudTimeoutError(
                        f"the gateway did not answer within the {waited:g} s left of the question's time budget (the rest "
                        "was spent before the call) — raise the budget (--budget-ms, ECQA_BUDGET_MS)"
                    ) from None
                raise CloudTimeoutError(
                    f"the gateway did not answer within {waited:g} s — "
                    "raise ECQA_CLOUD_READ_TIMEOUT_S or check the gateway's backend"
                ) from None
            except httpx.TransportError as exc:
                cause = _ssl_cause(exc)
                if cause is not None:
                    raise CloudTLSError(
                        f"the gateway refused edge {mat.name!r}'s certificate ({getattr(cause, 'reason', None) or cause}) — use the "
                        f"edges/{mat.name}.pem made by the gateway's `ecqa cloud init`"
                    ) from None
                raise CloudConnectionError(
                    f"the connection to {self.url} broke during the request ({type(exc).__name__}) — check the gateway and the network; "
                    "the request is not retried because it may have been received"
                ) from None
            send_ms = (time.perf_counter() - t1) * 1000.0
            return resp, env, seal_ms, send_ms, len(body)
        raise CloudConnectionError(
            f"cannot connect to the cloud gateway at {self.url} after {self.retries + 1} attempts ({type(last).__name__}) — "
            "start it with `ecqa cloud serve` or fix ECQA_CLOUD_URL"
        )

    def _request(self, question: str, passages: Sequence[Passage],
                 redactions: dict[str, int] | None = None) -> AnswerRequest:
        up = tuple(replace(p, title=p.title[:MAX_TITLE_CHARS]).cut(self.passage_chars) for p in passages)
        if self.max_prompt_chars is not None:
            up = fit_passages(question, up, self.max_prompt_chars)
        return AnswerRequest(question=question, passages=up, max_tokens=self.max_tokens, redactions=dict(redactions or {}),
                             read=self.read_plan)

    def payload(self, question: str, passages: Sequence[Passage], redactions: dict[str, int] | None = None) -> dict[str, Any]:
        """Exactly what :meth:`ask` seals and sends for ``question`` (passages cut to fit), as JSON.

        :param redactions: kind -> values the edge replaced by placeholders (counts only, for the gateway's metrics).
        """
        return self._request(question, passages, redactions).to_dict()

    def sealed_size(self, question: str, passages: Sequence[Passage], redactions: dict[str, int] | None = None) -> int:
        """Bytes of the request envelope :meth:`run` would send (exact: only the key and the
        random nonce differ between seals, and neither changes the length). Needs no gateway."""
        self.warm_up()
        assert self._material is not None
        mat = self._material
        env = seal(self._request(question, passages, redactions).to_dict(), mat.aes, rid=new_request_id(), edge=mat.name,
                   direction=DIRECTION_REQUEST, ts_ms=now_ms())
        return len(env.to_bytes())

    @component.output_types(
        answer=str,
        confidence=float,
        p_answerable=float,
        passages=list[dict[str, Any]],
        usage=dict[str, int],
        timings=dict[str, float],
        bytes_up=int,
        bytes_down=int,
        model=str,
        reading=PassageReading,
    )
    def run(self, question: str, documents: list[Document], timeout_s: float | None = None) -> dict[str, Any]:
        """Ask the cloud about retrieved documents (the component's entry point; :meth:`ask` takes passages).

        :param timeout_s: bound on the whole call, retries included (the cascade's time budget);
            default: the connect/read timeouts per attempt.
        :raises CloudError: a subclass saying what failed (connection, TLS, timeout, refusal, reply).
        """
        return self.ask(question, [Passage.from_document(d) for d in documents], timeout_s)

    def ask(self, question: str, passages: Sequence[Passage], timeout_s: float | None = None,
            redactions: dict[str, int] | None = None) -> dict[str, Any]:
        """Ask the cloud about ``passages``; returns what :meth:`run` returns.

        :param redactions: kind -> values the caller replaced by placeholders (counts only, for the gateway's metrics).

        :raises CloudError: a subclass saying what failed (connection, TLS, timeout, refusal, reply).
        """
        self.warm_up()
        assert self._material is not None
        mat = self._material
        request = self._request(question, passages, redactions)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        resp, env, seal_ms, request_ms, up = self._post(request, deadline)
        down = len(resp.content)
        if resp.status_code != 200:
            reason, message = parse_refusal(resp.content)
            raise CloudRefusedError(
                f"the cloud gateway refused the request ({reason}): {message or f'HTTP {resp.status_code}'}", reason, resp.status_code
            )
        t1 = time.perf_counter()
        try:
            reply_env = Envelope.from_bytes(resp.content)
            if reply_env.rid != env.rid:
                raise CloudProtocolError("the gateway's reply belongs to another request — check that nothing rewrites traffic to the gateway")
            reply = AnswerReply.from_dict(unseal(reply_env, mat.aes, edge=mat.name, direction=DIRECTION_REPLY))
        except EnvelopeError as exc:
            raise CloudProtocolError(f"the gateway's reply does not open ({exc.reason}) — check that edge and gateway share aes.key") from None
        open_ms = (time.perf_counter() - t1) * 1000.0
        cloud_ms = reply.timings_ms.get("total", 0.0)
        spans = [reply.answer_spans[i] if i < len(reply.answer_spans) else None for i in range(len(passages))]
        return {
            "answer": reply.answer,
            "confidence": reply.confidence,
            "p_answerable": reply.p_answerable,
            "passages": [p.to_json(span) for p, span in zip(passages, spans, strict=True)],
            "usage": reply.usage,
            "timings": {
                "seal": seal_ms,
                "network": max(request_ms - cloud_ms, 0.0),
                "cloud": cloud_ms,
                "generate": reply.timings_ms.get("backend", 0.0),
                "open": open_ms,
                # the backend's own split of "generate", when it reports one (llama.cpp-style servers)
                **{k: reply.timings_ms[k] for k in ("prefill", "decode") if k in reply.timings_ms},
            },
            "bytes_up": up,
            "bytes_down": down,
            "model": reply.model,
            "reading": reply.reading,
        }

