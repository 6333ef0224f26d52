"""An edge worker: one edge model answering reads over HTTP (`ecqa edge serve`), mutual TLS when given a context.

    POST /v1/read   {"question": str, "documents": [{id, content, meta, score}]}
                    200 → EdgeAnswer JSON + {"worker": id}
                    503 {"error": "full"}: every slot busy and the queue full — try another worker
                    503 {"error": "stopping"}: the worker is stopping — try another worker
                    400 bad request · 413 body over MAX_BODY_BYTES or passages over the context window
                    408 the body stalled for SOCKET_TIMEOUT_S · 500 the model failed
    GET  /v1/health the worker's registry entry (capabilities and live load)

A worker has ``concurrency`` slots (one model instance each) and admits at most ``queue`` more
requests waiting for a slot; beyond that it refuses at once (503) rather than letting a request
wait without bound. It measures its own speed at start-up, then heartbeats its entry into the
registry every ``ttl / 3`` seconds and withdraws it when it stops; reads already on a model then finish
and are answered, the others are refused (503 "stopping").

The server is uvicorn (h11) serving a Starlette app: requests are parsed and admitted on its event loop,
and each admitted read runs in a thread of its own (llama.cpp releases the GIL while it reads).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge.errors import ModelError, PromptTooLongError
from edge.reader import EdgeReader, documents_from_json
from edge.registry import Registry, RegistryError, WorkerEntry
from reading.http_server import LISTEN_BACKLOG, BodyRefused, HttpServer, read_body
from reading.prompts import MAX_QUESTION_CHARS

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 << 20
# Seconds a connection may sit without sending (half its headers, a half-sent body, an idle keep-alive):
# then it is closed (a stalled body with a 408), so slow or stalled clients cannot hold the worker. Longer
# than httpx's 5 s keep-alive expiry: the dispatcher drops an idle connection before the worker does, so it
# never sends a request on a connection the worker is closing.
SOCKET_TIMEOUT_S = 10.0
# The listen backlog is reading.http_server's LISTEN_BACKLOG (1024; Python's default of 5 saw 34 connection resets in
# a burst of 60 requests, which a dispatcher reads as a dead worker). Every connection accepted gets a reply, 503
# when the worker is full.
# Open connections beyond which uvicorn answers 503 at once (the dispatcher's "full") without reading the
# request: bounds the bodies in transit to MAX_CONNECTIONS x MAX_BODY_BYTES (1 GiB). A dispatcher holds one
# connection per request in flight; the burst test sends 60 at once.
MAX_CONNECTIONS = 256


def check_read_request(payload: Any) -> tuple[str, list[Any]]:
    """The question and documents of a ``POST /v1/read`` body.

    :raises ValueError: anything else, with a one-line message saying what to send.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("question"), str):
        raise ValueError("send {\"question\": str, \"documents\": [...]}")
    question = payload["question"].strip()
    if not question or len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question must have 1-{MAX_QUESTION_CHARS} characters")
    try:
        return question, documents_from_json(payload.get("documents"))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise ValueError(f"bad documents ({str(exc)[:200]}) — send [{{\"id\": str, \"content\": str, \"meta\": "
                         "{...}, \"score\": number}, ...]") from None


@dataclass(eq=False)
class Admitted:
    """A read request checked and admitted by :meth:`EdgeWorker.admit`: it holds one of the worker's places
    until :meth:`EdgeWorker.release`."""

    question: str
    documents: list[Any]
    _held: bool = field(default=True, init=False, repr=False)


class EdgeWorker:
    """Admission, slots and the registry entry of one worker process.

    :param readers: one loaded reader per slot (its concurrency).
    :param entry: the worker's capabilities (id, url, model, speeds…); load fields are filled live.
    :param queue_limit: requests admitted beyond the slots, waiting for one.
    :param registry: where it heartbeats, or None.
    """

    def __init__(self, readers: Sequence[EdgeReader], entry: WorkerEntry, queue_limit: int,
                 registry: Registry | None = None) -> None:
        if not readers:
            raise ValueError("a worker needs at least one reader")
        self.entry = replace(entry, concurrency=len(readers), queue=queue_limit, pid=os.getpid())
        self.queue_limit = queue_limit
        self.registry = registry
        self._slots: queue.Queue[EdgeReader] = queue.Queue()
        for r in readers:
            self._slots.put(r)
        self._lock = threading.Lock()
        self._admitted = 0
        self._served = 0
        self._rejected = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # --- load ------------------------------------------------------------------------------
    def snapshot(self) -> WorkerEntry:
        with self._lock:
            return replace(self.entry, in_flight=self._admitted, served=self._served, rejected=self._rejected)

    def _admit(self) -> bool:
        with self._lock:
            if self._admitted >= self.entry.limit:
                self._rejected += 1
                return False
            self._admitted += 1
            return True

    def admit(self, payload: Any) -> Admitted | tuple[int, dict[str, Any]]:
        """Check a read request and take one of the worker's ``limit`` places for it, at once (never waits).

        :returns: the admitted read, for :meth:`serve` and then :meth:`release`; or the refusal as
            (HTTP status, JSON body): 400 a malformed request, 503 the worker is full (or stopping).
        """
        try:
            question, documents = check_read_request(payload)
        except ValueError as exc:
            return 400, {"error": "bad_request", "message": str(exc)}
        if self._stop.is_set():
            return self._stopping()
        if not self._admit():
            snap = self.snapshot()
            return 503, {"error": "full", "message": f"worker {snap.id} is full ({snap.in_flight} admitted, limit "
                         f"{snap.limit}) — try another worker", "in_flight": snap.in_flight, "limit": snap.limit}
        return Admitted(question, documents)

    def serve(self, admitted: Admitted) -> tuple[int, dict[str, Any]]:
        """Read an admitted request (blocking: it waits for a free slot, then the model reads for seconds).

        Its place is given back by :meth:`release`, not here: the HTTP server gives it back on its event loop
        once the read's thread is free, so ``limit`` threads always suffice for the admitted reads.
        """
        t0 = time.perf_counter()
        try:
            reader = self._take_slot()
            if reader is None:
                return self._stopping()
            waited = (time.perf_counter() - t0) * 1000.0
            try:
                ans = reader.read(admitted.question, admitted.documents)
            finally:
                self._slots.put(reader)
        except ModelError as exc:
            status = 413 if isinstance(exc, PromptTooLongError) else 500
            return status, {"error": "prompt_too_long" if status == 413 else "model", "message": str(exc)}
        with self._lock:
            self._served += 1
        body = ans.to_json()
        body["timings"] = {**body["timings"], "worker_queue": waited}
        body["worker"] = self.entry.id
        return 200, body

    def _take_slot(self) -> EdgeReader | None:
        """A free slot, waiting as long as it takes; None once the worker stops (its reads still waiting are
        refused then, not read: a process that exits while a model reads crashes in llama.cpp)."""
        while True:
            try:
                return self._slots.get(timeout=0.1)  # a slot put back wakes it at once; the timeout sees a stop
            except queue.Empty:
                if self._stop.is_set():
                    return None

    def _stopping(self) -> tuple[int, dict[str, Any]]:
        return 503, {"error": "stopping", "message": f"worker {self.entry.id} is stopping — try another worker"}

    def release(self, admitted: Admitted) -> None:
        """Give an admitted read's place back (once: later calls do nothing)."""
        with self._lock:
            if admitted._held:
                admitted._held = False
                self._admitted -= 1

    def read(self, payload: Any) -> tuple[int, dict[str, Any]]:
        """One read request, admission to answer (blocking): (HTTP status, JSON body)."""
        admitted = self.admit(payload)
        if not isinstance(admitted, Admitted):
            return admitted
        try:
            return self.serve(admitted)
        finally:
            self.release(admitted)

    # --- registry --------------------------------------------------------------------------
    def start_heartbeat(self) -> None:
        """Put the entry now, then every ttl / 3 seconds until :meth:`stop`."""
        if self.registry is None:
            return
        self.registry.put(self.snapshot())  # a registry that cannot be written fails the start, clearly

        def beat() -> None:
            assert self.registry is not None
            while not self._stop.wait(self.registry.ttl_s / 3.0):
                try:
                    self.registry.put(self.snapshot())
                except RegistryError as exc:  # the registry may come back; the worker keeps serving
                    logger.warning("heartbeat failed: %s", exc)

        self._beat = threading.Thread(target=beat, name="registry-heartbeat", daemon=True)
        self._beat.start()

    def stop(self) -> None:
        """Stop heartbeating and withdraw the entry (dispatchers stop sending at once). Reads on a model finish;
        those still waiting for a slot, and any new one, are refused (503 "stopping")."""
        self._stop.set()
        if self.registry is not None:
            try:
                self.registry.remove(self.entry.id)
            except RegistryError as exc:
                logger.warning("could not withdraw %s: %s", self.entry.id, exc)


# --- HTTP ------------------------------------------------------------------------------------
_ROUTES_HINT = "use GET /v1/health or POST /v1/read"


def _reply(status: int, body: dict[str, Any], close: bool = False) -> Response:
    # json.dumps as http.server's worker did: Starlette's JSONResponse refuses NaN, which a reply may hold.
    return Response(json.dumps(body).encode(), status, {"Connection": "close"} if close else None,
                    media_type="application/json")


async def _read_body(request: Request, timeout_s: float) -> bytes | None:
    """The whole body (:func:`reading.http_server.read_body`), its refusals in the worker's words.

    :raises BodyRefused: over MAX_BODY_BYTES (413), or nothing more arrived for ``timeout_s`` (408).
    """
    try:
        return await read_body(request, MAX_BODY_BYTES, timeout_s)
    except BodyRefused as exc:
        if exc.status == 413:
            raise BodyRefused(413, f"send a JSON body of 1 byte to {MAX_BODY_BYTES} bytes") from None
        raise BodyRefused(408, f"no byte of the body came for {timeout_s:g} s — send it whole") from None


def make_app(worker: EdgeWorker, timeout_s: float = SOCKET_TIMEOUT_S) -> Starlette:
    """The worker's HTTP API (module docstring) as an ASGI app.

    Parsing and admission run on the event loop, so a request beyond ``worker.entry.limit`` gets its 503 at
    once; each admitted read runs in a thread. The thread limiter has ``limit`` tokens and a read's place is
    given back only after its thread has returned its token, so an admitted read never waits for a thread.

    :param timeout_s: seconds a body may stall before the request is answered 408 and closed.
    """
    threads = anyio.CapacityLimiter(worker.entry.limit)

    async def health(request: Request) -> Response:
        return _reply(200, worker.snapshot().to_json())

    async def read(request: Request) -> Response:
        try:
            raw = await _read_body(request, timeout_s)
        except BodyRefused as exc:
            # Closed after the reply: a body left unread is never parsed as the next request.
            error = "timeout" if exc.status == 408 else "bad_request"
            return _reply(exc.status, {"error": error, "message": str(exc)}, close=True)
        if raw is None:  # the client went away mid-body: nothing to answer (uvicorn sends nothing)
            return _reply(400, {"error": "bad_request", "message": "the connection closed mid-body"})
        if not raw:
            return _reply(400, {"error": "bad_request", "message": f"send a JSON body of 1 byte to {MAX_BODY_BYTES} bytes"})
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _reply(400, {"error": "bad_request", "message": "the body is not JSON (or nested too deep)"})
        try:
            admitted = worker.admit(payload)
            if not isinstance(admitted, Admitted):
                return _reply(*admitted)
            try:
                # Never abandoned: a read on a thread is awaited to its end, by a stopping server too.
                status, body = await anyio.to_thread.run_sync(worker.serve, admitted, limiter=threads)
            finally:
                worker.release(admitted)
        except Exception as exc:  # a reply, never a dropped connection; the traceback goes to the log
            logger.exception("read failed")
            status, body = 500, {"error": "internal", "message": f"the worker failed ({type(exc).__name__})"}
        return _reply(status, body)

    async def elsewhere(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        return _reply(status, {"error": "not_found" if status == 404 else "method_not_allowed",
                               "message": _ROUTES_HINT})

    return Starlette(routes=[Route("/v1/health", health, methods=["GET"]), Route("/v1/read", read, methods=["POST"])],
                     exception_handlers={404: elsewhere, 405: elsewhere})


class WorkerServer(HttpServer):
    """The worker's HTTP server: :class:`reading.http_server.HttpServer` serving :func:`make_app` on a socket
    bound when it is made, in a thread of its own (signals stay with the caller: Ctrl-C or SIGTERM, turned into
    KeyboardInterrupt by ``app.console.stop_on_ctrl_c``, interrupt :meth:`serve_forever` in the calling thread,
    as they did with http.server, and :meth:`server_close` then stops it). A stopping worker answers its reads
    in flight first: exiting while llama.cpp reads in a thread crashed the process (SIGSEGV, with http.server
    too); a second Ctrl-C still stops it at once.
    """

    def __init__(self, worker: EdgeWorker, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        self.worker = worker
        super().__init__(make_app(worker, SOCKET_TIMEOUT_S), host, port, ssl_context=ssl_context,
                         timeout_s=max(1, round(SOCKET_TIMEOUT_S)), backlog=LISTEN_BACKLOG,
                         max_connections=MAX_CONNECTIONS, name="edge worker's HTTP server")


def make_server(worker: EdgeWorker, host: str = "127.0.0.1", port: int = 0,
                ssl_context: ssl.SSLContext | None = None) -> WorkerServer:
    """The worker's HTTP server, bound and listening (port 0: any free port; read ``server.server_address``).

    :param ssl_context: serve TLS with exactly this context (e.g. TLS 1.3 with client certificates required);
        None: plain HTTP.
    """
    return WorkerServer(worker, host, port, ssl_context)
