"""The HTTP server stack both tiers serve with: uvicorn (h11) serving an ASGI app on a socket bound when it is made.

- **Bounded waits.** A connection that sends nothing, half its headers or half its body for ``timeout_s`` is closed
  (a stalled body is answered 408 by :func:`read_body`); a TLS handshake gets ``handshake_timeout_s``.
- **Bounded bodies.** :func:`read_body` reads a body whole, counted as it streams, or refuses it (413) without
  reading the rest.
- **No resets under load.** The listen backlog holds ``backlog`` connections while the server accepts; beyond
  ``max_connections`` open connections (or requests in flight) every request is answered 503 at once, unread.
- **Mutual TLS with the caller's own context**, the handshake done by the connection's protocol (so a refused
  handshake has a reason for the caller's metrics), the client certificate in the ASGI scope
  (``scope["extensions"]["tls"]["peercert"]``, as ``SSLSocket.getpeercert()`` gives it).

The event loop runs in a thread of its own, so signals stay with the caller: Ctrl-C or SIGTERM interrupt
:meth:`HttpServer.serve_forever` in the calling thread (within ``SIGNAL_POLL_S``, whichever thread the kernel
handed the signal to), and :meth:`HttpServer.server_close` then stops it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from asyncio import sslproto
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio
import h11
import uvicorn
from starlette.requests import Request
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.h11_impl import H11Protocol

# Connections the kernel holds while the server accepts (Python's default is 5: a burst of 60 requests to an edge
# worker saw 34 connection resets, which a dispatcher reads as a dead worker). Every one accepted gets a reply.
LISTEN_BACKLOG = 1024
HANDSHAKE_TIMEOUT_S = 10.0
# Seconds between the serving thread's looks for a signal caught by another thread (see serve_forever).
SIGNAL_POLL_S = 0.2

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class BodyRefused(Exception):
    """A request body not read whole: ``status`` 413 (over the limit) or 408 (it stalled); the connection is to be
    closed after the reply, so a body left unread is never parsed as the next request."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes | None:
    """The whole body, counted as it streams (a chunked one too); None if the client went away mid-body.

    :raises BodyRefused: 413 over ``max_bytes`` (a declared length at once, before a byte is read; a streamed one
        as it crosses the limit, the rest never read), 408 nothing more arrived for ``timeout_s``.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyRefused(413, f"the body is over {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        with anyio.move_on_after(timeout_s) as wait:
            message = await request.receive()
        if wait.cancelled_caught:
            raise BodyRefused(408, f"no byte of the body came for {timeout_s:g} s")
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise BodyRefused(413, f"the body is over {max_bytes} bytes")
        chunks.append(chunk)
        more = bool(message.get("more_body", False))
    return b"".join(chunks)


class _SSLProtocol(sslproto.SSLProtocol):
    """asyncio's TLS protocol, plus the alert of a refused handshake sent before the socket closes: asyncio drops it,
    and a client then sees a bare reset where it should read why (e.g. "unknown CA": its certificate was refused)."""

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None and self._transport is not None:
            try:
                self._process_outgoing()
            except Exception:  # noqa: BLE001 (the socket is closing anyway)
                pass
        super()._on_handshake_complete(handshake_exc)


async def _start_tls(loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport, protocol: asyncio.Protocol,
                     ctx: ssl.SSLContext, handshake_timeout_s: float) -> asyncio.BaseTransport:
    """``loop.start_tls(..., server_side=True)`` (Python 3.11's, line for line) with :class:`_SSLProtocol`.

    :raises OSError: the handshake failed (an ``ssl.SSLError`` with its reason) or timed out; the socket is closed.
    """
    waiter = loop.create_future()
    tls = _SSLProtocol(loop, protocol, ctx, waiter, server_side=True, ssl_handshake_timeout=handshake_timeout_s,
                       call_connection_made=False)
    transport.pause_reading()  # type: ignore[attr-defined]
    transport.set_protocol(tls)
    made = loop.call_soon(tls.connection_made, transport)
    resumed = loop.call_soon(transport.resume_reading)  # type: ignore[attr-defined]
    try:
        await waiter
    except BaseException:
        transport.close()
        made.cancel()
        resumed.cancel()
        raise
    return tls._app_transport  # type: ignore[no-any-return]


@dataclass
class _Options:
    """What one server's connections share (a protocol class is made per server to carry them)."""

    ssl_context: ssl.SSLContext | None
    handshake_timeout_s: float
    max_connections: int
    on_tls_refused: Callable[[BaseException, str], None] | None
    bad_request: Callable[[], tuple[bytes, bytes]] | None
    full: ASGIApp


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for a request's headers, the TLS handshake done here, the client
    certificate in the scope, and the server's own replies when it is full or a request does not parse.

    uvicorn times an idle connection out only after a response (its keep-alive timeout): one that connects and
    sends nothing, or half its headers, would be held open for ever. Here the same timer also runs from the
    connection's start and while the next request's headers are incomplete.
    """

    options: _Options

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._early = b""  # bytes decrypted before the handshake's task resumed
        self._lost = False
        self._tls: dict[str, Any] | None = None
        inner = self.app

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            if self._tls is not None:
                scope.setdefault("extensions", {})["tls"] = self._tls
            # uvicorn's own limit, with the caller's reply: the task of this request is one of self.tasks.
            limit = self.options.max_connections
            full = len(self.connections) >= limit or len(self.tasks) > limit
            await (self.options.full if full else inner)(scope, receive, send)

        self.app = app

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        ctx = self.options.ssl_context
        if ctx is None:
            self._serve(transport)
            return
        transport.pause_reading()  # type: ignore[attr-defined]  # the ClientHello waits for start_tls
        self.loop.create_task(self._handshake(transport, ctx))  # noqa: RUF006 (it ends with the connection)

    async def _handshake(self, raw: asyncio.BaseTransport, ctx: ssl.SSLContext) -> None:
        peer = raw.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        try:
            tls = await _start_tls(self.loop, raw, self, ctx, self.options.handshake_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:  # ssl.SSLError is an OSError; start_tls closed the socket
            if self.options.on_tls_refused is not None:
                self.options.on_tls_refused(exc, host)
            return
        except asyncio.CancelledError:  # the server stops
            raw.abort()  # type: ignore[attr-defined]
            raise
        if tls is None or self._lost:
            return
        ssl_object = tls.get_extra_info("ssl_object")
        self._tls = {"peercert": tls.get_extra_info("peercert"), "tls_version": ssl_object.version() if ssl_object else None}
        self._serve(tls)
        early, self._early = self._early, b""
        if early:
            self.data_received(early)

    def _serve(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._wait_for_headers()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:  # TLS application data before the handshake's task resumed
            self._early += data
            return
        super().data_received(data)  # cancels the timer
        self._wait_for_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self.transport is None:  # a handshake that failed or was cut: nothing was served
            return
        super().connection_lost(exc)

    def _wait_for_headers(self) -> None:
        between_requests = self.cycle is None or self.cycle.response_complete
        if between_requests and self.timeout_keep_alive_task is None and not self.transport.is_closing():
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)

    def send_400_response(self, msg: str) -> None:
        if self.options.bad_request is None:
            super().send_400_response(msg)
            return
        content_type, body = self.options.bad_request()
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class HttpServer:
    """uvicorn serving ``app`` on a socket bound (and listening) when the server is made.

    :param app: the ASGI app (e.g. a Starlette app).
    :param host: the address to bind ("::1"-like: IPv6).
    :param port: 0: any free port (read :attr:`server_address`).
    :param ssl_context: serve TLS with exactly this context (e.g. TLS 1.3 with client certificates required);
        None: plain HTTP.
    :param timeout_s: seconds a connection may send nothing (before or between requests, or mid-headers).
    :param max_connections: open connections (or requests in flight) beyond which every request gets ``full``.
    :param graceful: a stopping server waits for its requests in flight (each must be bounded); False: it
        closes every connection at once (:meth:`close_connections`) and does not wait.
    :param on_tls_refused: called on the event loop with the handshake's exception and the client's address.
    :param bad_request: ``(content type, body)`` of the 400 sent for a request that does not parse (None:
        uvicorn's plain text).
    :param full: the ASGI app that answers beyond ``max_connections`` (None: uvicorn's plain-text 503).
    :raises OSError: the address cannot be bound.
    """

    def __init__(self, app: ASGIApp, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                 timeout_s: float = 10.0, backlog: int = LISTEN_BACKLOG, max_connections: int = 256,
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S, graceful: bool = True,
                 on_tls_refused: Callable[[BaseException, str], None] | None = None,
                 bad_request: Callable[[], tuple[bytes, bytes]] | None = None, full: ASGIApp | None = None,
                 name: str = "http-server") -> None:
        # IPPROTO_TCP named, as uvicorn's own bind does: asyncio sets TCP_NODELAY only on sockets that say so.
        # Without it a reply's headers and body, written apart, waited on Nagle and the client's delayed ACK:
        # 44 ms per request on a kept-alive connection (`make bench-server`).
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                                    socket.IPPROTO_TCP)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(backlog)
        except OSError:
            self.socket.close()
            raise
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self.name = name
        self.graceful = graceful
        options = _Options(ssl_context, handshake_timeout_s, max_connections, on_tls_refused, bad_request,
                           full or service_unavailable)
        protocol = type("_Protocol", (_Protocol,), {"options": options})
        config = uvicorn.Config(
            app, http=protocol, loop="asyncio", ws="none", lifespan="off", log_config=None, access_log=False,
            proxy_headers=False, server_header=False, backlog=backlog, timeout_keep_alive=timeout_s,  # type: ignore[arg-type]
            # The limit is the protocol's (with the caller's reply); uvicorn's own would answer in plain text.
            limit_concurrency=None,
            # None: a stopping server waits for its requests in flight, each bounded (a read, or a body that stalls
            # for timeout_s). An edge worker that exited while llama.cpp read in a thread crashed (SIGSEGV).
            timeout_graceful_shutdown=None,
        )
        try:
            config.load()  # a bad app fails here, not in the server's thread
        except BaseException:
            self.socket.close()
            raise
        self.tls = ssl_context is not None
        self._uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            await self._uvicorn.serve(sockets=[self.socket])

        try:
            asyncio.run(serve())
        except BaseException as exc:  # noqa: BLE001 (SystemExit included: uvicorn exits on some start-up errors)
            self._error = exc
        finally:
            self._done.set()

    def start(self) -> HttpServer:
        """Serve in a thread of its own (returns at once)."""
        if self._thread is not None:
            raise RuntimeError(f"the {self.name} is already serving")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` or :meth:`server_close`; a KeyboardInterrupt in the calling thread
        propagates at once, the server still serving until :meth:`server_close` (so a worker can withdraw its
        registry entry before it stops answering).

        :raises RuntimeError: the server could not run.
        """
        self.start()
        # Polled, never one untimed wait: a signal the kernel hands to another thread (the event loop's, a read's)
        # only sets Python's flag, and an untimed wait in this thread would never wake to run the handler.
        while not self._done.wait(SIGNAL_POLL_S):
            pass
        if self._error is not None:
            raise RuntimeError(f"the {self.name} stopped: {type(self._error).__name__}: {self._error}") from self._error

    def close_connections(self) -> None:
        """Drop every open connection at once (requests in flight get no reply)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def drop() -> None:
            for conn in list(self._uvicorn.server_state.connections):
                if isinstance(conn, _Protocol):
                    conn.abort()

        try:
            loop.call_soon_threadsafe(drop)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Stop serving (from another thread): new connections are refused at once and idle ones closed; a
        graceful server answers the requests in flight first. Returns once :meth:`serve_forever` has returned
        (or after ``timeout_s``)."""
        if not self.graceful:
            self.close_connections()
            self._uvicorn.force_exit = True
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._done.wait(timeout_s)

    def server_close(self) -> None:
        """Stop serving if it still does (:meth:`shutdown`) and close the socket."""
        self.shutdown()
        self.socket.close()
