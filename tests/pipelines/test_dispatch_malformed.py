"""A worker that answers 200 with something that is not an answer (issue 22, finding 3): `{}` was a
`KeyError: 'answer'` traceback in the dispatcher (exit 1, no failover). Two workers over real HTTP and a
real registry folder: the malformed one is skipped until its next heartbeat and the next one serves.
(Real workers are dispatched to in test_dispatch.py; a fake stands here only for a worker gone wrong.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from haystack import Document
from routing_helpers import PASSAGE, QUESTION, reading

from edge.reader import EdgeAnswer
from edge.registry import FileRegistry, WorkerEntry
from pipelines.dispatch import Dispatcher, EdgeOverflow
from reading.signals import PassageScore

GOOD = EdgeAnswer("Miret", 0.8, [{"id": "p0", "title": "Zorvath Island", "text": PASSAGE, "score": 0.8,
                                  "source": "t.json", "answer_span": [49, 54]}],
                  {"top_fused": 0.8}, {"generate": 5.0}, {"prompt_tokens": 40}, reading("Miret"),
                  (PassageScore(0.8, 0.6, 0.5),)).to_json()
BAD_REPLIES = {
    "empty": {},
    "no reading": {k: v for k, v in GOOD.items() if k != "reading"},
    "features not a map": {**GOOD, "features": [1, 2]},
    "passages of numbers": {**GOOD, "passages": [1, 2]},
    "confidence out of range": {**GOOD, "confidence": 7.5},
    "a list": [GOOD],
}


class FakeWorker:
    """An HTTP worker that answers every /v1/read with ``reply`` (200)."""

    def __init__(self, reply: Any) -> None:
        body = json.dumps(reply).encode()
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.calls += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def workers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[FileRegistry, FakeWorker, FakeWorker]]:
    bad, good = FakeWorker(BAD_REPLIES[request.param]), FakeWorker(GOOD)
    registry = FileRegistry(tmp_path / "registry", ttl_s=30.0)
    # Load-aware tries the bigger capacity first: the broken worker.
    registry.put(WorkerEntry("bad", bad.url, "m", read_tps=1000.0))
    registry.put(WorkerEntry("good", good.url, "m", read_tps=10.0))
    yield registry, bad, good
    bad.close()
    good.close()


DOCS = [Document(id="p0", content=PASSAGE, meta={"title": "Zorvath Island"})]


@pytest.mark.parametrize("workers", list(BAD_REPLIES), indirect=True)
def test_a_reply_that_is_not_an_answer_fails_over_to_the_next_worker(workers) -> None:  # type: ignore[no-untyped-def]
    registry, bad, good = workers
    dispatcher = Dispatcher(registry, "load-aware")
    d = dispatcher.read(QUESTION, DOCS, timeout_s=10)
    assert (d.worker.id, d.answer.answer) == ("good", "Miret")
    assert [a["worker"] for a in d.attempts] == ["bad", "good"]
    assert d.attempts[0]["outcome"].startswith("malformed reply") and d.attempts[1]["outcome"] == "served"
    # Skipped until its next heartbeat: the next question goes straight to the good one.
    again = dispatcher.read(QUESTION, DOCS, timeout_s=10)
    assert [a["worker"] for a in again.attempts] == ["good"] and bad.calls == 1
    # …and counted: once it heartbeats again it is back in the workers' view (answers' `dispatch.loads`, the
    # UI's panel) with its bad reply counted.
    time.sleep(0.01)
    registry.put(WorkerEntry("bad", bad.url, "m", read_tps=1000.0))
    assert {w["id"]: w["bad_replies"] for w in dispatcher.loads(fresh=True)} == {"bad": 1, "good": 0}


@pytest.mark.parametrize("workers", ["empty"], indirect=True)
def test_when_every_reply_is_malformed_it_is_one_clear_error(workers) -> None:  # type: ignore[no-untyped-def]
    registry, bad, _ = workers
    registry.put(WorkerEntry("good", bad.url, "m", read_tps=10.0))  # both now point at the broken one
    with pytest.raises(EdgeOverflow, match=r"bad malformed reply \(KeyError\), good malformed reply"):
        Dispatcher(registry, "load-aware").read(QUESTION, DOCS, timeout_s=10)
