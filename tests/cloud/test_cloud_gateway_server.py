"""The gateway's HTTP server (uvicorn + Starlette on reading/http_server.py) over real mutual TLS on 127.0.0.1: what
the move to it adds — a stalled handshake, request or body closed within its timeout, an oversized body refused whole
without being read, a burst of connections all answered (200 or 503 "busy", never a reset), a stop that drops open
connections at once. The refusals it keeps (no certificate, another CA, TLS 1.2, every envelope check) are tested in
test_cloud_gateway.py against the same server."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cloud_helpers import EdgeClient, FakeOpenAI, question_payload, wait_for

import cloud.gateway as gateway_module
from cloud.backend import OpenAIBackend
from cloud.certs import load_edge_material, load_server_material
from cloud.gateway import Gateway
from cloud.wire import ANSWER_PATH

pytestmark = pytest.mark.network


def refused(gateway: Gateway, reason: str) -> int:
    return gateway.metrics.refusals().get(reason, 0)


@pytest.fixture
def short(monkeypatch: pytest.MonkeyPatch) -> float:
    """Every timeout of the gateway's server at 1 s (read when the gateway binds)."""
    monkeypatch.setattr(gateway_module, "IDLE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(gateway_module, "HANDSHAKE_TIMEOUT_S", 1.0)
    return 1.0


@pytest.fixture
def serving(material_dir: Path, fake_backend: FakeOpenAI) -> Iterator[Gateway]:
    """A gateway bound after the test's monkeypatches (the conftest's ``gateway`` binds with the defaults)."""
    gw = Gateway(load_server_material(material_dir), OpenAIBackend(fake_backend.url), port=0, max_envelope_bytes=64 * 1024)
    gw.start()
    yield gw
    gw.stop()


def edge_tls(material_dir: Path) -> ssl.SSLContext:
    return load_edge_material(material_dir, "edge-1").ssl_context()


def address(gw: Gateway) -> tuple[str, int]:
    host, port = gw.url.removeprefix("https://").rsplit(":", 1)
    return host, int(port)


def exchange(gw: Gateway, ctx: ssl.SSLContext | None, data: bytes) -> tuple[bytes, float]:
    """Send ``data`` over (mutual) TLS, read until the gateway closes: what it sent back, and the seconds it took."""
    t0 = time.monotonic()
    reply = b""
    with socket.create_connection(address(gw), timeout=30) as raw:
        try:
            s = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
            s.sendall(data)
            while chunk := s.recv(65536):
                reply += chunk
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
    return reply, time.monotonic() - t0


def sealed_post(client: EdgeClient, body: bytes, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    return (f"POST {ANSWER_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode() + body


# --- timeouts ---------------------------------------------------------------------------------------------
def test_a_half_sent_body_gets_408_and_is_closed_within_the_timeout(short: float, serving: Gateway,
                                                                    material_dir: Path, fake_backend: FakeOpenAI) -> None:
    client = EdgeClient(material_dir, serving.url)
    body = client.seal(question_payload()).to_bytes()
    client.close()
    reply, waited = exchange(serving, edge_tls(material_dir), sealed_post(client, body[: len(body) // 2], len(body)))
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower()
    assert json.loads(payload)["error"]["reason"] == "timeout"
    assert short - 0.2 < waited < short + 3
    assert fake_backend.calls == [] and refused(serving, "timeout") == 1


@pytest.mark.parametrize("sent", [b"", b"POST /v1/ans", f"POST {ANSWER_PATH} HTTP/1.1\r\nHost: x\r\n".encode()],
                         ids=["nothing", "half a request line", "half the headers"])
def test_a_request_that_stalls_before_its_headers_end_is_closed_within_the_timeout(
        short: float, serving: Gateway, material_dir: Path, sent: bytes) -> None:
    reply, waited = exchange(serving, edge_tls(material_dir), sent)
    assert reply == b"" and short - 0.2 < waited < short + 3


def test_a_stalled_handshake_is_closed_within_its_timeout(short: float, serving: Gateway) -> None:
    with socket.create_connection(address(serving), timeout=30) as raw:
        t0 = time.monotonic()
        assert raw.recv(1024) == b""  # no ClientHello sent: the gateway hangs up
        waited = time.monotonic() - t0
    assert short - 0.2 < waited < short + 3
    assert wait_for(lambda: refused(serving, "tls_handshake") == 1)


# --- bodies -------------------------------------------------------------------------------------------------
def test_an_oversized_body_is_refused_at_once_unread_and_never_parsed_as_a_request(
        gateway: Gateway, edge_client: EdgeClient, material_dir: Path, fake_backend: FakeOpenAI) -> None:
    """Content-Length over the limit and a body that would be a request of its own: the 413 comes without waiting
    for the body, the connection is closed, and the smuggled request is never answered."""
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    request = sealed_post(edge_client, smuggled, 10 << 20)
    reply, waited = exchange(gateway, edge_tls(material_dir), request)
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower()
    assert json.loads(payload)["error"]["reason"] == "too_large" and reply.count(b"HTTP/1.1") == 1
    assert waited < 3 and fake_backend.calls == [] and refused(gateway, "too_large") == 1


def test_a_request_that_does_not_parse_gets_the_gateways_json(gateway: Gateway, material_dir: Path) -> None:
    reply, _ = exchange(gateway, edge_tls(material_dir), b"POST /v1/answer HTTP/1.1\r\nContent-Length: x\r\n\r\n")
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
    assert json.loads(payload)["error"]["reason"] == "malformed"
    assert gateway.metrics.render().count('path="other",code="400"} 1') == 1


# --- load -------------------------------------------------------------------------------------------------
def test_a_burst_of_connections_is_answered_200_or_503_never_reset(monkeypatch: pytest.MonkeyPatch, material_dir: Path,
                                                                   fake_backend: FakeOpenAI) -> None:
    """60 edges at once against a limit of 8 connections: each gets a reply, 200 or 503 "busy" (retry), none a
    reset or a refused connection (the backlog holds them while the gateway accepts); then it serves again."""
    monkeypatch.setattr(gateway_module, "MAX_CONNECTIONS", 8)
    fake_backend.delay_s = 0.02  # each answer holds its connection a while (3 backend calls)
    gw = Gateway(load_server_material(material_dir), OpenAIBackend(fake_backend.url), port=0).start()
    outcomes: list[int | str] = []
    lock = threading.Lock()
    start = threading.Barrier(60)

    def one() -> None:
        client = EdgeClient(material_dir, gw.url)
        body = client.seal(question_payload()).to_bytes()
        start.wait()
        try:
            resp = client.post(body)
            outcome: int | str = resp.status_code
            if resp.status_code == 503:
                assert resp.json()["error"]["reason"] == "busy"
        except httpx.TransportError as exc:
            outcome = type(exc).__name__
        finally:
            client.close()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(60)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        after = EdgeClient(material_dir, gw.url)
        try:
            served = after.post(after.seal(question_payload()).to_bytes()).status_code  # the burst gone: served again
        finally:
            after.close()
    finally:
        gw.stop()
    counts = Counter(outcomes)
    assert len(outcomes) == 60 and set(counts) <= {200, 503}, counts
    assert counts[503] >= 1 and served == 200, counts  # the limit was reached, and it let go
    assert gw.metrics.refusals()["busy"] == counts[503]


# --- stopping ---------------------------------------------------------------------------------------------
def test_stop_drops_open_connections_and_does_not_wait_for_a_reading(material_dir: Path,
                                                                     fake_backend: FakeOpenAI) -> None:
    gw = Gateway(load_server_material(material_dir), OpenAIBackend(fake_backend.url), port=0).start()
    idle = EdgeClient(material_dir, gw.url)
    assert idle.http.get("/healthz").status_code == 200  # a kept-alive connection, idle now
    busy = EdgeClient(material_dir, gw.url)
    fake_backend.delay_s = 5.0
    outcome: list[object] = []
    t = threading.Thread(target=lambda: outcome.append(_post_or_error(busy)), daemon=True)
    t.start()
    assert wait_for(lambda: len(fake_backend.calls) == 1)  # the reading waits on the backend
    t0 = time.monotonic()
    gw.stop()
    stopped_in = time.monotonic() - t0
    t.join(10)
    try:
        assert stopped_in < 3 and outcome and isinstance(outcome[0], httpx.TransportError), outcome
        with pytest.raises(httpx.TransportError):
            idle.http.get("/healthz")  # its connection was dropped, and nothing listens any more
    finally:
        idle.close()
        busy.close()


def _post_or_error(client: EdgeClient) -> object:
    try:
        return client.post(client.seal(question_payload()).to_bytes())
    except httpx.TransportError as exc:
        return exc
