"""Helpers of the cloud tests: a fake OpenAI-compatible backend (a process-boundary fake that
counts calls; the real embedded backend is tested in test_cloud_embedded.py), a recording TCP
proxy, a listener that drops connections, and raw edge access to the gateway."""

from __future__ import annotations

import json
import math
import socket
import sys
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
# The fake probe's default P(yes): above the packaged cloud_min_answerable, so its answers are kept.
FAKE_P_YES = 0.95
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"


class FakeOpenAI:
    """A tiny OpenAI-compatible server (``/v1/chat/completions`` and ``/v1/completions``) that
    records every request body in :attr:`calls`, in the order they came.

    A request for one token with top logprobs is a yes/no step of the gateway's reading — the
    answerability probe, or the check of an answer: its first token is "Yes", with the top alternatives
    "Yes"/"No" in the ratio ``p_yes`` : ``1 - p_yes`` (and a tenth of the mass on an unrelated token,
    which must not count). Any other request is an answer: ``text`` with ``logprobs`` (and, when asked
    for, the first token's top alternatives, "un" of "unanswerable" among them), in the format of the
    endpoint it came to.

    :param text: the answer's text.
    :param logprobs: the answer's token logprobs.
    :param p_yes: the probe's P(yes) / (P(yes) + P(no)).
    """

    # Usage the fake reports: the probe's prompt is longer (the yes/no question is appended)
    # and mostly cached, as with a prefix-caching server.
    ANSWER_PROMPT_TOKENS = 321
    PROBE_PROMPT_TOKENS = 333
    PROBE_CACHED_TOKENS = 320

    def __init__(self, text: str = " Miret", logprobs: tuple[float, ...] = (-0.05, -0.1), p_yes: float = FAKE_P_YES) -> None:
        self.text = text
        self.logprobs = list(logprobs)
        self.p_yes = p_yes
        self.status = 200
        self.error_message = ""  # the error text sent with a non-200 status ('' = one quoting the prompt)
        self.error_fields: dict[str, Any] = {}  # more fields of that error object (type, n_ctx, …)
        self.max_model_len: int | None = None  # reported by /v1/models, as vLLM does
        self.delay_s = 0.0
        self.calls: list[dict[str, Any]] = []
        self.paths: list[str] = []  # the endpoint of each call, parallel to calls
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
                card: dict[str, Any] = {"id": FAKE_MODEL, "object": "model"}
                if fake.max_model_len:
                    card["max_model_len"] = fake.max_model_len
                self._send(200, {"object": "list", "data": [card]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path not in (CHAT_PATH, COMPLETIONS_PATH):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                fake.calls.append(body)
                fake.paths.append(self.path)
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                if fake.status != 200:
                    # Like real servers, the error message quotes the request (the gateway must not).
                    self._send(fake.status, {"error": {"message": fake.error_message or f"boom: {prompt_text(body)[-40:]}",
                                                         **fake.error_fields}})
                    return
                self._send(200, fake._reply(body, chat=self.path == CHAT_PATH))

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def probe_calls(self) -> list[dict[str, Any]]:
        """The answerability probes among :attr:`calls`."""
        return [c for c in self.calls if is_probe(c) and not is_verify(c)]

    @property
    def verify_calls(self) -> list[dict[str, Any]]:
        """The checks of an answer ("does the passage state that X answers the question?")."""
        return [c for c in self.calls if is_verify(c)]

    @property
    def answer_calls(self) -> list[dict[str, Any]]:
        """The calls that are not yes/no steps: the answer requests."""
        return [c for c in self.calls if not is_probe(c)]

    def probe_top(self) -> dict[str, float]:
        """The probe's first-token top logprobs (tokens with probability 0 left out)."""
        mass = {"Yes": 0.9 * self.p_yes, "No": 0.9 * (1.0 - self.p_yes), " The": 0.1}
        return {t: math.log(p) for t, p in mass.items() if p > 0}

    def _reply(self, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        probe = is_probe(body)
        if probe:
            top = self.probe_top()
            text, tokens, lps, tops = "Yes", ["Yes"], [top["Yes"]], [top]
            usage = {"prompt_tokens": self.PROBE_PROMPT_TOKENS, "completion_tokens": 1,
                     "prompt_tokens_details": {"cached_tokens": self.PROBE_CACHED_TOKENS}}
        else:
            text, lps = self.text, list(self.logprobs)
            asked = body.get("top_logprobs") or (body.get("logprobs") if not isinstance(body.get("logprobs"), bool) else 0)
            tokens = _pieces(text, len(lps))
            tops = [{tokens[0]: lps[0], "un": math.log(0.02)}] if asked and lps else []
            usage = {"prompt_tokens": self.ANSWER_PROMPT_TOKENS, "completion_tokens": len(lps)}
        if chat:
            alternatives = [[{"token": k, "logprob": v, "bytes": None} for k, v in top.items()] for top in tops]
            content = [{"token": tok, "logprob": lp, "bytes": None,
                        "top_logprobs": alternatives[i] if i < len(alternatives) else []}
                       for i, (tok, lp) in enumerate(zip(tokens, lps))]
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                      "logprobs": {"content": content} if body.get("logprobs") else None}
        else:
            logprobs: dict[str, Any] = {"token_logprobs": lps}
            if tops:  # with the top alternatives asked for, the tokens come too
                logprobs |= {"tokens": tokens, "top_logprobs": tops}
            choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": logprobs}
        return {"model": FAKE_MODEL, "choices": [choice], "usage": usage}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up during delay_s (a timeout test, a gateway stopped mid-call) resets
        # the connection: expected, not worth a traceback on stderr.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def is_probe(call: dict[str, Any]) -> bool:
    """Whether a recorded request is the answerability probe: one token, with top logprobs."""
    logprobs = call.get("logprobs")
    tops = call.get("top_logprobs") or (logprobs if isinstance(logprobs, int) and not isinstance(logprobs, bool)
                                        and logprobs > 1 else 0)
    return call.get("max_tokens") == 1 and bool(tops)


def is_verify(call: dict[str, Any]) -> bool:
    """Whether a recorded request checks an answer against its passage (a yes/no step naming the answer)."""
    text = prompt_text(call).rsplit("\n", 1)[-1]
    return is_probe(call) and ("Does the passage state that" in text or "say that" in text)


def prompt_text(call: dict[str, Any]) -> str:
    """What the model was given: the completion prompt, or the chat messages' contents joined."""
    if "messages" in call:
        return "\n".join(str(m.get("content", "")) for m in call["messages"])
    return str(call.get("prompt", ""))


def _pieces(text: str, n: int) -> list[str]:
    """``text`` cut into ``n`` non-empty tokens (as many as there are logprobs)."""
    if n <= 0:
        return []
    cuts = [round(i * len(text) / n) for i in range(n + 1)]
    return [text[a:b] or "·" for a, b in zip(cuts, cuts[1:])]


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

    @property
    def prompt_family(self) -> str:
        return str(self.inner.prompt_family)

    def warm_up(self) -> None:
        self.inner.warm_up()

    def complete(self, prompt: str, max_tokens: int, stop: tuple[str, ...], top_logprobs: int = 0) -> Any:
        return self.inner.complete(prompt, max_tokens, stop, top_logprobs)

    def chat(self, messages: list[dict[str, str]], max_tokens: int, stop: tuple[str, ...] = (),
             top_logprobs: int = 0) -> Any:
        return self.inner.chat(messages, max_tokens, stop, top_logprobs)

    def close(self) -> None:
        pass
