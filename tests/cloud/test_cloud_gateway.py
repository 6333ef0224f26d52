"""The gateway over real TLS on 127.0.0.1: the happy path, each refusal (distinct reason, no
backend call), health and metrics, and what never reaches logs or error bodies."""

from __future__ import annotations

import base64
import logging
import math
import os
import re
import ssl
from pathlib import Path

import httpx
import pytest
from cloud_helpers import (
    CANARY,
    CHAT_PATH,
    COMPLETIONS_PATH,
    FAKE_MODEL,
    FAKE_P_YES,
    EdgeClient,
    FakeOpenAI,
    question_payload,
    wait_for,
)

from cloud.backend import OpenAIBackend
from cloud.backend_server import CONTEXT_ERROR_TYPE
from cloud.certs import load_edge_material, load_server_material
from cloud.envelope import AesKey, now_ms, unseal
from cloud.gateway import SAMPLE_PASSAGES, Gateway, GatewayService
from cloud.wire import (
    ANSWER_PATH,
    DIRECTION_REPLY,
    AnswerReply,
    AnswerRequest,
    Envelope,
    Passage,
)

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


SYSTEM = "You are a helpful assistant."
QUESTION = (f"Passage (Zorvath): Zorvath Island's capital is Miret. {CANARY}\n\n"
            f"Question: What is the capital of Zorvath Island? {CANARY}\n\n")
USER = QUESTION + "Answer the question with a short phrase copied from the passage."
PROBE_USER = QUESTION + "Is the answer to this question stated in the passage? Reply yes or no."
VERIFY_USER = QUESTION + 'Does the passage state that "Miret" answers the question? Reply yes or no.'


def open_reply(edge_client: EdgeClient, resp: httpx.Response) -> AnswerReply:
    env = Envelope.from_bytes(resp.content)
    return AnswerReply.from_dict(unseal(env, edge_client.material.aes, edge="edge-1", direction=DIRECTION_REPLY))


def test_answers_a_sealed_request(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI) -> None:
    env = edge_client.seal(question_payload())
    resp = edge_client.post(env.to_bytes())
    assert resp.status_code == 200
    reply_env = Envelope.from_bytes(resp.content)
    assert reply_env.rid == env.rid and reply_env.nonce != env.nonce
    assert CANARY not in resp.text and "Miret" not in resp.text  # the reply is sealed too
    reply = open_reply(edge_client, resp)
    assert (reply.answer, reply.model) == ("Miret", FAKE_MODEL)
    assert reply.answer_spans == ((28, 33),)
    assert 0.86 < reply.confidence < 0.93  # exp(mean(-0.05, -0.1))
    assert reply.p_answerable == pytest.approx(FAKE_P_YES)  # the fake's P(yes) / (P(yes) + P(no))
    # Every passage's signals come back: the probe's p(yes), the answer, its check
    signals = reply.reading.passages[0]
    assert (signals.answer, signals.is_span, reply.reading.chosen) == ("Miret", True, 0)
    assert signals.p_yes == pytest.approx(FAKE_P_YES) and reply.reading.p_verify == pytest.approx(FAKE_P_YES)
    assert signals.no_answer_logit == pytest.approx(math.log(0.02 / 0.98))  # "un" at the answer's first step
    # The probe's and the check's uncached tokens (333 - 320 each) + the answer's prompt (321); 1 + 2 + 1 tokens;
    # the 320 tokens the probe and the check found cached are counted apart.
    assert reply.usage == {"prompt_tokens": 347, "cached_prompt_tokens": 640, "completion_tokens": 4, "requests": 3}
    assert {"open", "prompt", "backend", "parse", "total"} <= set(reply.timings_ms)
    assert reply.timings_ms["total"] >= reply.timings_ms["backend"] > 0
    # The backend got three greedy chat requests — probe, answer, check — all on the passage and the question.
    assert fake_backend.paths == [CHAT_PATH] * 3
    assert fake_backend.calls == [*fake_backend.probe_calls, *fake_backend.answer_calls, *fake_backend.verify_calls]
    call = fake_backend.answer_calls[0]
    assert call["messages"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    assert (call["temperature"], call["repeat_penalty"], call["repetition_penalty"], call["logprobs"]) == (0.0, 1.0, 1.0, True)
    assert (call["stop"], call["max_tokens"], call["model"]) == ([], 8, FAKE_MODEL)
    assert call["top_logprobs"] == 20  # the no-answer evidence at the answer's first step
    assert fake_backend.verify_calls[0]["messages"][1]["content"] == VERIFY_USER
    assert metric(gateway, "ecqa_gateway_requests_total", path=ANSWER_PATH, code="200") == 1
    assert metric(gateway, "ecqa_gateway_backend_latency_seconds_count") == 1


@pytest.mark.parametrize("p_yes", [0.93, 0.12])
def test_reply_carries_the_probes_p_answerable(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI,
                                               p_yes: float) -> None:
    fake_backend.p_yes = p_yes
    resp = edge_client.post(edge_client.seal(question_payload()).to_bytes())
    assert resp.status_code == 200
    reply = open_reply(edge_client, resp)
    assert reply.p_answerable == pytest.approx(p_yes, abs=1e-6)
    assert reply.answer == "Miret"  # the gateway reports p(answerable); the edge decides what to do with it
    # The probe: one chat token with the top 20 alternatives, sent before the answer…
    probe, answer, _ = fake_backend.calls
    assert fake_backend.probe_calls == [probe]
    assert {k: probe[k] for k in ("max_tokens", "logprobs", "top_logprobs", "temperature", "stop", "model")} == (
        {"max_tokens": 1, "logprobs": True, "top_logprobs": 20, "temperature": 0.0, "stop": [], "model": FAKE_MODEL})
    # …whose messages are the answer's with another task after the same passage and question (one
    # instruction each, and a shared prefix for a prefix-caching backend).
    assert probe["messages"][0] == answer["messages"][0] == {"role": "system", "content": SYSTEM}
    assert probe["messages"][1] == {"role": "user", "content": PROBE_USER}
    assert answer["messages"][1]["content"] == USER


def test_base_family_backend_gets_completion_prompts(fake_backend: FakeOpenAI, material_dir: Path) -> None:
    """A base model (gemma-3-270m) has no chat template: the probe and the answer go to /v1/completions."""
    fake_backend.p_yes = 0.4
    backend = OpenAIBackend(fake_backend.url, prompt_family="base")
    backend.warm_up()
    service = GatewayService(load_server_material(material_dir).keyring, backend)
    question = "What is the capital of Zorvath Island?"
    reply = service.answer(AnswerRequest(question, (Passage("Zorvath", "Zorvath Island's capital is Miret."),), 8))
    backend.close()
    assert (reply.answer, reply.answer_spans, reply.model) == ("Miret", ((28, 33),), FAKE_MODEL)
    assert reply.p_answerable == pytest.approx(0.4, abs=1e-6)
    assert reply.usage == {"prompt_tokens": 347, "cached_prompt_tokens": 640, "completion_tokens": 4, "requests": 3}
    assert fake_backend.paths == [COMPLETIONS_PATH] * 3
    probe, answer, check = fake_backend.calls
    block = f"Passage: Zorvath Island's capital is Miret.\nQuestion: {question}\n"
    assert probe["prompt"].endswith(block + "Is the answer stated in the passages (yes or no)?")
    assert (probe["max_tokens"], probe["logprobs"], probe["stop"]) == (1, 20, [])
    assert answer["prompt"].endswith(block + "Answer:")
    assert (answer["max_tokens"], answer["logprobs"], answer["stop"]) == (8, 20, ["\n"])
    assert check["prompt"].endswith(block + 'Do the passages say that "Miret" answers the question (yes or no)?')
    # Both start with the same instruction (a cacheable prefix); the few-shot examples teach each cue.
    assert probe["prompt"][:100] == answer["prompt"][:100]
    assert "ecqa_gateway_backend_latency_seconds_count 1\n" in service.metrics.render()  # one observation for the reading


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
    assert edge_client.post(env.to_bytes()).status_code == 200
    assert len(fake_backend.probe_calls) == 1 and len(fake_backend.answer_calls) == 1


def test_replayed_nonce(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI) -> None:
    body = edge_client.seal(question_payload()).to_bytes()
    assert edge_client.post(body).status_code == 200
    assert "already received" in refusal(edge_client.post(body), 409, "replay")
    # Only the first request reached the backend (its probe, its answer and the check).
    assert len(fake_backend.probe_calls) == 1 and len(fake_backend.answer_calls) == 1 and refused(gateway, "replay") == 1
    assert len(fake_backend.calls) == 3


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
    message = refusal(resp, 502, "backend_error")
    assert "backend answered HTTP 500 to /v1/chat/completions" in message and "boom" not in message
    assert fake_backend.calls == fake_backend.probe_calls and len(fake_backend.calls) == 1  # no answer after a failed probe
    assert metric(gateway, "ecqa_gateway_backend_errors_total") == 1


# Defect #12.9: an over-long request was reported as a backend failure (502 backend_error).
LONG_PASSAGES = [{"title": f"t{i}", "text": ("Rollo was a Viking leader. " * 3700)[:100_000]} for i in range(10)]


def test_a_prompt_the_backend_context_refuses_is_a_413_not_a_502(gateway: Gateway, edge_client: EdgeClient,
                                                                 fake_backend: FakeOpenAI) -> None:
    fake_backend.status = 400  # typed as the embedded server and llama.cpp type it (vLLM is told by its wording)
    fake_backend.error_message = "a message in any words"
    fake_backend.error_fields = {"type": CONTEXT_ERROR_TYPE, "n_prompt_tokens": 250123, "n_ctx": 4096}
    resp = edge_client.post(edge_client.seal({"question": "Who was Rollo?", "passages": LONG_PASSAGES}).to_bytes())
    message = refusal(resp, 413, "prompt_too_long")
    assert "250123 tokens" in message and "4096-token context" in message and "fewer or shorter passages" in message
    assert "ECQA_CLOUD_N_CTX=4096" in message
    assert refused(gateway, "prompt_too_long") == 1 and metric(gateway, "ecqa_gateway_backend_errors_total") == 0


def test_a_prompt_over_a_known_context_is_refused_before_the_backend(material_dir: Path, fake_backend: FakeOpenAI) -> None:
    from cloud.backend import OpenAIBackend

    fake_backend.max_model_len = 2048  # as vLLM reports it in /v1/models
    gw = Gateway(load_server_material(material_dir), OpenAIBackend(fake_backend.url), port=0).start()
    client = EdgeClient(material_dir, gw.url)
    try:
        resp = client.post(client.seal({"question": "Who was Rollo?", "passages": LONG_PASSAGES, "max_tokens": 8}).to_bytes())
        message = refusal(resp, 413, "prompt_too_long")
        fits = (2048 - 8) * 3  # prompt_char_limit: 3 characters per token
        assert f"over the {fits} that the backend's 2048-token context holds with 8 tokens" in message
        assert fake_backend.calls == []  # refused before any backend call
        ok = client.post(client.seal(question_payload()).to_bytes())
        assert ok.status_code == 200 and len(fake_backend.answer_calls) == 1
    finally:
        client.close()
        gw.stop()


# --- health, metrics, logs -----------------------------------------------------------------------
def test_health_and_metrics(gateway: Gateway, edge_client: EdgeClient) -> None:
    health = edge_client.http.get("/healthz")
    assert health.status_code == 200
    data = health.json()
    assert set(data) == {"status", "backend", "uptime_s", "answer_ms"}
    assert (data["status"], data["backend"]) == ("ok", FAKE_MODEL)
    assert data["answer_ms"] == {"measured": None, "measured_warm": None, "measured_chars": 0, "measured_decode": None,
                                 "recent": None, "answers": 0}  # not measured, nothing served yet
    edge_client.post(b"nope")
    edge_client.post(edge_client.seal(question_payload()).to_bytes())
    cost = edge_client.http.get("/healthz").json()["answer_ms"]
    assert cost["answers"] == 1 and cost["recent"] > 0 and cost["measured"] is None  # a refusal is no answer
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


def test_the_replay_window_file_keeps_live_nonces_across_processes(tmp_path: Path) -> None:
    """Defect #12.3, the file itself: what a new process reads back, what it skips, what it rewrites."""
    import stat

    from cloud.errors import ReplayError
    from cloud.replay_window import ReplayCache

    path = tmp_path / "replay-window.log"
    now = 1_700_000_000_000
    first = ReplayCache(30, path=path)
    first.open(now)
    first.check_and_add("k-1", b"a" * 12, ts_ms=now, now=now)  # live for 30 s
    first.check_and_add("k-1", b"b" * 12, ts_ms=now - 29_000, now=now)  # leaves the window after 1 s
    first.close()  # no goodbye needed: each nonce was written when it was accepted
    with path.open("a") as fh:
        fh.write("not a record\n123 k-1 !!!\n9999999999999 k-1 YWFh")  # foreign text, a line cut by a crash
    second = ReplayCache(30, path=path)
    second.open(now + 10_000)
    with pytest.raises(ReplayError, match="already received"):
        second.check_and_add("k-1", b"a" * 12, ts_ms=now, now=now + 10_000)
    second.check_and_add("k-1", b"b" * 12, ts_ms=now + 10_000, now=now + 10_000)  # expired: a fresh nonce again
    second.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(len(line.split(" ")) == 3 for line in lines)  # rewritten: live nonces only
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_each_passage_is_read_on_its_own(gateway: Gateway, edge_client: EdgeClient, fake_backend: FakeOpenAI) -> None:
    """Finding 1: the cloud read the three passages in one prompt, for both the probe and the answer, where
    the edge reads each on its own. Now every request to the backend carries one passage, each passage gets
    its own probe and answer, and the reply carries every passage's signals."""
    texts = ["Zorvath Island's capital is Miret.", "The Kelvane glacier feeds the Tarrow River.", "Miret has a harbour."]
    payload = {"question": "What is the capital of Zorvath Island?", "max_tokens": 8,
               "passages": [{"title": f"t{i}", "text": t} for i, t in enumerate(texts)]}
    reply = open_reply(edge_client, edge_client.post(edge_client.seal(payload).to_bytes()))
    assert len(fake_backend.probe_calls) == len(fake_backend.answer_calls) == 3 and len(fake_backend.verify_calls) == 1
    for call in fake_backend.calls:
        user = call["messages"][1]["content"]
        assert user.startswith("Passage (t") and sum(t in user for t in texts) == 1
    assert len(reply.reading.passages) == 3 and reply.answer_spans[0] == (28, 33)


def test_the_request_says_how_much_of_the_reading_the_cloud_does(gateway: Gateway, edge_client: EdgeClient,
                                                                   fake_backend: FakeOpenAI) -> None:
    """The calibration's cloud read plan travels with the request: every passage probed, only the best
    answered, that answer checked (five backend requests for three passages, not seven)."""
    texts = ["Zorvath Island's capital is Miret.", "The Kelvane glacier feeds the Tarrow River.", "Miret has a harbour."]
    payload = {"question": "What is the capital of Zorvath Island?", "max_tokens": 8,
               "passages": [{"title": f"t{i}", "text": t} for i, t in enumerate(texts)],
               "read": {"answer": "best", "verify": True}}
    reply = open_reply(edge_client, edge_client.post(edge_client.seal(payload).to_bytes()))
    assert (len(fake_backend.probe_calls), len(fake_backend.answer_calls), len(fake_backend.verify_calls)) == (3, 1, 1)
    assert len(reply.reading.passages) == 3 and sum(s.asked for s in reply.reading.passages) == 1
    assert reply.answer == "Miret" and reply.usage["requests"] == 5


def test_redactions_are_counted_by_kind_with_bounded_labels() -> None:
    from cloud.metrics import MAX_KIND_LABELS, GatewayMetrics

    m = GatewayMetrics([])
    m.redactions({})
    m.redactions({"name": 2, "email": 0})
    for i in range(MAX_KIND_LABELS + 10):  # an edge cannot grow the exposition without bound
        m.redactions({f"kind_{i}": 1})
    text = m.render()
    assert "ecqa_gateway_answer_requests_total 36" in text
    assert 'ecqa_gateway_redacted_requests_total{kind="any"} 35' in text
    assert 'ecqa_gateway_redacted_requests_total{kind="name"} 1' in text and 'kind="email"' not in text
    assert 'ecqa_gateway_redacted_requests_total{kind="other"}' in text
    assert text.count("ecqa_gateway_redacted_requests_total{") <= MAX_KIND_LABELS + 2


def test_a_gateway_measures_an_answer_at_start_and_the_edge_starts_its_latency_model_from_it(
        material_dir: Path, edge1_dir: Path, fake_backend: FakeOpenAI) -> None:
    """/healthz says what an answer costs here before anyone asked (one made-up answer over fresh passages at
    start-up, then the same once they were read), and the edge's latency model starts its cloud term from it
    instead of a guess: the fixed part from the warm answer, each new passage character at the difference's rate."""
    from pipelines.answer import latency_model_for
    from pipelines.cloud_path import open_cloud_link
    from pipelines.latency import CloudCost
    from pipelines.settings import Settings

    fake_backend.delay_s = 0.3
    with Gateway(load_server_material(material_dir), OpenAIBackend(fake_backend.url), port=0, measure=True) as gw:
        assert len(fake_backend.probe_calls) == 6 and len(fake_backend.answer_calls) == 2  # the default cloud plan, twice
        health = gw.service.health()["answer_ms"]
        measured, warm, chars = health["measured"], health["measured_warm"], health["measured_chars"]
        assert measured >= 5 * 300 and warm >= 5 * 300  # five backend requests of 0.3 s each time
        assert chars == sum(len(p.text) for p in SAMPLE_PASSAGES) and health["answers"] == 0  # not an answer served
        url = gw.url
        link = open_cloud_link(Settings(cloud_url=url, cloud_dir=edge1_dir))
        decode = health["measured_decode"]  # the fake server reports no llama.cpp timings: None
        try:
            assert link.answer_cost() == CloudCost(measured, warm, chars, None if decode is None else decode["ms"],
                                                   0 if decode is None else decode["tokens"])
        finally:
            link.close()
    latency = latency_model_for(None)
    assert latency.predict(0.0, 0).cloud_ms != pytest.approx(3000.0, rel=0.01)  # the default guess
    latency.seed_cloud(CloudCost(3000.0, 1200.0, 2000))
    assert latency.predict(0.0, 0, fresh_chars=2000).cloud_ms == pytest.approx(3000.0)  # as new and long as measured
    assert latency.predict(0.0, 0, fresh_chars=1000).cloud_ms == pytest.approx(2100.0)  # half as long
    assert latency.predict(0.0, 0).cloud_ms == pytest.approx(1200.0)  # passages the cloud has read
    latency.observe_cloud(10.0, 1000, 400, 700.0, 3, fresh_chars=0)  # a measured call moves the line towards it
    assert 700.0 < latency.predict(0.0, 0).cloud_ms < 1200.0
    # The warm answer's decoding reported (a long reply: 28 tokens in 700 ms): out of the fixed cost, and the rate per
    # token it sets counts this edge's expected reply instead.
    decoded = latency_model_for(None)
    decoded.seed_cloud(CloudCost(3000.0, 1200.0, 2000, 700.0, 28))
    expected = decoded.snapshot()["expected_tokens"]
    assert decoded.predict(0.0, 0, fresh_chars=1000).cloud_ms == pytest.approx(500.0 + 900.0 + 25.0 * expected)
    # A gateway that measured only the cold answer (an older one): that is the fixed cost, nothing per character.
    flat = latency_model_for(None)
    flat.seed_cloud(CloudCost(3000.0))
    assert flat.predict(0.0, 0, fresh_chars=2000).cloud_ms == pytest.approx(3000.0) == flat.predict(0.0, 0).cloud_ms
    # a gateway that cannot be asked leaves the prior alone
    dead = open_cloud_link(Settings(cloud_url=url, cloud_dir=edge1_dir))
    try:
        assert dead.answer_cost() is None
    finally:
        dead.close()
