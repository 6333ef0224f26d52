"""The worker's HTTP server in process (uvicorn + Starlette, edge/worker.py): mutual TLS with the exact context it
is given (a CA, server and client certificates made by `cryptography` through `cloud init`'s own code), its
socket bound before it serves, shutdown, the timeouts and body limits of a real socket, and admission that
never waits behind a read (a real SmolLM2-135M reading in a thread). The same server run by `ecqa edge serve`
is tested in test_worker_http.py."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from worker_helpers import SMALL_MODEL, read_request

import edge.worker as worker_module
from cloud.certs import init_material, load_edge_material, load_server_material
from edge.answer_parser import AnswerParser
from edge.prompt_builder import EdgePromptBuilder
from edge.reader import EdgeReader
from edge.registry import WorkerEntry
from edge.slm_generator import SlmGenerator
from edge.worker import MAX_BODY_BYTES, EdgeWorker, WorkerServer, make_server

pytestmark = pytest.mark.network

DEV_A = Path(__file__).resolve().parents[2] / "data" / "squad-v2-dev-a.json"


def reader(load: bool = False) -> EdgeReader:
    """The smallest real edge reader; unloaded, for tests of endpoints that never read."""
    r = EdgeReader(EdgePromptBuilder(), SlmGenerator(model_path=SMALL_MODEL, n_threads=1), AnswerParser())
    return r.warm_up() if load else r


def idle_worker(wid: str = "srv-w") -> EdgeWorker:
    return EdgeWorker([reader()], WorkerEntry(id=wid, url="", model=SMALL_MODEL), queue_limit=0)


@contextmanager
def serving(worker: EdgeWorker, ssl_context: ssl.SSLContext | None = None) -> Iterator[WorkerServer]:
    server = make_server(worker, ssl_context=ssl_context)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.server_close()
        t.join(10)
        assert not t.is_alive()


def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=30, context=context) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"{url}/v1/read", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def url_of(server: WorkerServer, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.server_address[1]}"


def exchange(server: WorkerServer, data: bytes, wrap: ssl.SSLContext | None = None) -> bytes:
    """Send raw bytes, read until the server closes: everything it sent back ('' if nothing)."""
    with socket.create_connection(server.server_address, timeout=30) as raw:
        reply = b""
        try:
            s = wrap.wrap_socket(raw, server_hostname="127.0.0.1") if wrap else raw  # the handshake may fail here
            s.sendall(data)
            while chunk := s.recv(65536):
                reply += chunk
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
        return reply


# --- mutual TLS -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A throwaway CA with the gateway's server certificate (SANs localhost, 127.0.0.1) and a client one; and a
    second, stranger CA with its own client certificate."""
    ours, theirs = tmp_path_factory.mktemp("ours"), tmp_path_factory.mktemp("theirs")
    init_material(ours / "cloud", edges=["dispatcher"])
    init_material(theirs / "cloud", edges=["dispatcher"])
    stranger = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts our server, holds a certificate of another CA
    stranger.load_verify_locations(ours / "cloud" / "ca.pem")
    stranger.load_cert_chain(theirs / "cloud" / "edges" / "dispatcher.pem", theirs / "cloud" / "edges" / "dispatcher.key")
    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.load_verify_locations(ours / "cloud" / "ca.pem")
    tls12 = load_edge_material(ours / "cloud", "dispatcher").ssl_context()
    tls12.minimum_version = tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    return {"server": load_server_material(ours / "cloud").ssl_context(),  # TLS 1.3 only, client cert required
            "client": load_edge_material(ours / "cloud", "dispatcher").ssl_context(), "stranger": stranger,
            "no_cert": no_cert, "tls12": tls12}


def test_tls_answers_a_client_with_a_certificate_of_the_ca(fleet: dict[str, Any]) -> None:
    with serving(idle_worker("tls-w"), fleet["server"]) as server:
        status, health = get(f"{url_of(server, 'https')}/v1/health", fleet["client"])
        with socket.create_connection(server.server_address) as raw, \
                fleet["client"].wrap_socket(raw, server_hostname="127.0.0.1") as s:
            version = s.version()
    assert status == 200 and health["id"] == "tls-w" and health["in_flight"] == 0
    assert server.tls and version == "TLSv1.3"


@pytest.mark.parametrize("client", ["no_cert", "stranger", "tls12", "plain"])
def test_tls_refuses_any_other_client_before_a_byte_of_http(fleet: dict[str, Any], client: str) -> None:
    """No certificate, one from another CA, TLS 1.2 (the context allows 1.3 only: it is the context used,
    not one uvicorn made), plain HTTP: the handshake fails and nothing of HTTP comes back."""
    with serving(idle_worker(), fleet["server"]) as server:
        request = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
        reply = exchange(server, request, None if client == "plain" else fleet[client])
        assert b"HTTP/1.1 200" not in reply and b'"in_flight"' not in reply
        assert get(f"{url_of(server, 'https')}/v1/health", fleet["client"])[0] == 200  # still serving the others


# --- the server's life --------------------------------------------------------------------------------
def test_the_address_is_bound_when_make_server_returns_and_served_once_it_serves() -> None:
    server = make_server(idle_worker())
    try:
        early = socket.create_connection(server.server_address, timeout=30)  # queued by the kernel already
        early.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        t = threading.Thread(target=server.serve_forever, daemon=True)
        t.start()
        reply = b""
        while chunk := early.recv(65536):
            reply += chunk
        early.close()
        assert reply.startswith(b"HTTP/1.1 200") and b'"id": "srv-w"' in reply
        t0 = time.monotonic()
        server.shutdown()  # from this thread, while serve_forever runs in another
        t.join(5)
        assert not t.is_alive() and time.monotonic() - t0 < 3
    finally:
        server.server_close()
    with pytest.raises(OSError):
        socket.create_connection(server.server_address, timeout=5).close()


def test_unknown_paths_and_methods_get_json_saying_what_to_use() -> None:
    with serving(idle_worker()) as server:
        assert get(f"{url_of(server)}/v2/read") == (404, {"error": "not_found",
                                                        "message": "use GET /v1/health or POST /v1/read"})
        status, body = post(url_of(server), b"{}")
        assert status == 400 and body["error"] == "bad_request"
        req = urllib.request.Request(f"{url_of(server)}/v1/health", data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=30)
        assert exc.value.code == 405 and json.loads(exc.value.read())["message"].startswith("use GET /v1/health")


# --- timeouts and bodies --------------------------------------------------------------------------------
@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(worker_module, "SOCKET_TIMEOUT_S", 1.0)  # read by make_server
    return 1.0


@pytest.mark.parametrize("sent", [b"", b"GET /v1/hea", b"POST /v1/read HTTP/1.1\r\nHost: x\r\n"],
                         ids=["nothing", "half a request line", "half the headers"])
def test_a_connection_that_stalls_before_its_headers_end_is_closed_within_the_timeout(short_timeout: float,
                                                                                      sent: bytes) -> None:
    with serving(idle_worker()) as server:
        t0 = time.monotonic()
        reply = exchange(server, sent)
        waited = time.monotonic() - t0
    assert reply == b"" and short_timeout - 0.2 < waited < short_timeout + 3


def test_an_idle_keep_alive_connection_is_closed_within_the_timeout(short_timeout: float) -> None:
    with serving(idle_worker()) as server:
        t0 = time.monotonic()
        reply = exchange(server, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")  # kept alive, then idle
        waited = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 200") and reply.count(b"HTTP/1.1") == 1
    assert short_timeout - 0.2 < waited < short_timeout + 3


def test_a_stalled_body_gets_408_and_the_connection_is_closed(short_timeout: float) -> None:
    worker = idle_worker()
    with serving(worker) as server:
        t0 = time.monotonic()
        reply = exchange(server, b"POST /v1/read HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"quest")
        waited = time.monotonic() - t0
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
    assert json.loads(body)["error"] == "timeout" and short_timeout - 0.2 < waited < short_timeout + 3
    assert worker.snapshot().in_flight == 0


def _chunked(data: bytes, size: int) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size]) for i in range(0, len(data), size))


def test_a_chunked_body_is_read_whole() -> None:
    body = json.dumps({"question": "Who?", "documents": [{"id": "d", "content": "x", "meta": {}, "score": [1]}]}).encode()
    with serving(idle_worker()) as server:
        reply = exchange(server, b"POST /v1/read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                 b"Connection: close\r\n\r\n" + _chunked(body, 7) + b"0\r\n\r\n")
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and "bad documents" in json.loads(payload)["message"]  # it was parsed


def test_a_chunked_body_over_the_limit_is_cut_as_it_streams() -> None:
    """Its end never sent: a server that waited for it would never answer; the 413 comes at the limit."""
    with serving(idle_worker()) as server, socket.create_connection(server.server_address, timeout=30) as s:
        s.sendall(b"POST /v1/read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(MAX_BODY_BYTES // 65536 + 1):
                s.sendall(_chunked(b"[" * 65536, 65536))
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = b""
        try:
            while data := s.recv(65536):
                reply += data
        except ConnectionResetError:  # what we sent past the limit, left unread when it closed
            pass
    assert reply.startswith(b"HTTP/1.1 413") and reply.count(b"HTTP/1.1") == 1 and b"connection: close" in reply


# --- admission and reads in threads (a real model) -----------------------------------------------------
@pytest.mark.slow
def test_admission_answers_at_once_while_a_read_runs_in_its_thread() -> None:
    """Concurrency 1, no queue: while the model reads, /v1/health and a second read's 503 come back at once
    (the read runs off the event loop; admission never waits for a thread), then the read's 200."""
    worker = EdgeWorker([reader(load=True)], WorkerEntry(id="adm-w", url="", model=SMALL_MODEL), queue_limit=0)
    doc = json.loads(DEV_A.read_text())
    texts = sorted({p["context"] for a in doc["data"] for p in a["paragraphs"]}, key=len, reverse=True)[:2]
    hold = json.dumps(read_request("What is this text about?", texts)).encode()
    with serving(worker) as server:
        url = url_of(server)
        first: list[tuple[int, dict[str, Any]]] = []
        t = threading.Thread(target=lambda: first.append(post(url, hold)), daemon=True)
        t.start()
        deadline = time.monotonic() + 30
        while worker.snapshot().in_flight < 1:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        timings = []
        for _ in range(3):
            t0 = time.monotonic()
            health = get(f"{url}/v1/health")
            refused = post(url, hold)
            timings.append(time.monotonic() - t0)
            assert health[0] == 200 and health[1]["in_flight"] == 1
            assert refused[0] == 503 and refused[1]["error"] == "full" and refused[1]["limit"] == 1
        still_reading = t.is_alive()
        t.join(120)
    assert still_reading and max(timings) < 1.0, timings  # a read takes seconds; these took milliseconds
    (status, answer), = first
    assert status == 200 and answer["worker"] == "adm-w" and "worker_queue" in answer["timings"]
    snap = worker.snapshot()
    assert (snap.in_flight, snap.served, snap.rejected) == (0, 1, 3)


def test_read_of_the_worker_still_answers_its_in_process_callers() -> None:
    worker = idle_worker()
    assert worker.read({"question": ""})[0] == 400
    worker.entry = replace(worker.entry, concurrency=0)  # limit 0: always full
    status, body = worker.read({"question": "Who?", "documents": []})
    assert status == 503 and body["error"] == "full" and worker.snapshot().in_flight == 0
    worker.stop()
    status, body = worker.read({"question": "Who?", "documents": []})
    assert status == 503 and body["error"] == "stopping"
