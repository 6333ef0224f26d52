"""Fuzz targets for what other processes write where this one reads it: a registry entry (a file in the
registry folder or a Redis value), the signed record that carries it in an authenticated fleet, a
worker's read body and its reply to the dispatcher. Either the parsed value, which then serves as the
dispatcher uses it, or ValueError — never another exception (issue 22, findings 2-4)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fuzz_helpers import JSON_VALUES, NUMBERS, mostly
from hypothesis import event, given
from hypothesis import strategies as st
from routing_helpers import reading

from edge.reader import EdgeAnswer
from edge.registry import WorkerEntry, fresh
from pipelines.fleet import SignedEntries

pytestmark = pytest.mark.fuzz

FIELD_VALUES = {
    "id": mostly(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)),
    "url": mostly(st.sampled_from(["http://127.0.0.1:8000", "https://edge-1.lan:443", "http://0.0.0.0:80",
                                   "http://[::1]:9/x", "http://h:0", "ftp://h:1", "http://h", "http://h:99999"])),
    "model": mostly(st.text(max_size=40)),
    "read_tps": mostly(st.floats(0, 1e12), NUMBERS), "prompt_tps": mostly(st.floats(0, 1e12), NUMBERS),
    "heartbeat": mostly(st.floats(0, 2e9), NUMBERS),
    "concurrency": mostly(st.integers(-3, 20)), "queue": mostly(st.integers(-3, 20)),
    "in_flight": mostly(st.integers(-3, 20)), "healthy": mostly(st.booleans()),
}
REQUIRED = ("id", "url", "model")
ENTRIES = mostly(st.fixed_dictionaries({k: FIELD_VALUES[k] for k in REQUIRED},
                                       optional={k: v for k, v in FIELD_VALUES.items() if k not in REQUIRED}),
                 JSON_VALUES, in_ten=9)


@given(data=ENTRIES)
def test_registry_entry_parser(data: Any) -> None:
    try:
        entry = WorkerEntry.from_json(data)
    except ValueError:
        event("refused")
        return
    event("accepted")
    for v in (entry.read_tps, entry.prompt_tps, entry.heartbeat, entry.capacity):
        assert math.isfinite(v) and v >= 0
    assert entry.limit >= 0 and entry.url.startswith(("http://", "https://")) and "0.0.0.0" not in entry.url
    assert WorkerEntry.from_json(entry.to_json()) == entry
    fresh(entry, 1000.0, 6.0)  # a plain comparison of finite numbers


GOOD = EdgeAnswer("Miret", 0.8, [{"id": "p0", "title": "t", "text": "Its capital is Miret."}], {"top_fused": 0.8},
                  {"generate": 5.0}, {"prompt_tokens": 40}, reading("Miret"), ()).to_json()
REPLIES = mostly(st.fixed_dictionaries({}, optional={k: mostly(st.just(v)) for k, v in GOOD.items()}), JSON_VALUES,
                 in_ten=9)


@given(data=REPLIES)
def test_worker_reply_parser(data: Any) -> None:
    try:
        answer = EdgeAnswer.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError):  # what the dispatcher fails over on
        event("refused")
        return
    event("accepted")
    assert 0.0 <= answer.confidence <= 1.0 and all(isinstance(p["text"], str) for p in answer.passages)


DOCUMENT = st.fixed_dictionaries({"id": mostly(st.text(max_size=20)), "content": mostly(st.text(max_size=200))},
                                 optional={"meta": mostly(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3)),
                                           "score": mostly(st.floats(0, 1), NUMBERS)})
READ_BODIES = mostly(st.fixed_dictionaries({"question": mostly(st.text(max_size=120))},
                                           optional={"documents": mostly(st.lists(mostly(DOCUMENT), max_size=4))}),
                     JSON_VALUES, in_ten=9)


@given(payload=READ_BODIES)
def test_worker_read_body(payload: Any) -> None:
    """What `POST /v1/read` accepts: a question and documents the reader can take (finite scores, string
    ids and contents), or ValueError — the worker's 400 with that one-line message."""
    from edge.worker import check_read_request

    try:
        question, documents = check_read_request(payload)
    except ValueError as exc:
        event("refused")
        assert str(exc) and "\n" not in str(exc)
        return
    event("accepted")
    assert question == question.strip() and question
    assert all(isinstance(d.id, str) and isinstance(d.content, str) and math.isfinite(d.score) for d in documents)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[SignedEntries, dict[str, Any]]:
    """A reader of a real fleet, and one record a worker of it signed."""
    from cloud.certs import init_material, issue_workers, load_worker_material

    d = tmp_path_factory.mktemp("fleet")
    init_material(d)
    issue_workers(d, ["w1"])
    entry = WorkerEntry(id="w1", url="https://127.0.0.1:9001", model="m.gguf", read_tps=300.0, heartbeat=1000.0)
    return SignedEntries((d / "ca.pem").read_bytes()), SignedEntries.for_worker(load_worker_material(d, "w1")) \
        .seal(entry.to_json())


CHANGES = st.one_of(
    st.tuples(st.just("entry"), st.sampled_from(sorted(FIELD_VALUES)), st.data()),
    st.tuples(st.sampled_from(["cert", "sig", "entry"]), st.none(), JSON_VALUES),
    st.tuples(st.just("record"), st.none(), JSON_VALUES),
    st.tuples(st.just("same"), st.none(), st.none()),
)


@given(change=CHANGES)
def test_signed_registry_record(signed: tuple[SignedEntries, dict[str, Any]], change: Any) -> None:
    """A record as a registry holds it: the signed entry exactly as its worker signed it, or ValueError —
    no changed field, certificate or signature is ever accepted."""
    reader, record = signed
    where, key, value = change
    if where == "entry":
        if key is not None:
            record = {**record, "entry": {**record["entry"], key: value.draw(FIELD_VALUES[key])}}
        else:
            record = {**record, "entry": value}
    elif where in ("cert", "sig"):
        record = {**record, where: value}
    elif where == "record":
        record = value
    try:
        opened = reader.open(record)
    except ValueError as exc:
        event("refused")
        assert str(exc) and "\n" not in str(exc)
        return
    event("accepted")
    assert opened == signed[1]["entry"]  # only the record as it was signed opens
    assert WorkerEntry.from_json(opened).id == "w1"
