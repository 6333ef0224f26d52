"""cloud.envelope and cloud.wire: sealing round trips, what the associated data binds, limits, parsing."""

from __future__ import annotations

import base64
import json
import os
import pickle

import pytest
import zstandard

from cloud.envelope import (
    AesKey,
    associated_data,
    check_timestamp,
    new_request_id,
    pack,
    seal,
    unpack,
    unseal,
)
from cloud.errors import (
    BadPayloadError,
    CloudProtocolError,
    MalformedError,
    SealError,
    StaleTimestampError,
    TooLargeError,
)
from cloud.wire import (
    DIRECTION_REPLY,
    DIRECTION_REQUEST,
    NONCE_BYTES,
    AnswerReply,
    AnswerRequest,
    Envelope,
)
from reading.passages import FULL, PassageReading, PassageSignals, ReadPlan

KEY = AesKey("k-test", bytes(range(32)))
PAYLOAD = {"question": "What is the capital of Zorvath Island?", "passages": [{"title": "Z", "text": "Its capital is Miret. " * 20}]}


def sealed(**over) -> Envelope:  # type: ignore[no-untyped-def]
    args = {"rid": "a" * 32, "edge": "edge-1", "direction": DIRECTION_REQUEST, "ts_ms": 1_700_000_000_000, **over}
    return seal(PAYLOAD, KEY, **args)


def test_round_trip_and_envelope_fields() -> None:
    env = sealed()
    assert (env.kid, env.rid, env.ts_ms, len(env.nonce)) == ("k-test", "a" * 32, 1_700_000_000_000, NONCE_BYTES)
    assert unseal(env, KEY, edge="edge-1", direction=DIRECTION_REQUEST) == PAYLOAD
    # Through the wire format too.
    again = Envelope.from_bytes(env.to_bytes())
    assert again == env
    assert unseal(again, KEY, edge="edge-1", direction=DIRECTION_REQUEST) == PAYLOAD


def test_plaintext_is_compressed_before_sealing() -> None:
    env = sealed()
    raw = json.dumps(PAYLOAD, separators=(",", ":")).encode()
    # 20 repeated sentences compress well; ciphertext = compressed plaintext + 16-byte tag.
    assert len(env.ct) - 16 == len(pack(PAYLOAD)) < len(raw) / 4
    assert b"Miret" not in env.to_bytes() and b"Zorvath" not in env.to_bytes()


def test_nonces_are_random_and_ciphertexts_differ() -> None:
    a, b = sealed(), sealed()
    assert a.nonce != b.nonce and a.ct != b.ct


@pytest.mark.parametrize(
    ("field", "value"),
    [("rid", "b" * 32), ("edge", "edge-2"), ("ts_ms", 1_700_000_000_001), ("direction", DIRECTION_REPLY)],
)
def test_associated_data_binds_each_field(field: str, value: object) -> None:
    env = sealed()
    opened = {"edge": "edge-1", "direction": DIRECTION_REQUEST}
    if field in ("rid", "ts_ms"):
        env = Envelope(kid=env.kid, rid=value if field == "rid" else env.rid,  # type: ignore[arg-type]
                       ts_ms=value if field == "ts_ms" else env.ts_ms, nonce=env.nonce, ct=env.ct)  # type: ignore[arg-type]
    else:
        opened[field] = value  # type: ignore[assignment]
    with pytest.raises(SealError, match="does not authenticate"):
        unseal(env, KEY, **opened)  # type: ignore[arg-type]


def test_associated_data_is_unambiguous() -> None:
    # A separator inside a field cannot make two different bindings collide.
    assert associated_data("request", "k", "r", "a|b", 1) != associated_data("request", "k", "r|a", "b", 1)


@pytest.mark.parametrize("where", [0, -1, -17])
def test_any_flipped_ciphertext_or_tag_byte_is_refused(where: int) -> None:
    env = sealed()
    ct = bytearray(env.ct)
    ct[where] ^= 0x01
    bad = Envelope(kid=env.kid, rid=env.rid, ts_ms=env.ts_ms, nonce=env.nonce, ct=bytes(ct))
    with pytest.raises(SealError):
        unseal(bad, KEY, edge="edge-1", direction=DIRECTION_REQUEST)


def test_wrong_key_or_key_id_is_refused() -> None:
    env = sealed()
    with pytest.raises(SealError):
        unseal(env, AesKey("k-test", os.urandom(32)), edge="edge-1", direction=DIRECTION_REQUEST)
    with pytest.raises(SealError, match="key id does not match"):
        unseal(env, AesKey("k-other", bytes(range(32))), edge="edge-1", direction=DIRECTION_REQUEST)


def test_key_is_never_shown_nor_pickled() -> None:
    text = repr(KEY) + str(KEY) + f"{KEY}"
    assert "k-test" in text and "**********" in text
    assert bytes(range(32)).hex() not in text and base64.b64encode(bytes(range(32))).decode() not in text
    with pytest.raises(TypeError, match="not serializable"):
        pickle.dumps(KEY)
    with pytest.raises(ValueError, match="32 bytes"):
        AesKey("k", b"short")
    generated = AesKey.generate()
    assert generated.kid.startswith("k-") and len(generated.secret_bytes()) == 32 and generated != AesKey.generate()


def test_decompression_is_bounded_before_allocation() -> None:
    bomb = pack({"question": "q", "passages": [{"title": "", "text": "a" * 5_000_000}]})
    assert len(bomb) < 1000  # tiny on the wire…
    with pytest.raises(TooLargeError, match="more than 1000000 bytes"):
        unpack(bomb, max_bytes=1_000_000)  # …refused from the frame header, never inflated
    # A frame that does not declare its size is stopped at the limit while decompressing.
    cobj = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    undeclared = cobj.compress(json.dumps({"t": "a" * 2_000_000}).encode()) + cobj.flush()
    assert zstandard.frame_content_size(undeclared) == -1
    with pytest.raises(TooLargeError):
        unpack(undeclared, max_bytes=1_000_000)
    assert unpack(undeclared, max_bytes=3_000_000)["t"] == "a" * 2_000_000


def test_unpack_refuses_non_zstd_and_non_objects() -> None:
    with pytest.raises(BadPayloadError, match="not a zstd frame"):
        unpack(b"plain json")
    with pytest.raises(BadPayloadError, match="not a JSON object"):
        unpack(zstandard.ZstdCompressor().compress(b"[1, 2]"))


def test_timestamp_window() -> None:
    check_timestamp(1_000_000, 1_000_000 + 30_000, 30)  # exactly at the edge: accepted
    check_timestamp(1_000_000 + 30_000, 1_000_000, 30)
    with pytest.raises(StaleTimestampError, match="more than 30 s"):
        check_timestamp(1_000_000, 1_000_000 + 30_001, 30)
    with pytest.raises(StaleTimestampError):
        check_timestamp(1_000_000 + 30_001, 1_000_000, 30)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"v": 1}', "fields missing: kid, rid, ts, nonce, ct"),
        (b'{"v": 2, "kid": "k", "rid": "' + b"a" * 32 + b'", "ts": 1, "nonce": "", "ct": ""}', "unsupported envelope version"),
        (b'{"v": 1, "kid": "k k", "rid": "' + b"a" * 32 + b'", "ts": 1, "nonce": "", "ct": ""}', "'kid'"),
        (b'{"v": 1, "kid": "k", "rid": "xyz", "ts": 1, "nonce": "", "ct": ""}', "'rid'"),
        (b'{"v": 1, "kid": "k", "rid": "' + b"a" * 32 + b'", "ts": "now", "nonce": "", "ct": ""}', "'ts'"),
        (b'{"v": 1, "kid": "k", "rid": "' + b"a" * 32 + b'", "ts": 1, "nonce": "!!", "ct": ""}', "'nonce' is not valid base64"),
        (b'{"v": 1, "kid": "k", "rid": "' + b"a" * 32 + b'", "ts": 1, "nonce": "AAAA", "ct": ""}', "'nonce' must be 12 bytes"),
    ],
)
def test_malformed_envelopes_name_the_field_never_the_value(body: bytes, fragment: str) -> None:
    with pytest.raises(MalformedError) as info:
        Envelope.from_bytes(body)
    assert fragment in str(info.value)
    assert "k k" not in str(info.value) and "xyz" not in str(info.value) and "now" not in str(info.value)


def test_request_and_reply_shapes() -> None:
    req = AnswerRequest.from_dict({"question": "Q?", "passages": [{"title": "T", "text": "P"}], "max_tokens": 5})
    assert (req.question, req.passages[0].text, req.max_tokens) == ("Q?", "P", 5)
    assert AnswerRequest.from_dict(req.to_dict()) == req
    for bad in ({"question": "", "passages": []}, {"question": "q", "passages": "x"}, {"question": "q", "passages": [], "max_tokens": 0},
                {"question": "q", "passages": [{"title": 1, "text": "t"}]}):
        with pytest.raises(BadPayloadError):
            AnswerRequest.from_dict(bad)
    # What the edge redacted travels as counts per kind (for the gateway's metrics), checked like every field.
    counted = AnswerRequest.from_dict({**req.to_dict(), "redactions": {"name": 2, "card": 1}})
    assert counted.redactions == {"name": 2, "card": 1} and AnswerRequest.from_dict(counted.to_dict()) == counted
    assert "redactions" not in req.to_dict()  # none: the payload is as before
    for bad_counts in ([1], {"Name": 1}, {"name": -1}, {"name": True}, {"name": 1.5}, {'x"}': 1},
                       {f"k{'a' * i}": 1 for i in range(40)}, {"name": 10**9}):
        with pytest.raises(BadPayloadError, match="'redactions'"):
            AnswerRequest.from_dict({**req.to_dict(), "redactions": bad_counts})
    # How the cloud reads (the calibration's cloud read plan): absent = the full reading, as before.
    lean = AnswerRequest.from_dict({**req.to_dict(), "read": {"answer": "best", "verify": True}})
    assert lean.read == ReadPlan("best", True) and AnswerRequest.from_dict(lean.to_dict()) == lean
    assert req.read == FULL and "read" not in req.to_dict()
    for bad_read in ("best", {"answer": "most", "verify": True}, {"answer": "best"}, {"answer": "best", "verify": 1},
                     {"answer": "best", "verify": True, "gap": 0.1}):
        with pytest.raises(BadPayloadError, match="'read'"):
            AnswerRequest.from_dict({**req.to_dict(), "read": bad_read})
    reading = PassageReading((PassageSignals(0.73, " Miret", "Miret", (-0.1,), -2.5, True),
                              PassageSignals(0.2, "Oslo", "Oslo", (-0.9,), -1.0, False)), 0, 0.8)
    reply = AnswerReply(answer="Miret", confidence=0.9, answer_spans=((3, 8), None), usage={"prompt_tokens": 3},
                        timings_ms={"backend": 1.5}, model="m", p_answerable=0.73, reading=reading)
    assert reply.to_dict()["p_answerable"] == 0.73
    assert AnswerReply.from_dict(json.loads(json.dumps(reply.to_dict()))) == reply
    # every passage's signals travel, checked: a reading that is not one is not this version's reply
    for bad in ({"passages": [], "chosen": 0, "p_verify": 0.5}, {"passages": "x", "chosen": 0, "p_verify": 0.5},
                {**reading.to_json(), "p_verify": 2.0}, {**reading.to_json(), "chosen": 5}, None):
        with pytest.raises(CloudProtocolError, match="does not have the expected shape"):
            AnswerReply.from_dict({**reply.to_dict(), "reading": bad})
    # p(answerable) is a probability, and a reply without it is not this version's.
    for bad in (1.5, -0.01, float("nan"), None, "high"):
        with pytest.raises(CloudProtocolError, match="does not have the expected shape"):
            AnswerReply.from_dict({**reply.to_dict(), "p_answerable": bad})
    missing = reply.to_dict()
    del missing["p_answerable"]
    with pytest.raises(CloudProtocolError):
        AnswerReply.from_dict(missing)
    assert len(new_request_id()) == 32 and new_request_id() != new_request_id()


@pytest.mark.parametrize("change", [{"usage": {"prompt_tokens": float("inf")}}, {"timings_ms": {"total": float("inf")}},
                                    {"timings_ms": {"total": float("nan")}}, {"confidence": float("nan")}])
def test_a_reply_with_numbers_json_cannot_carry_is_a_protocol_error(change: dict) -> None:
    """Found by the fuzz harness: an infinite token count was an OverflowError, an infinite timing reached
    the edge's --json output as Infinity (not JSON)."""
    from cloud.errors import CloudProtocolError

    reply = {"answer": "Miret", "confidence": 0.9, "answer_spans": [], "usage": {}, "timings_ms": {}, "model": "m", **change}
    with pytest.raises(CloudProtocolError, match="expected shape"):
        AnswerReply.from_dict(reply)
