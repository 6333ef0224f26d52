"""The gateway over real TLS on 127.0.0.1: the happy path, each refusal (distinct reason, no
backend call), health and metrics, and what never reaches logs or error bodies."""

from __future__ import annotations

import base64
import logging
import os
import re
import ssl
from pathlib import Path

import httpx
import pytest
from cloud_helpers import (
    CANARY,
    FAKE_MODEL,
    EdgeClient,
    FakeOpenAI,
    question_payload,
    wait_for,
)

from cloud.certs import load_edge_material
from cloud.envelope import AesKey, now_ms, unseal
from cloud.gateway import Gateway
from cloud.wire import ANSWER_PATH, DIRECTION_REPLY, AnswerReply, Envelope

pytestmark = pytest.mark.network


def refusal(resp: httpx.Response, status: int, reason: str) -> str:
    """Check a refusal's status and reason; returns its message."""
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["reason"] == reason
    assert CANARY not in resp.text  # error bodies never echo the request
    return str(err["message"])


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    text = gateway.metrics.render()
    label = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name + (f"{{{label}}}" if label else "")) + r" (\S+)"
    found = re.search("^" + pattern + "$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def refused(gateway: Gateway, reason: str) -> float:
    return metric(gateway, "ecqa_gateway_refusals_total", reason=reason)


def test_answers_a_sealed_request(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI) -> None:
    env = edge_client.seal(question_payload())
    resp = edge_client.post(env.to_bytes())
    assert resp.status_code == 200
    reply_env = Envelope.from_bytes(resp.content)
    assert reply_env.rid == env.rid and reply_env.nonce != env.nonce
    assert CANARY not in resp.text and "Miret" not in resp.text  # the reply is sealed too
    reply = AnswerReply.from_dict(unseal(reply_env, edge_client.material.aes, edge="edge-1", direction=DIRECTION_REPLY))
    assert (reply.answer, reply.model) == ("Miret", FAKE_MODEL)
    assert reply.answer_spans == ((28, 33),)
    assert 0.86 < reply.confidence < 0.93  # exp(mean(-0.05, -0.1))
    assert reply.usage == {"prompt_tokens": 321, "completion_tokens": 2}
    assert {"open", "prompt", "backend", "parse", "total"} <= set(reply.timings_ms)
    assert reply.timings_ms["total"] >= reply.timings_ms["backend"] > 0
    # The backend got one greedy completion request built from the question and the passage.
    assert len(fake_backend.calls) == 1
    call = fake_backend.calls[0]
    assert call["prompt"].endswith(f"Passage: Zorvath Island's capital is Miret. {CANARY}\n"
                                   f"Question: What is the capital of Zorvath Island? {CANARY}\nAnswer:")
    assert (call["temperature"], call["repeat_penalty"], call["repetition_penalty"], call["logprobs"]) == (0.0, 1.0, 1.0, 1)
    assert (call["stop"], call["max_tokens"], call["model"]) == (["\n"], 8, FAKE_MODEL)
    assert metric(gateway, "ecqa_gateway_requests_total", path=ANSWER_PATH, code="200") == 1
    assert metric(gateway, "ecqa_gateway_backend_latency_seconds_count") == 1


# --- refused at the TLS handshake --------------------------------------------------------------
def _raw_tls_client(ctx: ssl.SSLContext, url: str) -> httpx.Client:
    return httpx.Client(base_url=url, verify=ctx, trust_env=False, timeout=5.0)


def _expect_handshake_refusal(gateway: Gateway, ctx: ssl.SSLContext, reason: str) -> None:
    with _raw_tls_client(ctx, gateway.url) as client, pytest.raises(httpx.TransportError) as info:
        client.post(ANSWER_PATH, content=b"{}")
    assert isinstance(info.value, (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError))
    assert wait_for(lambda: refused(gateway, reason) == 1), gateway.metrics.render()


def test_no_client_certificate_fails_the_handshake(gateway: Gateway, material_dir: Path, fake_backend: FakeOpenAI) -> None:
    ctx = ssl.create_default_context(cafile=str(material_dir / "ca.pem"))  # trusts the gateway, presents nothing
    _expect_handshake_refusal(gateway, ctx, "no_client_cert")
    assert fake_backend.calls == [] and refused(gateway, "untrusted_client_cert") == 0


def test_certificate_from_another_ca_fails_the_handshake(
    gateway: Gateway, material_dir: Path, stranger_dir: Path, fake_backend: FakeOpenAI
) -> None:
    # Same edge name, right server CA, but the client certificate is signed by a stranger's CA.
    ctx = ssl.create_default_context(cafile=str(material_dir / "ca.pem"))
    ctx.load_cert_chain(stranger_dir / "edges" / "edge-1.pem", stranger_dir / "edges" / "edge-1.key")
    _expect_handshake_refusal(gateway, ctx, "untrusted_client_cert")
    assert fake_backend.calls == [] and refused(gateway, "no_client_cert") == 0


def test_tls12_is_refused(gateway: Gateway, material_dir: Path, fake_backend: FakeOpenAI) -> None:
    mat = load_edge_material(material_dir, "edge-1")
    ctx = ssl.create_default_context(cafile=str(mat.ca_cert))
    ctx.load_cert_chain(mat.cert, mat.key)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    _expect_handshake_refusal(gateway, ctx, "tls_handshake")
    assert fake_backend.calls == []


# --- refused after the handshake, before the backend --------------------------------------------
def test_unknown_key_id(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI) -> None:
    env = edge_client.seal(question_payload(), key=AesKey("k-unknown", os.urandom(32)))
    msg = refusal(edge_client.post(env.to_bytes()), 401, "unknown_key")
    assert "key id is unknown" in msg and "aes.key" in msg
    assert fake_backend.calls == [] and refused(gateway, "unknown_key") == 1


def test_tampered_ciphertext(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI) -> None:
    env = edge_client.seal(question_payload())
    ct = bytearray(env.ct)
    ct[5] ^= 0x80
    bad = Envelope(kid=env.kid, rid=env.rid, ts_ms=env.ts_ms, nonce=env.nonce, ct=bytes(ct))
    assert "does not authenticate" in refusal(edge_client.post(bad.to_bytes()), 401, "bad_seal")
    assert fake_backend.calls == [] and refused(gateway, "bad_seal") == 1


@pytest.mark.parametrize("field", ["rid", "ts"])
def test_tampered_associated_data(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI, field: str) -> None:
    env = edge_client.seal(question_payload())
    bad = Envelope(kid=env.kid, rid="f" * 32 if field == "rid" else env.rid, ts_ms=env.ts_ms + (1 if field == "ts" else 0),
                   nonce=env.nonce, ct=env.ct)
    refusal(edge_client.post(bad.to_bytes()), 401, "bad_seal")
    assert fake_backend.calls == [] and refused(gateway, "bad_seal") == 1


def test_envelope_of_another_edge(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI) -> None:
    # Sealed as edge-2 but sent over edge-1's certificate: the identity in the AAD does not match.
    env = edge_client.seal(question_payload(), edge="edge-2")
    refusal(edge_client.post(env.to_bytes()), 401, "bad_seal")
    assert fake_backend.calls == []


@pytest.mark.parametrize("offset_s", [-31, 31])
def test_timestamp_outside_the_window(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI, offset_s: int) -> None:
    env = edge_client.seal(question_payload(), ts_ms=now_ms() + offset_s * 1000)  # correctly sealed, only late/early
    assert "more than 30 s from the gateway's clock" in refusal(edge_client.post(env.to_bytes()), 401, "stale_timestamp")
    assert fake_backend.calls == [] and refused(gateway, "stale_timestamp") == 1


def test_timestamp_inside_the_window_is_accepted(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI) -> None:
    env = edge_client.seal(question_payload(), ts_ms=now_ms() - 25_000)
    assert edge_client.post(env.to_bytes()).status_code == 200 and len(fake_backend.calls) == 1


def test_replayed_nonce(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI) -> None:
    body = edge_client.seal(question_payload()).to_bytes()
    assert edge_client.post(body).status_code == 200
    assert "already received" in refusal(edge_client.post(body), 409, "replay")
    assert len(fake_backend.calls) == 1 and refused(gateway, "replay") == 1


def test_oversized_envelope_is_not_even_read(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI) -> None:
    noise = base64.b64encode(os.urandom(60_000)).decode()  # incompressible: > 64 KiB sealed
    body = edge_client.seal(question_payload(passage=noise)).to_bytes()
    assert len(body) > 64 * 1024
    assert "over 65536 bytes" in refusal(edge_client.post(body), 413, "too_large")
    assert fake_backend.calls == [] and refused(gateway, "too_large") == 1


def test_payload_that_inflates_over_the_limit(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI) -> None:
    body = edge_client.seal(question_payload(passage="a" * 5_000_000)).to_bytes()
    assert len(body) < 2000  # passes the envelope limit, then the declared size is refused
    assert "decompresses to more than" in refusal(edge_client.post(body), 413, "too_large")
    assert fake_backend.calls == []


@pytest.mark.parametrize("body", [f"{{not json {CANARY}".encode(), b'{"v": 1}', f'["{CANARY}"]'.encode()])
def test_malformed_json(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI, body: bytes) -> None:
    refusal(edge_client.post(body), 400, "malformed")
    assert fake_backend.calls == [] and refused(gateway, "malformed") == 1


def test_chunked_body_without_length(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI) -> None:
    body = edge_client.seal(question_payload()).to_bytes()
    resp = edge_client.http.post(ANSWER_PATH, content=iter([body[:10], body[10:]]))  # an iterator is sent chunked
    refusal(resp, 411, "malformed")
    assert fake_backend.calls == []


def test_authenticated_but_invalid_payload(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI) -> None:
    env = edge_client.seal({"question": "", "passages": [], "note": CANARY})
    assert "'question'" in refusal(edge_client.post(env.to_bytes()), 400, "bad_payload")
    assert fake_backend.calls == []


def test_backend_failure_is_a_502_that_quotes_nothing(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI) -> None:
    fake_backend.status = 500  # its error message quotes the prompt (with the canary)
    resp = edge_client.post(edge_client.seal(question_payload()).to_bytes())
    assert "backend answered HTTP 500" in refusal(resp, 502, "backend_error")
    assert len(fake_backend.calls) == 1
    assert metric(gateway, "ecqa_gateway_backend_errors_total") == 1


# --- health, metrics, logs -----------------------------------------------------------------------
def test_health_and_metrics(gateway: Gateway, edge_client: EdgeClient) -> None:
    health = edge_client.http.get("/healthz")
    assert health.status_code == 200
    data = health.json()
    assert set(data) == {"status", "backend", "uptime_s"} and (data["status"], data["backend"]) == ("ok", FAKE_MODEL)
    edge_client.post(b"nope")
    edge_client.post(edge_client.seal(question_payload()).to_bytes())
    resp = edge_client.http.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = resp.text
    assert '# TYPE ecqa_gateway_refusals_total counter' in text
    assert 'ecqa_gateway_refusals_total{reason="malformed"} 1' in text
    assert 'ecqa_gateway_refusals_total{reason="replay"} 0' in text  # every reason is exported from the start
    assert 'ecqa_gateway_requests_total{path="/v1/answer",code="200"} 1' in text
    assert 'ecqa_gateway_requests_total{path="/v1/answer",code="400"} 1' in text
    assert 'ecqa_gateway_backend_latency_seconds_bucket{le="+Inf"} 1' in text
    assert edge_client.http.get("/nope").status_code == 404


def test_logs_never_contain_plaintext_keys_or_ciphertext(
    gateway: Gateway, edge_client: EdgeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    envs = [edge_client.seal(question_payload()) for _ in range(2)]
    assert edge_client.post(envs[0].to_bytes()).status_code == 200
    assert edge_client.post(envs[0].to_bytes()).status_code == 409  # replay
    tampered = Envelope(kid=envs[1].kid, rid=envs[1].rid, ts_ms=envs[1].ts_ms, nonce=envs[1].nonce, ct=envs[1].ct[:-1] + b"\0")
    assert edge_client.post(tampered.to_bytes()).status_code == 401
    assert edge_client.post(f"garbage {CANARY}".encode()).status_code == 400
    logged = caplog.text
    assert envs[0].rid in logged and "replay" in logged and "bad_seal" in logged  # the logs do say what happened
    key = edge_client.material.aes.secret_bytes()
    for secret in (CANARY, "Zorvath", "Miret", key.hex(), base64.b64encode(key).decode(),
                   base64.b64encode(envs[0].ct).decode()[:24], base64.b64encode(envs[0].nonce).decode()):
        assert secret not in logged, secret
