"""An edge worker: one edge model answering reads over HTTP on 127.0.0.1 (`ecqa edge serve`).

    POST /v1/read   {"question": str, "documents": [{id, content, meta, score}]}
                    200 → EdgeAnswer JSON + {"worker": id}
                    503 {"error": "full"}: every slot busy and the queue full — try another worker
                    400 bad request · 413 passages over the context window · 500 the model failed
    GET  /v1/health the worker's registry entry (capabilities and live load)

A worker has ``concurrency`` slots (one model instance each) and admits at most ``queue`` more
requests waiting for a slot; beyond that it refuses at once (503) rather than letting a request
wait without bound. It measures its own speed at start-up, then heartbeats its entry into the
registry every ``ttl / 3`` seconds and withdraws it when it stops.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge.errors import ModelError
from edge.reader import EdgeReader, documents_from_json
from edge.registry import Registry, RegistryError, WorkerEntry

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 << 20
# Seconds a connection may sit without sending (a half-sent body, an idle keep-alive): then it is closed,
# so slow or stalled clients cannot hold the worker's threads.
SOCKET_TIMEOUT_S = 10.0
# Connections the kernel holds while the server accepts (Python's default is 5: a burst of 60 requests
# saw 34 connection resets, which a dispatcher reads as a dead worker). Every one accepted gets a reply,
# 503 when the worker is full.
LISTEN_BACKLOG = 1024
MAX_QUESTION_CHARS = 1000


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

    def read(self, payload: Any) -> tuple[int, dict[str, Any]]:
        """One read request: (HTTP status, JSON body)."""
        try:
            question, documents = check_read_request(payload)
        except ValueError as exc:
            return 400, {"error": "bad_request", "message": str(exc)}
        if not self._admit():
            snap = self.snapshot()
            return 503, {"error": "full", "message": f"worker {snap.id} is full ({snap.in_flight} admitted, limit "
                         f"{snap.limit}) — try another worker", "in_flight": snap.in_flight, "limit": snap.limit}
        t0 = time.perf_counter()
        try:
            reader = self._slots.get()
            waited = (time.perf_counter() - t0) * 1000.0
            try:
                ans = reader.read(question, documents)
            finally:
                self._slots.put(reader)
        except ModelError as exc:
            status = 413 if "context window" in str(exc) else 500
            return status, {"error": "prompt_too_long" if status == 413 else "model", "message": str(exc)}
        finally:
            with self._lock:
                self._admitted -= 1
        with self._lock:
            self._served += 1
        body = ans.to_json()
        body["timings"] = {**body["timings"], "worker_queue": waited}
        body["worker"] = self.entry.id
        return 200, body

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
        """Stop heartbeating and withdraw the entry (dispatchers stop sending at once)."""
        self._stop.set()
        if self.registry is not None:
            try:
                self.registry.remove(self.entry.id)
            except RegistryError as exc:
                logger.warning("could not withdraw %s: %s", self.entry.id, exc)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S  # applied to the connection's socket by StreamRequestHandler

    def log_message(self, fmt: str, *args: Any) -> None:  # requests are not logged above DEBUG
        logger.debug(fmt, *args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/v1/health":
            self._send(200, self.server.worker.snapshot().to_json())
        else:
            self._send(404, {"error": "not_found", "message": "use GET /v1/health or POST /v1/read"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/v1/read":
            self._send(404, {"error": "not_found", "message": "use POST /v1/read"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY_BYTES:
            # The body is left unread: the connection is closed after the reply, so no byte of it is ever
            # parsed as the next request.
            self.close_connection = True
            self._send(413 if length > MAX_BODY_BYTES else 400,
                       {"error": "bad_request", "message": f"send a JSON body of 1 byte to {MAX_BODY_BYTES} bytes"})
            return
        try:
            raw = self.rfile.read(length)
        except OSError:  # timed out or reset mid-body: nothing to answer
            self.close_connection = True
            return
        if len(raw) < length:  # the client closed before sending it all
            self.close_connection = True
            return
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self._send(400, {"error": "bad_request", "message": "the body is not JSON (or nested too deep)"})
            return
        try:
            status, body = self.server.worker.read(payload)
        except Exception as exc:  # a reply, never a dropped connection; the traceback goes to the log
            logger.exception("read failed")
            status, body = 500, {"error": "internal", "message": f"the worker failed ({type(exc).__name__})"}
        self._send(status, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], worker: EdgeWorker) -> None:
        self.worker = worker
        super().__init__(address, _Handler)


def make_server(worker: EdgeWorker, host: str = "127.0.0.1", port: int = 0) -> _Server:
    """The worker's HTTP server, bound (port 0: any free port; read ``server.server_address``)."""
    return _Server((host, port), worker)
