"""Helpers of the cloud tests: a fake OpenAI-compatible backend (a process-boundary fake that
counts calls; the real embedded backend is tested in test_cloud_embedded.py), a recording TCP
proxy, a listener that drops connections, and raw edge access to the gateway."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from cloud.certs import load_edge_material
from cloud.envelope import AesKey, new_request_id, now_ms, seal
from cloud.wire import ANSWER_PATH, DIRECTION_REQUEST, Envelope

CANARY = "QX7-CANARY-f3b9e1"  # appears nowhere in the code, the data or the protocol
FAKE_MODEL = "fake-llm"


class FakeOpenAI:
    """A tiny OpenAI-compatible completions server that records every completion request.

    :param text: completion text returned.
    :param logprobs: token logprobs returned.
    """

    def __init__(self, text: str = " Miret", logprobs: tuple[float, ...] = (-0.05, -0.1)) -> None:
        self.text = text
        self.logprobs = list(logprobs)
        self.status = 200
        self.delay_s = 0.0
        self.calls: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, obj: Any) -> None:
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                self._send(200, {"object": "list", "data": [{"id": FAKE_MODEL, "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.calls.append(body)
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                if fake.status != 200:
                    self._send(fake.status, {"error": {"message": f"boom: {body['prompt'][-40:]}"}})
                    return
                self._send(200, {
                    "model": FAKE_MODEL,
                    "choices": [{"index": 0, "text": fake.text, "finish_reason": "stop",
                                 "logprobs": {"token_logprobs": fake.logprobs}}],
                    "usage": {"prompt_tokens": 321, "completion_tokens": len(fake.logprobs)},
                })

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RecordingProxy:
    """A TCP proxy on 127.0.0.1 that records every byte in each direction."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up = bytearray()
        self.down = bytearray()
        self.connections = 0
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bytearray) -> None:
        try:
            while chunk := src.recv(65536):
                with self._lock:
                    record.extend(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.connections += 1
            self._socks += [client, upstream]
            for args in ((client, upstream, self.up), (upstream, client, self.down)):
                t = threading.Thread(target=self._pipe, args=args, daemon=True)
                t.start()
                self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


class CountingListener:
    """Accepts TCP connections and closes them at once (a gateway that is down mid-handshake)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.accepted = 0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self.listener.close()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    """Poll ``predicate`` (server threads record refusals asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class EdgeClient:
    """Raw HTTPS access to the gateway as an edge (its real client certificate), for refusal tests."""

    def __init__(self, material_dir: Path, url: str, edge: str = "edge-1") -> None:
        self.material = load_edge_material(material_dir, edge)
        self.http = httpx.Client(base_url=url, verify=self.material.ssl_context(), trust_env=False, timeout=10.0)

    def seal(self, payload: dict[str, Any], *, key: AesKey | None = None, edge: str | None = None,
             ts_ms: int | None = None, rid: str | None = None) -> Envelope:
        return seal(payload, key or self.material.aes, rid=rid or new_request_id(), edge=edge or self.material.name,
                    direction=DIRECTION_REQUEST, ts_ms=now_ms() if ts_ms is None else ts_ms)

    def post(self, body: bytes | Any) -> httpx.Response:
        return self.http.post(ANSWER_PATH, content=body, headers={"Content-Type": "application/json"})

    def close(self) -> None:
        self.http.close()


def question_payload(question: str = f"What is the capital of Zorvath Island? {CANARY}",
                     passage: str = f"Zorvath Island's capital is Miret. {CANARY}") -> dict[str, Any]:
    return {"question": question, "passages": [{"title": "Zorvath", "text": passage}], "max_tokens": 8}


class SharedBackend:
    """A view of the session-wide embedded backend whose close() (called by Gateway.stop) keeps it running."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name

    def warm_up(self) -> None:
        self.inner.warm_up()

    def complete(self, prompt: str, max_tokens: int, stop: tuple[str, ...]) -> Any:
        return self.inner.complete(prompt, max_tokens, stop)

    def close(self) -> None:
        pass
