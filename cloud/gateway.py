"""The cloud gateway: an HTTPS server (TLS 1.3 only, mutual TLS) that opens AES-GCM envelopes,
asks the LLM backend and seals the reply.

Checks, in order, each refusing with its own reason and **before any backend call**::

    TLS handshake     no client certificate / one not signed by the CA / not TLS 1.3
    size              Content-Length over the limit (the body is not even read)     413 too_large
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

Logs carry request ids, edge names, reasons and timings — never questions, passages, answers,
keys or ciphertext; refusal bodies are fixed texts that never echo the request.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
    ReplayError,
    TooLargeError,
    UnknownKeyError,
)
from cloud.metrics import CONTENT_TYPE, GatewayMetrics
from cloud.prompting import prompt_char_limit, prompt_chars, read_passages, read_with
from cloud.wire import (
    ANSWER_PATH,
    DEFAULT_CLOCK_SKEW_S,
    DEFAULT_MAX_ENVELOPE_BYTES,
    DEFAULT_MAX_PLAINTEXT_BYTES,
    DIRECTION_REPLY,
    DIRECTION_REQUEST,
    HEALTH_PATH,
    METRICS_PATH,
    NONCE_BYTES,
    AnswerReply,
    AnswerRequest,
    Envelope,
    refusal_body,
)
from reading.text import find_span, reply_confidence

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0
# Reasons a connection is refused at the TLS layer (metrics labels).
TLS_REASONS = ("no_client_cert", "untrusted_client_cert", "tls_handshake")
_KNOWN_PATHS = (ANSWER_PATH, HEALTH_PATH, METRICS_PATH)  # metrics labels; anything else is "other"
_SSL_REASON = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no_client_cert",
    "CERTIFICATE_VERIFY_FAILED": "untrusted_client_cert",
    "TLSV1_ALERT_UNKNOWN_CA": "untrusted_client_cert",
}


REPLAY_FILE = "replay-window.log"


class ReplayCache:
    """Nonces seen per key id, each kept until its envelope's timestamp leaves the window.

    An envelope older than the window is refused by the timestamp check, so a nonce never needs
    to be remembered longer than ``ts + skew``: memory is bounded by the request rate x window.

    With a ``path`` the window outlives the process: every accepted nonce is appended to the file
    (one ``write`` of one line, which survives a SIGKILL of the process), and :meth:`open` reads back
    the nonces still inside the window before the first request — so an envelope captured before a
    restart is still a replay after it. The file is rewritten (atomically: a temporary file renamed
    over it) with only the live nonces at start and whenever it holds mostly expired ones. One
    gateway process per cloud directory.

    :param skew_s: the timestamp window (s) on each side.
    :param max_entries: refuse (as a replay) rather than grow past this many live nonces.
    :param path: the file that keeps the window across restarts; None = memory only.
    """

    def __init__(self, skew_s: float, max_entries: int = 1_000_000, path: Path | None = None) -> None:
        self.skew_ms = int(skew_s * 1000)
        self.max_entries = max_entries
        self.path = path
        self._seen: OrderedDict[tuple[str, bytes], int] = OrderedDict()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._lines = 0  # lines in the file since it was last rewritten

    def __len__(self) -> int:
        return len(self._seen)

    def open(self, now: int) -> None:
        """Load the nonces of ``path`` still inside the window, rewrite it with those only, and record
        every nonce from now on. Idempotent; nothing to do without a path.

        :raises GatewayStartError: the file cannot be read or written.
        """
        if self.path is None or self._fd is not None:
            return
        try:
            text = self.path.read_bytes().decode("ascii", errors="replace")
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise GatewayStartError(f"cannot read the replay window {self.path}: {exc.strerror} — make the cloud "
                                    "directory readable and writable by the gateway") from None
        live: dict[tuple[str, bytes], int] = {}
        for line in text.splitlines():  # a line cut short by a crash or foreign text is skipped
            parts = line.split(" ")
            if len(parts) != 3 or not parts[0].isdigit():
                continue
            try:
                nonce = base64.b64decode(parts[2], validate=True)
            except (binascii.Error, ValueError):
                continue
            if int(parts[0]) >= now and len(nonce) == NONCE_BYTES:
                live[(parts[1], nonce)] = max(int(parts[0]), live.get((parts[1], nonce), 0))
        with self._lock:
            for key, expires in sorted(live.items(), key=lambda kv: kv[1]):
                self._seen.setdefault(key, expires)
            self._rewrite()
        logger.info("replay window: %d nonces still live from %s", len(live), self.path)

    def _line(self, kid: str, nonce: bytes, expires: int) -> bytes:
        return f"{expires} {kid} {base64.b64encode(nonce).decode('ascii')}\n".encode("ascii")

    def _rewrite(self) -> None:
        """Replace the file by the live nonces (atomic rename), and append to the new one. Holds the lock."""
        assert self.path is not None
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"".join(self._line(kid, nonce, exp) for (kid, nonce), exp in self._seen.items()))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise GatewayStartError(f"cannot write the replay window {self.path}: {exc.strerror} — make the cloud "
                                    "directory writable by the gateway") from None
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._lines = fd, len(self._seen)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def check_and_add(self, kid: str, nonce: bytes, ts_ms: int, now: int) -> None:
        """:raises ReplayError: the nonce was seen (by this process or, with a path, a previous one), the
        cache is full, or the nonce cannot be recorded."""
        with self._lock:
            while self._seen:
                key, expires = next(iter(self._seen.items()))
                if expires >= now:
                    break
                del self._seen[key]
            if (kid, nonce) in self._seen:
                raise ReplayError("this envelope was already received (replayed nonce) — seal every request with a fresh nonce")
            if len(self._seen) >= self.max_entries:
                raise ReplayError("the gateway's replay cache is full — retry in a few seconds")
            # Insertion order is expiry order up to the window, so the purge above may stop early
            # and keep an expired entry a little longer: harmless.
            expires = max(ts_ms + self.skew_ms, now)
            if self._fd is not None:
                try:
                    if self._lines > max(10_000, 2 * len(self._seen)):  # mostly expired lines: compact
                        self._rewrite()
                    os.write(self._fd, self._line(kid, nonce, expires))
                    self._lines += 1
                except (OSError, GatewayStartError) as exc:
                    # Not recorded = could be replayed after a restart: refuse rather than serve it.
                    logger.error("cannot record a nonce in %s: %s", self.path, exc)
                    raise ReplayError("the gateway cannot record this request (its disk is full or read-only) — "
                                      "retry later") from None
            self._seen[(kid, nonce)] = expires


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
        self.metrics = GatewayMetrics([*TLS_REASONS, *(e.reason for e in REFUSAL_ERRORS)])
        self.started = time.time()

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
        passage a yes/no probe and an answer, then a check of the answer of the best passage — each a
        completion request sharing the passage's prefix (one prefill with a prefix-caching backend).

        :raises BackendError: the backend failed.
        """
        t0 = time.perf_counter()
        passages = read_passages(request.passages)
        max_tokens = min(request.max_tokens, self.max_tokens)
        backend = self.backend
        t1 = time.perf_counter()
        try:
            reading, steps = read_with(backend, request.question, passages, max_tokens)
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
        out = dataclasses.replace(reply, timings_ms=timings)
        sealed = seal(out.to_dict(), key, rid=env.rid, edge=edge, direction=DIRECTION_REPLY, ts_ms=self.clock())
        logger.info(
            "request %s from edge %r answered in %.0f ms (backend %.0f ms, %d+%d tokens)",
            env.rid, edge, timings["total"], timings["backend"], out.usage["prompt_tokens"], out.usage["completion_tokens"],
        )
        return 200, sealed.to_bytes()

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "backend": self.backend.name, "uptime_s": round(time.time() - self.started, 1)}


class _Handler(BaseHTTPRequestHandler):
    server: _TLSServer
    protocol_version = "HTTP/1.1"
    server_version = "ecqa-gateway"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    # Headers and body go out in two writes: with Nagle on, the second waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # requests are logged by the service (ids and reasons only)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stdlib's error page quotes the request line: send a fixed JSON text instead.
        self.close_connection = True
        self._send(code, refusal_body("malformed", "the HTTP request is malformed — use an HTTP/1.1 client such as httpx"))

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        path = getattr(self, "path", "")  # unset when the request line did not parse
        self.server.service.metrics.request(path if path in _KNOWN_PATHS else "other", status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _edge(self) -> str:
        conn = self.connection
        return peer_identity(conn.getpeercert()) if isinstance(conn, ssl.SSLSocket) else ""

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        service = self.server.service
        if self.path == HEALTH_PATH:
            self._send(200, json.dumps(service.health()).encode())
        elif self.path == METRICS_PATH:
            self._send(200, service.metrics.render().encode(), CONTENT_TYPE)
        else:
            self._send(404, refusal_body("not_found", f"no such endpoint — POST {ANSWER_PATH}, GET {HEALTH_PATH} or {METRICS_PATH}"))

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        service = self.server.service
        if self.path != ANSWER_PATH:
            self.close_connection = True
            self._send(404, refusal_body("not_found", f"no such endpoint — POST {ANSWER_PATH}"))
            return
        edge = self._edge()
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            service.metrics.refusal("malformed")
            self._send(411, refusal_body("malformed", "send the envelope with a Content-Length, not chunked"))
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
            if length < 0:
                raise ValueError(length)
        except ValueError:
            self.close_connection = True
            service.metrics.refusal("malformed")
            self._send(411, refusal_body("malformed", "a Content-Length header is required"))
            return
        if length > service.max_envelope_bytes:
            # Not read: the connection is closed after the refusal.
            self.close_connection = True
            service.metrics.refusal(TooLargeError.reason)
            logger.warning("refused request from edge %r: %s", edge, TooLargeError.reason)
            message = f"the envelope is over {service.max_envelope_bytes} bytes — send fewer or shorter passages"
            self._send(413, refusal_body(TooLargeError.reason, message))
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return
        status, reply = service.handle_answer(body, edge)
        self._send(status, reply)


class _TLSServer(ThreadingHTTPServer):
    """Threaded HTTP server that does each TLS handshake in the connection's own thread (a slow
    or hostile client cannot block ``accept``)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], ctx: ssl.SSLContext, service: GatewayService) -> None:
        self.ctx = ctx
        self.service = service
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves its own FQDN (a DNS lookup): not needed here.
        import socketserver

        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except ssl.SSLError as exc:
            reason = _SSL_REASON.get(getattr(exc, "reason", "") or "", "tls_handshake")
            self.service.metrics.refusal(reason)
            logger.warning("TLS handshake with %s refused: %s (%s)", client_address[0], reason, getattr(exc, "reason", None))
            return
        except OSError as exc:  # the peer went away or timed out mid-handshake
            self.service.metrics.refusal("tls_handshake")
            logger.info("TLS handshake with %s failed: %s", client_address[0], type(exc).__name__)
            return
        with self._conns_lock:
            self._conns.add(tls)
        try:
            self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]
        except (OSError, ssl.SSLError) as exc:
            logger.debug("connection from %s ended: %s", client_address[0], type(exc).__name__)
        finally:
            with self._conns_lock:
                self._conns.discard(tls)
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("unexpected error serving %s", client_address[0])

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Gateway:
    """The HTTPS gateway process part: binds, serves (in the foreground or a thread), stops.

    :param material: server certificate, CA and keyring from `ecqa cloud init`.
    :param backend: an OpenAI-compatible backend client (warmed up by :meth:`start`).
    :param host: address to bind (127.0.0.1 by default; 0.0.0.0 to serve other machines).
    :param port: TCP port, 0 = any free one (see :attr:`url`).
    :param persist_replays: keep the replay window in ``<cloud dir>/replay-window.log``, so that an envelope
        captured before a restart is still refused after it.
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
    ) -> None:
        self.material = material
        self.backend = backend
        self.host = host
        self.port = port
        self.service = GatewayService(
            material.keyring, backend, max_envelope_bytes=max_envelope_bytes, max_plaintext_bytes=max_plaintext_bytes,
            clock_skew_s=clock_skew_s, max_tokens=max_tokens,
            replay_file=Path(material.directory) / REPLAY_FILE if persist_replays else None,
        )
        self._server: _TLSServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def metrics(self) -> GatewayMetrics:
        return self.service.metrics

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the gateway is not bound yet")
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
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
            self._server = _TLSServer((self.host, self.port), ctx, self.service)
        except OSError as exc:
            if exc.errno in (98, 48):  # EADDRINUSE (Linux, macOS)
                raise GatewayStartError(f"port {self.port} on {self.host} is in use — pick another with --port") from None
            raise GatewayStartError(f"cannot listen on {self.host}:{self.port}: {exc.strerror} — check --host") from None
        return self

    def start(self) -> Gateway:
        """Bind, start the backend, and serve in a background thread."""
        self.bind()
        self.backend.warm_up()
        assert self._server is not None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True, name="gateway")
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (or KeyboardInterrupt)."""
        self.bind()
        self.backend.warm_up()
        assert self._server is not None
        self._server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Stop serving, drop open connections, stop the backend. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            if self._thread is not None:
                server.shutdown()
                self._thread.join(timeout=5)
                self._thread = None
            server.close_connections()
            server.server_close()
        self.service.replays.close()
        self.backend.close()

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
