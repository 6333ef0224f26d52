"""The cloud gateway: an HTTPS server (TLS 1.3 only, mutual TLS) that opens AES-GCM envelopes,
asks the LLM backend and seals the reply.

Checks, in order, each refusing with its own reason and **before any backend call**::

    TLS handshake     no client certificate / one not signed by the CA / not TLS 1.3
                      (or not finished within HANDSHAKE_TIMEOUT_S)
    connections       over MAX_CONNECTIONS open (or requests in flight): answered at once, unread   503 busy
    size              Content-Length over the limit (the body is not even read)     413 too_large
                      no Content-Length, or a chunked body                            411 malformed
    body              stalled for IDLE_TIMEOUT_S before it was whole (then closed)   408 timeout
    envelope JSON     not JSON / fields missing or ill-typed                          400 malformed
    key id            not in the keyring                                              401 unknown_key
    timestamp         outside ±clock_skew_s of the gateway clock                      401 stale_timestamp
    AES-GCM tag       ciphertext or associated data (request id, timestamp, key id,
                      direction, edge identity from the client certificate) altered   401 bad_seal
    nonce             seen before within the window, by this process or (the window is
                      kept in <cloud dir>/replay-window.log) the one before a restart   409 replay
    payload           decompresses over the limit / not a valid request        413 too_large / 400 bad_payload
    prompt size       over what the backend's context holds (when known)              413 prompt_too_long
                      (a backend that still finds it too long: also 413 prompt_too_long, not 502)

The server is uvicorn (h11) serving a Starlette app (:mod:`reading.http_server`, the stack the edge workers serve
with too): requests are parsed and checked on its event loop, each answer runs in a thread (BACKEND_THREADS at
most); a connection that sends nothing for IDLE_TIMEOUT_S is closed.

Logs carry request ids, edge names, reasons and timings — never questions, passages, answers,
keys or ciphertext; refusal bodies are fixed texts that never echo the request.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cloud.backend import Backend
from cloud.certs import ServerMaterial, peer_identity
from cloud.envelope import AesKey, check_timestamp, now_ms, seal, unseal
from cloud.errors import (
    REFUSAL_ERRORS,
    BackendContextError,
    BackendError,
    EnvelopeError,
    GatewayStartError,
    PromptTooLongError,
    TooLargeError,
    UnknownKeyError,
)
from cloud.metrics import CONTENT_TYPE, GatewayMetrics
from cloud.prompting import prompt_char_limit, prompt_chars, read_with
from cloud.replay_window import REPLAY_FILE, ReplayCache
from cloud.wire import (
    ANSWER_PATH,
    DEFAULT_CLOCK_SKEW_S,
    DEFAULT_MAX_ENVELOPE_BYTES,
    DEFAULT_MAX_PLAINTEXT_BYTES,
    DIRECTION_REPLY,
    DIRECTION_REQUEST,
    HEALTH_PATH,
    METRICS_PATH,
    AnswerReply,
    AnswerRequest,
    Envelope,
    refusal_body,
)
from reading.http_server import LISTEN_BACKLOG, BodyRefused, HttpServer, read_body
from reading.passages import ReadPlan
from reading.prompts import Passage
from reading.text import find_span, reply_confidence

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
# Seconds a connection may send nothing (before its request, mid-headers, mid-body, or idle kept alive): then it is
# closed (a stalled body with a 408), so a slow or stalled client cannot hold the gateway.
IDLE_TIMEOUT_S = 30.0
# Open connections (or requests in flight) beyond which a request is answered 503 "busy" at once, unread: bounds the
# envelopes in transit to MAX_CONNECTIONS x max_envelope_bytes. The listen backlog (reading.http_server's
# LISTEN_BACKLOG, 1024) holds the connections beyond them while the server accepts, so a burst gets replies, not resets.
MAX_CONNECTIONS = 256
# Answers at once in threads (each waits on the backend most of its time; the backend serialises them anyway).
BACKEND_THREADS = 32
SERVER_NAME = "ecqa-gateway"
# Reasons a connection is refused at the TLS layer, and by the HTTP server (metrics labels).
TLS_REASONS = ("no_client_cert", "untrusted_client_cert", "tls_handshake")
HTTP_REASONS = ("timeout", "busy")
_MALFORMED = "the HTTP request is malformed — use an HTTP/1.1 client such as httpx"
_KNOWN_PATHS = (ANSWER_PATH, HEALTH_PATH, METRICS_PATH)  # metrics labels; anything else is "other"
_SSL_REASON = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no_client_cert",
    "CERTIFICATE_VERIFY_FAILED": "untrusted_client_cert",
    "TLSV1_ALERT_UNKNOWN_CA": "untrusted_client_cert",
}


# The made-up question a gateway answers at start-up to measure itself (:meth:`GatewayService.measure`): three
# passages of a typical SQuAD paragraph's length (~700 characters), read by the cloud read plan `make calibrate`
# chooses by default.
SAMPLE_QUESTION = "In what year did the Kelvane survey first map the northern glacier?"
_SAMPLE_TEXT = ("The Kelvane survey of {n} was the first systematic mapping of the northern glacier and its valleys. "
                "Teams of surveyors, guides and porters spent three summers measuring the ice margin, the moraines and "
                "the meltwater channels that feed the Tarrow River. Their maps, drawn at a scale of one to fifty "
                "thousand, recorded crevasse fields, seasonal lakes and the routes used by herders moving between "
                "summer pastures. The survey's reports also described the villages below the ice, their harbours and "
                "salt works, and the roads that linked them to the capital. Later expeditions compared their own "
                "measurements with the survey's to estimate how far the glacier had retreated in each decade since.")
SAMPLE_PASSAGES = tuple(Passage(f"Kelvane survey {i}", _SAMPLE_TEXT.format(n=1890 + 7 * i)) for i in range(3))
MEASURE_PLAN = ReadPlan("best", verify=True)
ANSWER_MS_ALPHA = 0.2  # weight of a new answer in the advertised recent answer time


@dataclasses.dataclass(eq=False)
class GatewayService:
    """The gateway's logic without sockets: envelope bytes + edge identity -> status + body.

    :param keyring: key id -> AES key.
    :param backend: the LLM backend (started by the caller).
    :param max_envelope_bytes: largest request body accepted.
    :param max_plaintext_bytes: largest decompressed payload accepted.
    :param clock_skew_s: accepted distance between envelope timestamps and the gateway clock.
    :param max_tokens: cap on the generation length an edge may ask for.
    :param clock: Unix time in ms (tests may shift it).
    :param replay_file: where the replay window outlives the process (None: memory only).
    """

    keyring: dict[str, AesKey] = dataclasses.field(repr=False)
    backend: Backend
    max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES
    max_plaintext_bytes: int = DEFAULT_MAX_PLAINTEXT_BYTES
    clock_skew_s: float = DEFAULT_CLOCK_SKEW_S
    max_tokens: int = 64
    clock: Callable[[], int] = now_ms
    replay_file: dataclasses.InitVar[Path | None] = None

    def __post_init__(self, replay_file: Path | None) -> None:
        self.replays = ReplayCache(self.clock_skew_s, path=replay_file)
        self.metrics = GatewayMetrics([*TLS_REASONS, *HTTP_REASONS, *(e.reason for e in REFUSAL_ERRORS)])
        self.started = time.time()
        # What an answer costs here, advertised in /healthz so that an edge's latency model knows this cloud from
        # its first question: one measured at start-up (:meth:`measure`), then the answers served (EWMA).
        self.measured_ms: float | None = None
        self.measured_warm_ms: float | None = None  # the same answer again, its passages' states kept
        self.measured_chars = 0  # the characters of the measured answer's passages
        self.measured_decode: tuple[float, int] | None = None  # the warm answer's decoding: ms, tokens
        self.recent_ms: float | None = None
        self.answers = 0
        self._times = threading.Lock()

    def measure(self) -> float:
        """Answer one made-up question over :data:`SAMPLE_PASSAGES` (their states not cached yet, as an edge's
        first passages are not) by the default cloud read plan, then the same question again (their states
        kept now, as for passages an edge sent before). Keeps both times (ms) and the passages' characters:
        what an answer costs here, and what a passage the backend has not read adds to it.

        :returns: the first (cold) answer's time.
        :raises BackendError: the backend failed.
        """
        # Titles no edge sends, new at every start: the backend has no state of these passages yet.
        fresh = tuple(dataclasses.replace(p, title=f"{p.title} ({os.urandom(4).hex()})") for p in SAMPLE_PASSAGES)
        request = AnswerRequest(SAMPLE_QUESTION, fresh, 24, read=MEASURE_PLAN)
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            reply = self.answer(request)
            times.append((time.perf_counter() - t0) * 1000.0)
        self.measured_ms, self.measured_warm_ms = times
        self.measured_chars = sum(len(p.text) for p in fresh)
        # The warm answer's decoding (when the backend reports it): its reply is longer than most, so the edge
        # takes it out of the fixed cost and counts its own expected reply at this rate.
        decode = reply.timings_ms.get("decode")
        tokens = int(reply.usage.get("completion_tokens", 0))
        self.measured_decode = (round(decode, 1), tokens) if decode is not None and tokens > 0 else None
        logger.info("one answer over %d fresh passages took %.0f ms here, %.0f ms once they were read",
                    len(SAMPLE_PASSAGES), self.measured_ms, self.measured_warm_ms)
        return self.measured_ms

    def _answered(self, ms: float) -> None:
        with self._times:
            self.recent_ms = ms if self.recent_ms is None else ANSWER_MS_ALPHA * ms + (1 - ANSWER_MS_ALPHA) * self.recent_ms
            self.answers += 1

    def open_request(self, body: bytes, edge: str) -> tuple[Envelope, AesKey, AnswerRequest, float]:
        """Every check before the backend call; returns the envelope, its key, the request and the open time (ms).

        :raises EnvelopeError: the first check that fails.
        """
        t0 = time.perf_counter()
        if len(body) > self.max_envelope_bytes:
            raise TooLargeError(f"the envelope is over {self.max_envelope_bytes} bytes — send fewer or shorter passages")
        env = Envelope.from_bytes(body)
        key = self.keyring.get(env.kid)
        if key is None:
            raise UnknownKeyError("the envelope's key id is unknown to this gateway — copy the gateway's aes.key to the edge")
        now = self.clock()
        check_timestamp(env.ts_ms, now, self.clock_skew_s)
        payload = unseal(env, key, edge=edge, direction=DIRECTION_REQUEST, max_plaintext_bytes=self.max_plaintext_bytes)
        # Only after authentication: an attacker without the key cannot fill the nonce cache.
        self.replays.check_and_add(env.kid, env.nonce, env.ts_ms, now)
        request = AnswerRequest.from_dict(payload)
        self.metrics.redactions(request.redactions)
        self._check_fits(request)
        return env, key, request, (time.perf_counter() - t0) * 1000.0

    def _check_fits(self, request: AnswerRequest) -> None:
        """:raises PromptTooLongError: the prompt cannot fit the backend's context window (when it is known)."""
        ctx = getattr(self.backend, "context_tokens", None)
        if not isinstance(ctx, int) or isinstance(ctx, bool) or ctx <= 0:
            return
        max_tokens = min(request.max_tokens, self.max_tokens)
        limit = prompt_char_limit(ctx, max_tokens)
        size = prompt_chars(request.question, request.passages)
        if size > limit:
            room = max(0, limit - prompt_chars("", ()))
            raise PromptTooLongError(
                f"the prompt would have {size} characters, over the {limit} that the backend's {ctx}-token context "
                f"holds with {max_tokens} tokens for the answer — send fewer or shorter passages (about {room} "
                f"characters of question and passages fit; an edge with ECQA_CLOUD_N_CTX={ctx} trims them to that)"
            )

    def answer(self, request: AnswerRequest) -> AnswerReply:
        """Read each passage on its own, as the edge does (:func:`reading.passages.read_each`): per
        passage a yes/no probe and an answer (or, as the request's read plan says, an answer of the best
        passage only), then a check of the answer of the best passage — each a completion request sharing
        the passage's prefix (one prefill with a prefix-caching backend).

        :raises BackendError: the backend failed.
        """
        t0 = time.perf_counter()
        passages = request.passages
        max_tokens = min(request.max_tokens, self.max_tokens)
        backend = self.backend
        t1 = time.perf_counter()
        try:
            reading, steps = read_with(backend, request.question, passages, max_tokens, request.read)
        except BackendError as exc:
            # A prompt over the context is the request's fault, not the backend's: no backend error.
            self.metrics.backend(time.perf_counter() - t1, ok=isinstance(exc, BackendContextError))
            raise
        t2 = time.perf_counter()
        self.metrics.backend(t2 - t1, ok=True)
        answer = reading.answer
        spans = tuple(find_span(answer, p.text) if answer else None for p in request.passages)
        confidence = reply_confidence(reading.token_logprobs, any(spans), bool(answer))
        t3 = time.perf_counter()
        timings = {"prompt": (t1 - t0) * 1000.0, "backend": (t2 - t1) * 1000.0, "parse": (t3 - t2) * 1000.0}
        if steps and all(c.timings_ms for c in steps):
            timings["prefill"] = sum(c.timings_ms["prefill"] for c in steps)
            timings["decode"] = sum(c.timings_ms["decode"] for c in steps)
        return AnswerReply(
            answer=answer,
            confidence=confidence,
            answer_spans=spans,
            # prompt_tokens: what the backend prefilled; the rest of every request's prompt it found cached
            usage={"prompt_tokens": sum(c.prompt_tokens - c.cached_prompt_tokens for c in steps),
                   "cached_prompt_tokens": sum(c.cached_prompt_tokens for c in steps),
                   "completion_tokens": sum(c.completion_tokens for c in steps),
                   "requests": len(steps)},
            timings_ms=timings,
            model=steps[-1].model if steps else backend.name,  # the served model's own id
            p_answerable=round(reading.p_answerable, 6),
            reading=reading,
        )

    def handle_answer(self, body: bytes, edge: str) -> tuple[int, bytes]:
        """One POST to the answer endpoint: ``(status, body)``; refusals are counted by reason."""
        t0 = time.perf_counter()
        try:
            env, key, request, open_ms = self.open_request(body, edge)
        except EnvelopeError as exc:
            self.metrics.refusal(exc.reason)
            logger.warning("refused request from edge %r: %s", edge, exc.reason)
            return exc.status, refusal_body(exc.reason, str(exc))
        try:
            reply = self.answer(request)
        except BackendContextError as exc:  # a backend that counts more tokens than the pre-check expected
            self.metrics.refusal(PromptTooLongError.reason)
            logger.warning("refused request %s from edge %r: %s", env.rid, edge, PromptTooLongError.reason)
            counted = f"has {exc.prompt_tokens} tokens" if exc.prompt_tokens else "is too long"
            ctx = f"{exc.context_tokens}-token " if exc.context_tokens else ""
            return PromptTooLongError.status, refusal_body(PromptTooLongError.reason, (
                f"the prompt {counted}: over what the backend's {ctx}context holds with "
                f"{min(request.max_tokens, self.max_tokens)} tokens for the answer — send fewer or shorter passages"
                + (f" (an edge with ECQA_CLOUD_N_CTX={exc.context_tokens} trims them to fit)" if exc.context_tokens else "")))
        except BackendError as exc:
            logger.error("request %s from edge %r: backend failed: %s", env.rid, edge, exc)
            return 502, refusal_body("backend_error", f"the cloud backend failed: {exc}")
        timings = {"open": open_ms, **reply.timings_ms}
        timings["total"] = (time.perf_counter() - t0) * 1000.0
        self._answered(timings["total"])
        out = dataclasses.replace(reply, timings_ms=timings)
        sealed = seal(out.to_dict(), key, rid=env.rid, edge=edge, direction=DIRECTION_REPLY, ts_ms=self.clock())
        logger.info(
            "request %s from edge %r answered in %.0f ms (backend %.0f ms, %d+%d tokens)",
            env.rid, edge, timings["total"], timings["backend"], out.usage["prompt_tokens"], out.usage["completion_tokens"],
        )
        return 200, sealed.to_bytes()

    def health(self) -> dict[str, Any]:
        """Liveness, and what an answer costs here (ms): ``measured`` at start-up over fresh passages (None when
        not measured), ``measured_warm`` the same answer once those passages were read, ``measured_chars`` their
        characters, ``measured_decode`` the warm answer's decoding (``ms``, ``tokens``; None when the backend
        does not report it), ``recent`` over the answers served (EWMA; None before the first), ``answers``
        served."""
        with self._times:
            decode = self.measured_decode
            cost = {"measured": None if self.measured_ms is None else round(self.measured_ms, 1),
                    "measured_warm": None if self.measured_warm_ms is None else round(self.measured_warm_ms, 1),
                    "measured_chars": self.measured_chars,
                    "measured_decode": None if decode is None else {"ms": decode[0], "tokens": decode[1]},
                    "recent": None if self.recent_ms is None else round(self.recent_ms, 1), "answers": self.answers}
        return {"status": "ok", "backend": self.backend.name, "uptime_s": round(time.time() - self.started, 1),
                "answer_ms": cost}


# --- HTTP ------------------------------------------------------------------------------------------------
def _reply(service: GatewayService, path: str, status: int, body: bytes, content_type: str = "application/json",
           close: bool = False) -> Response:
    """A response counted in the metrics (by path, "other" for an unknown one); ``close``: the connection is
    closed after it (what was left unread of the request is never parsed as the next one)."""
    service.metrics.request(path if path in _KNOWN_PATHS else "other", status)
    headers = {"Cache-Control": "no-store", "Server": SERVER_NAME}
    if close:
        headers["Connection"] = "close"
    return Response(body, status, headers, media_type=content_type)


def _edge(request: Request) -> str:
    """The edge identity: the CN of the client certificate the TLS handshake verified ('' without TLS)."""
    tls = request.scope.get("extensions", {}).get("tls") or {}
    return peer_identity(tls.get("peercert"))


def make_app(service: GatewayService, timeout_s: float = IDLE_TIMEOUT_S,
             backend_threads: int = BACKEND_THREADS) -> Starlette:
    """The gateway's HTTP API (module docstring) as an ASGI app: checks on the event loop, each answer (the
    envelope's checks, the backend's reading, the sealing) in a thread of at most ``backend_threads``.

    :param timeout_s: seconds an envelope may stall mid-body before it is answered 408 and closed.
    """
    threads = anyio.CapacityLimiter(backend_threads)

    async def health(request: Request) -> Response:
        return _reply(service, HEALTH_PATH, 200, json.dumps(service.health()).encode())

    async def metrics(request: Request) -> Response:
        return _reply(service, METRICS_PATH, 200, service.metrics.render().encode(), CONTENT_TYPE)

    def refuse(status: int, reason: str, message: str, edge: str | None = None) -> Response:
        service.metrics.refusal(reason)
        if edge is not None:
            logger.warning("refused request from edge %r: %s", edge, reason)
        return _reply(service, ANSWER_PATH, status, refusal_body(reason, message), close=True)

    async def answer(request: Request) -> Response:
        edge = _edge(request)
        if request.headers.get("transfer-encoding"):
            return refuse(411, "malformed", "send the envelope with a Content-Length, not chunked")
        declared = request.headers.get("content-length", "")
        if not declared.isdigit():
            return refuse(411, "malformed", "a Content-Length header is required")
        if int(declared) > service.max_envelope_bytes:  # not read: the connection is closed after the refusal
            return refuse(413, TooLargeError.reason,
                          f"the envelope is over {service.max_envelope_bytes} bytes — send fewer or shorter passages", edge)
        try:
            body = await read_body(request, service.max_envelope_bytes, timeout_s)
        except BodyRefused:  # only a stall: the declared length is within the limit, and h11 holds the body to it
            return refuse(408, "timeout", f"no byte of the envelope came for {timeout_s:g} s — send it whole", edge)
        if body is None:  # the client went away mid-body: nothing to answer
            return Response(b"", 400)
        # Abandoned (not awaited) only when the server stops: its connection is dropped, and the backend it waits on
        # is closed next (Gateway.stop), so a stop never waits for a reading.
        status, reply = await anyio.to_thread.run_sync(service.handle_answer, body, edge, abandon_on_cancel=True,
                                                       limiter=threads)
        return _reply(service, ANSWER_PATH, status, reply)

    async def elsewhere(request: Request, exc: Exception) -> Response:
        path = request.url.path
        if request.method == "POST":  # its body is not read: closed after the reply
            return _reply(service, path, 404, refusal_body("not_found", f"no such endpoint — POST {ANSWER_PATH}"),
                          close=True)
        if request.method in ("GET", "HEAD"):
            return _reply(service, path, 404, refusal_body(
                "not_found", f"no such endpoint — POST {ANSWER_PATH}, GET {HEALTH_PATH} or {METRICS_PATH}"))
        return _reply(service, path, 501, refusal_body("malformed", _MALFORMED), close=True)  # as http.server did

    return Starlette(routes=[Route(ANSWER_PATH, answer, methods=["POST"]), Route(HEALTH_PATH, health, methods=["GET"]),
                             Route(METRICS_PATH, metrics, methods=["GET"])],
                     exception_handlers={404: elsewhere, 405: elsewhere})


def _full(service: GatewayService) -> Any:
    """The ASGI app that answers a request beyond MAX_CONNECTIONS: 503, at once, its body unread."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        service.metrics.refusal("busy")
        response = _reply(service, path, 503, refusal_body("busy", "the gateway is at its connection limit — retry in a "
                                                           "moment"), close=True)
        await response(scope, receive, send)

    return app


def _tls_refused(service: GatewayService) -> Any:
    def refused(exc: BaseException, client: str) -> None:
        if isinstance(exc, ssl.SSLError):
            reason = _SSL_REASON.get(getattr(exc, "reason", "") or "", "tls_handshake")
            service.metrics.refusal(reason)
            logger.warning("TLS handshake with %s refused: %s (%s)", client, reason, getattr(exc, "reason", None))
        else:  # the peer went away or timed out mid-handshake
            service.metrics.refusal("tls_handshake")
            logger.info("TLS handshake with %s failed: %s", client, type(exc).__name__)

    return refused


def _malformed(service: GatewayService) -> Any:
    def body() -> tuple[bytes, bytes]:
        # uvicorn's own 400 is plain text; a request that does not parse gets the gateway's fixed JSON instead.
        service.metrics.request("other", 400)
        return b"application/json", refusal_body("malformed", _MALFORMED)

    return body


def make_server(service: GatewayService, ssl_context: ssl.SSLContext, host: str = "127.0.0.1",
                port: int = 0) -> HttpServer:
    """The gateway's HTTPS server for ``service``, bound and listening (not serving yet: ``start()`` or
    ``serve_forever()``); ``ssl_context`` exactly as given (:meth:`ServerMaterial.ssl_context`: TLS 1.3, a client
    certificate of the CA required). Stopping it drops open connections at once (requests in flight unanswered).

    :raises OSError: the address cannot be bound.
    """
    # The module's limits read at each call (not at import), so that a test may shorten them.
    return HttpServer(make_app(service, IDLE_TIMEOUT_S), host, port, ssl_context=ssl_context, timeout_s=IDLE_TIMEOUT_S,
                      backlog=LISTEN_BACKLOG, max_connections=MAX_CONNECTIONS, handshake_timeout_s=HANDSHAKE_TIMEOUT_S,
                      graceful=False, on_tls_refused=_tls_refused(service), bad_request=_malformed(service),
                      full=_full(service), name="cloud gateway")


class Gateway:
    """The HTTPS gateway process part: binds, serves (in the foreground or a thread), stops.

    :param material: server certificate, CA and keyring from `ecqa cloud init`.
    :param backend: an OpenAI-compatible backend client (warmed up by :meth:`start`).
    :param host: address to bind (127.0.0.1 by default; 0.0.0.0 to serve other machines).
    :param port: TCP port, 0 = any free one (see :attr:`url`).
    :param persist_replays: keep the replay window in ``<cloud dir>/replay-window.log``, so that an envelope
        captured before a restart is still refused after it.
    :param measure: answer one made-up question when starting (:meth:`GatewayService.measure`), so that
        /healthz tells edges what an answer costs before the first one is asked.
    """

    def __init__(
        self,
        material: ServerMaterial,
        backend: Backend,
        host: str = "127.0.0.1",
        port: int = 8443,
        max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        max_plaintext_bytes: int = DEFAULT_MAX_PLAINTEXT_BYTES,
        clock_skew_s: float = DEFAULT_CLOCK_SKEW_S,
        max_tokens: int = 64,
        persist_replays: bool = True,
        measure: bool = False,
    ) -> None:
        self.measure = measure
        self.material = material
        self.backend = backend
        self.host = host
        self.port = port
        self.service = GatewayService(
            material.keyring, backend, max_envelope_bytes=max_envelope_bytes, max_plaintext_bytes=max_plaintext_bytes,
            clock_skew_s=clock_skew_s, max_tokens=max_tokens,
            replay_file=Path(material.directory) / REPLAY_FILE if persist_replays else None,
        )
        self._server: HttpServer | None = None

    @property
    def metrics(self) -> GatewayMetrics:
        return self.service.metrics

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the gateway is not bound yet")
        host, port = self._server.server_address[:2]
        name = str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"https://{shown}:{port}"

    def bind(self) -> Gateway:
        """Listen on host:port (before the backend starts, so a busy port fails fast).

        :raises GatewayStartError: the port is in use or the host is not a local address.
        """
        if self._server is not None:
            return self
        ctx = self.material.ssl_context()
        self.service.replays.open(self.service.clock())  # before the first request: a restart forgets nothing
        try:
            self._server = make_server(self.service, ctx, self.host, self.port)
        except OSError as exc:
            if exc.errno in (98, 48):  # EADDRINUSE (Linux, macOS)
                raise GatewayStartError(f"port {self.port} on {self.host} is in use — pick another with --port") from None
            raise GatewayStartError(f"cannot listen on {self.host}:{self.port}: {exc.strerror} — check --host") from None
        return self

    def start(self) -> Gateway:
        """Bind, start the backend (and measure an answer: ``measure``), and serve in a background thread."""
        self.bind()
        self.warm_up()
        assert self._server is not None
        self._server.start()
        return self

    def warm_up(self) -> None:
        """Start the backend and, with ``measure``, time one answer (a failure to measure is logged: the gateway
        still serves, and /healthz says nothing was measured)."""
        self.backend.warm_up()
        if self.measure and self.service.measured_ms is None:
            try:
                self.service.measure()
            except BackendError as exc:
                logger.warning("could not measure an answer at start-up: %s", exc)

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (or KeyboardInterrupt)."""
        self.bind()
        self.warm_up()
        assert self._server is not None
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving, drop open connections, stop the backend. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            # Open connections are dropped, requests in flight unanswered (as before: their backend stops next).
            server.shutdown(timeout_s=5)
            server.socket.close()
        self.service.replays.close()
        self.backend.close()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
