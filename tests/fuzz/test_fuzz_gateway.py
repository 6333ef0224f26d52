"""Fuzz targets for the cloud tier's parsers: the gateway's envelope and payload parsing (cloud/wire.py,
cloud/envelope.py) and its whole request path (GatewayService.handle_answer, no sockets), the edge's
parsing of replies and refusals, and the embedded backend's request parsing. Every refusal is a known
reason before any backend call; only an accepted request reaches the backend."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import zstandard
from fuzz_helpers import CLEAN_TEXT, JSON_VALUES, NUMBERS, mostly
from hypothesis import event, example, given
from hypothesis import strategies as st

from cloud.backend import OpenAIBackend, context_error
from cloud.backend_server import MAX_TOP_LOGPROBS, BadRequest, parse_completion_request
from cloud.certs import load_edge_material, load_server_material
from cloud.envelope import new_request_id, now_ms, pack, seal, unpack, unseal
from cloud.errors import REFUSAL_ERRORS, BackendContextError, CloudProtocolError, EnvelopeError, MalformedError
from cloud.gateway import GatewayService
from cloud.wire import DIRECTION_REPLY, DIRECTION_REQUEST, AnswerReply, AnswerRequest, Envelope, parse_refusal
from indexing.loaders import has_lone_surrogate

REASONS = {e.reason for e in REFUSAL_ERRORS}


@pytest.fixture(scope="module")
def service(fuzz_cloud: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The gateway's logic in front of the fake backend (2048-token context), memory-only replay window."""
    material = load_server_material(fuzz_cloud["material"])
    backend = OpenAIBackend(fuzz_cloud["fake"].url)
    backend.warm_up()
    yield {"service": GatewayService(material.keyring, backend, max_envelope_bytes=256 * 1024),
           "edge": load_edge_material(fuzz_cloud["material"]), "fake": fuzz_cloud["fake"]}
    backend.close()


def _handle(svc: dict[str, Any], body: bytes) -> tuple[int, bytes]:
    """handle_answer, checking that the backend is called exactly when the request is accepted."""
    fake = svc["fake"]
    calls = len(fake.calls)
    status, reply = svc["service"].handle_answer(body, svc["edge"].name)
    if status == 200:
        event("answered")
        env = Envelope.from_bytes(reply)
        answered = AnswerReply.from_dict(unseal(env, svc["edge"].aes, edge=svc["edge"].name, direction=DIRECTION_REPLY))
        # Per passage the answerability probe and the answer, then the check of the chosen answer, if any.
        read = answered.reading
        assert len(fake.calls) == calls + 2 * len(read.passages) + (1 if read.answer else 0)
    else:
        reason, message = parse_refusal(reply)
        event(f"refused: {status} {reason}")
        assert reason in REASONS and message and "\n" not in message, reply
        assert status == next(e.status for e in REFUSAL_ERRORS if e.reason == reason)
        assert len(fake.calls) == calls  # refused before any backend call
    return status, reply


@given(body=st.one_of(st.binary(max_size=400), JSON_VALUES.map(lambda v: json.dumps(v).encode())))
def test_gateway_random_bodies(service: dict[str, Any], body: bytes) -> None:
    status, _ = _handle(service, body)
    assert status != 200


def _sealed_fields(svc: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    env = seal(payload, svc["edge"].aes, rid=new_request_id(), edge=svc["edge"].name, direction=DIRECTION_REQUEST,
               ts_ms=now_ms())
    return json.loads(env.to_bytes())


FIELD_NAMES = st.sampled_from(["v", "kid", "rid", "ts", "nonce", "ct", "extra"])


@given(changes=st.lists(st.tuples(FIELD_NAMES, st.one_of(st.none(), JSON_VALUES, NUMBERS, st.binary(max_size=40).map(
    lambda b: base64.b64encode(b).decode()))), min_size=1, max_size=3), drop=st.lists(FIELD_NAMES, max_size=2))
def test_gateway_tampered_envelopes(service: dict[str, Any], changes: list[tuple[str, Any]], drop: list[str]) -> None:
    """A well-sealed envelope with fields replaced or missing: refused with its reason (or, if the change
    happens to be no change, answered once — never twice)."""
    fields = _sealed_fields(service, {"question": "What is the capital?", "passages": [{"title": "t", "text": "Miret."}]})
    original = dict(fields)
    for name, value in changes:
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    for name in drop:
        fields.pop(name, None)
    body = json.dumps(fields).encode()
    status, _ = _handle(service, body)
    if status == 200:
        assert {k: v for k, v in fields.items() if k != "extra"} == original
        assert _handle(service, body)[0] == 409  # the same envelope twice is a replay


TEXTS = mostly(CLEAN_TEXT, JSON_VALUES)
PASSAGE = mostly(st.fixed_dictionaries({"title": TEXTS, "text": TEXTS}), in_ten=9)
PAYLOAD = st.one_of(
    mostly(st.fixed_dictionaries({"question": TEXTS, "passages": mostly(st.lists(PASSAGE, max_size=6), in_ten=9)},
                                 optional={"max_tokens": mostly(st.integers(1, 64), st.one_of(NUMBERS, JSON_VALUES))}),
           st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=4)),
    st.fixed_dictionaries({"question": st.just("Who?"), "passages": st.lists(st.fixed_dictionaries(
        {"title": st.just("t"), "text": st.text(min_size=1, max_size=20).map(lambda t: t * 3000)}), min_size=1, max_size=8)}),
)


@given(payload=PAYLOAD)
def test_gateway_sealed_payloads(service: dict[str, Any], payload: dict[str, Any]) -> None:
    """Authenticated requests with whatever payload an edge could seal: answered, or refused as a bad
    payload / too large / prompt too long (the fake backend's context is 2048 tokens) — never a 5xx."""
    if has_lone_surrogate(payload):
        return  # not sealable: pack() writes UTF-8 (an edge never holds a lone surrogate, see check_question)
    body = seal(payload, service["edge"].aes, rid=new_request_id(), edge=service["edge"].name,
                direction=DIRECTION_REQUEST, ts_ms=now_ms()).to_bytes()
    status, reply = _handle(service, body)
    if status == 200:
        request = AnswerRequest.from_dict(payload)
        assert request.question.strip()
    else:
        assert parse_refusal(reply)[0] in ("bad_payload", "too_large", "prompt_too_long")


@given(data=st.one_of(st.binary(max_size=300), JSON_VALUES.map(lambda v: json.dumps(v).encode())))
def test_envelope_from_bytes(data: bytes) -> None:
    try:
        env = Envelope.from_bytes(data)
    except MalformedError as exc:
        assert "\n" not in str(exc)
        return
    assert Envelope.from_bytes(env.to_bytes()) == env


@given(blob=st.one_of(st.binary(max_size=300), JSON_VALUES.filter(lambda v: not has_lone_surrogate(v)).map(
    lambda v: zstandard.ZstdCompressor().compress(json.dumps(v, ensure_ascii=False).encode()))))
def test_unpack(blob: bytes) -> None:
    try:
        obj = unpack(blob, max_bytes=64 * 1024)
    except EnvelopeError as exc:
        assert exc.reason in ("bad_payload", "too_large") and "\n" not in str(exc)
        return
    assert isinstance(obj, dict) and unpack(pack(obj)) == obj


@given(obj=st.one_of(JSON_VALUES, PAYLOAD))
def test_answer_request_from_dict(obj: Any) -> None:
    try:
        request = AnswerRequest.from_dict(obj)
    except EnvelopeError as exc:
        assert exc.reason == "bad_payload" and "\n" not in str(exc)
        return
    assert AnswerRequest.from_dict(request.to_dict()) == request


REPLY = mostly(st.fixed_dictionaries({
    "answer": TEXTS, "confidence": mostly(st.floats(0, 1), NUMBERS),
    "answer_spans": mostly(st.lists(mostly(st.one_of(st.none(), st.tuples(st.integers(), st.integers()).map(list))))),
    "usage": mostly(st.dictionaries(st.text(max_size=10), st.integers()), st.dictionaries(st.text(max_size=3), NUMBERS)),
    "timings_ms": mostly(st.dictionaries(st.text(max_size=10), st.floats(0, 1e6)), st.dictionaries(st.text(max_size=3), NUMBERS)),
    "model": TEXTS}))


@given(obj=REPLY)
def test_answer_reply_from_dict(obj: Any) -> None:
    """The edge's parsing of a (decrypted) reply: an AnswerReply, or CloudProtocolError."""
    try:
        reply = AnswerReply.from_dict(obj)
    except CloudProtocolError as exc:
        assert "\n" not in str(exc)
        return
    json.dumps(reply.to_dict(), allow_nan=False)  # a finite confidence and timings


@given(status=st.sampled_from([200, 400, 401, 404, 413, 500, 502]), body=st.one_of(
    st.binary(max_size=200), JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"error": mostly(st.fixed_dictionaries({"message": TEXTS, "type": TEXTS},
                                                                 optional={"n_ctx": NUMBERS, "n_prompt_tokens": NUMBERS}))}
                          ).map(lambda v: json.dumps(v).encode())))
def test_refusal_and_backend_error_parsing(status: int, body: bytes) -> None:
    reason, message = parse_refusal(body)
    assert isinstance(reason, str) and isinstance(message, str)
    found = context_error(status, body)
    assert found is None or isinstance(found, BackendContextError)


COMPLETION_BODY = mostly(st.fixed_dictionaries(
    {"prompt": mostly(st.one_of(CLEAN_TEXT, st.lists(CLEAN_TEXT, max_size=2)))},
    optional={"max_tokens": mostly(st.integers(1, 64), NUMBERS), "temperature": mostly(st.just(0), NUMBERS),
              "stop": mostly(st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=5))),
              "logprobs": mostly(st.sampled_from([None, 0, 1]), NUMBERS), "n": mostly(st.just(1), NUMBERS),
              "stream": st.booleans(), "echo": st.booleans(), "repeat_penalty": mostly(st.just(1.0), NUMBERS)}))


@given(body=COMPLETION_BODY)
@example(body={"prompt": "0", "logprobs": 2})  # top alternatives: the probe asks for 20
@example(body={"prompt": "0", "logprobs": MAX_TOP_LOGPROBS + 1})
def test_backend_request_parsing(body: Any) -> None:
    """The embedded backend's /v1/completions body check: a request it can run, or BadRequest (400)."""
    try:
        prompt, max_tokens, stop, logprobs = parse_completion_request(body, 2048)
    except BadRequest as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(prompt, str) and prompt and 1 <= max_tokens <= 2048
    assert all(isinstance(s, str) and s for s in stop)
    assert logprobs is None or (isinstance(logprobs, int) and 0 <= logprobs <= MAX_TOP_LOGPROBS)
