"""The cascade with real components: the edge on a tiny index with the real GGUF, the real cloud
client over real TLS, the real answer cache. Routing is forced with constant calibration models."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from index_helpers import memory_index
from routing_helpers import constant, forced, on, reading

from cloud.certs import init_material
from cloud.cloud_answerer import CloudAnswerer
from edge.answer_cache import AnswerCache
from edge.store import DocumentStore
from eval.replay import route_records
from indexing.build import build_index
from indexing.loaders import load_passages
from pipelines.calibration import AnswerModel, Calibration
from pipelines.cascade import Cascade, CloudReply
from pipelines.cloud_client import AnswererClient
from pipelines.edge_pipeline import EdgeQA
from pipelines.latency import CircuitBreaker
from pipelines.settings import load_settings
from reading.passages import PassageReading

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tiny_squad: Path, unseen_squad: Path, embedder):  # type: ignore[no-untyped-def]
    s = memory_index(embedder, [tiny_squad, unseen_squad])
    yield s
    s.close()


@pytest.fixture(scope="module")
def edge(store: DocumentStore) -> EdgeQA:
    return EdgeQA(load_settings(collection="docs", slm_n_ctx=1024), store).warm_up()


@pytest.fixture(scope="module")
def cloud_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cloud")
    init_material(d)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BlackHole:
    """A TCP server that accepts connections and never answers: a cloud that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def client(cloud_dir: Path, port: int) -> AnswererClient:
    return AnswererClient(CloudAnswerer(f"https://127.0.0.1:{port}", str(cloud_dir), connect_timeout_s=1.0,
                                        read_timeout_s=30.0, retries=0))


def test_confident_edge_answer_stays_on_the_edge(edge: EdgeQA, cloud_dir: Path) -> None:
    cascade = Cascade(edge, forced("edge"), cloud=client(cloud_dir, free_port()))
    r = cascade.answer("What is the capital of Zorvath Island?", policy="cascade")
    assert (r.tier, r.answer) == ("edge", "Miret")
    d = r.decision
    assert d is not None and d["route"] == "edge" and not d["degraded"]
    assert d["confidence"] == pytest.approx((1 + 0.1 - 0.95 * 0.95) / 2, abs=1e-4) and d["threshold"] == 0.5
    assert "≥ 0.50 → edge answer kept" in d["reason"] and r.confidence == pytest.approx(0.95 * 0.95)
    assert d["measured_total_ms"] == pytest.approx(r.timings_ms["total"], abs=0.1)
    assert d["predicted_total_ms"] > r.timings_ms["generate"]
    assert r.bytes_up == 0 and set(r.features) >= {"top_dense", "edge.is_span", "edge.p_yes_max", "edge.p_verify"}


def test_unanswerable_evidence_abstains_without_cloud_call(edge: EdgeQA, cloud_dir: Path) -> None:
    hole = BlackHole()
    try:
        cascade = Cascade(edge, forced("abstain"), cloud=client(cloud_dir, hole.port))
        r = cascade.answer("Who was the first mayor of Miret?", policy="cascade")
    finally:
        hole.close()
    assert (r.tier, r.answer) == ("abstain", "")
    assert r.decision is not None and r.decision["route"] == "abstain"
    assert hole.conns == []  # no connection was even opened


def test_dead_cloud_degrades_to_edge_and_breaker_opens(edge: EdgeQA, cloud_dir: Path) -> None:
    breaker = CircuitBreaker(failures=2, reset_s=60.0)
    cascade = Cascade(edge, forced("cloud"), cloud=client(cloud_dir, free_port()), breaker=breaker, budget_ms=8000)
    for _ in range(2):
        r = cascade.answer("Who founded the Brindlewick Orchestra?", policy="cascade", use_cache=False)
        assert r.tier == "edge" and r.decision is not None and r.decision["degraded"]
        assert "cloud failed" in r.decision["reason"] and r.answer == "Amara Velt"
    assert breaker.state == "open"
    r = cascade.answer("Who founded the Brindlewick Orchestra?", policy="cascade", use_cache=False)
    assert r.decision is not None and not r.decision["degraded"]
    assert "circuit breaker open" in r.decision["reason"] and r.tier == "edge"


def test_block_answers_a_question_with_personal_data_on_the_edge_and_opens_no_connection(edge: EdgeQA,
                                                                                         cloud_dir: Path) -> None:
    """pii "block" under the cascade: the escalation is not sent (not a cloud failure: the breaker is not told);
    the edge's own choice stands, and the reason says why. Under the cloud policy the refusal is the answer."""
    from edge.errors import PiiBlockedError
    from edge.pii import Redactor

    hole = BlackHole()
    breaker = CircuitBreaker(failures=1, reset_s=60.0)
    try:
        blocking = AnswererClient(client(cloud_dir, hole.port).answerer, "block", Redactor())
        cascade = Cascade(edge, forced("cloud"), cloud=blocking, breaker=breaker, budget_ms=60000)
        r = cascade.answer("Who founded the Brindlewick Orchestra, says jane.roe@example.org?", policy="cascade",
                           use_cache=False)
        with pytest.raises(PiiBlockedError, match=r"1 email\) and pii is 'block'"):
            cascade.answer("Who founded the Brindlewick Orchestra, says jane.roe@example.org?", policy="cloud",
                           use_cache=False)
    finally:
        hole.close()
    assert r.tier == "edge" and r.decision is not None and r.decision["degraded"]  # the edge's own answer
    assert "not sent to the cloud: the question carries personal data (1 email)" in r.decision["reason"]
    assert hole.conns == [] and breaker.state == "closed" and r.sent == {} and r.redactions == {}


def test_dead_cloud_leaves_the_edges_own_choice_even_when_that_is_no_answer(edge: EdgeQA, cloud_dir: Path) -> None:
    """Degraded is the edge deciding alone: where its answer is worth less than abstaining, "no answer"."""
    cascade = Cascade(edge, forced("cloud_or_nothing"), cloud=client(cloud_dir, free_port()), budget_ms=8000)
    r = cascade.answer("Who founded the Brindlewick Orchestra?", policy="cascade", use_cache=False)
    assert r.decision is not None and r.decision["degraded"] and r.decision["route"] == "abstain"
    assert (r.tier, r.answer) == ("abstain", "") and r.confidence == pytest.approx(0.9, abs=1e-3)
    assert r.decision["reason"].endswith("→ no answer, degraded") and "cloud failed" in r.decision["reason"]


def test_hanging_cloud_answers_within_budget(edge: EdgeQA, cloud_dir: Path) -> None:
    question = "Which river is fed by meltwater from the Kelvane glacier?"
    t0 = time.perf_counter()
    edge.answer(question)
    # The budget leaves 1.5 s for the cloud after the edge's own time (which depends on the machine).
    budget = (time.perf_counter() - t0) * 1000 + 1500.0
    hole = BlackHole()
    try:
        cascade = Cascade(edge, forced("cloud"), cloud=client(cloud_dir, hole.port), budget_ms=budget)
        t0 = time.perf_counter()
        r = cascade.answer(question, policy="cascade")
        elapsed = (time.perf_counter() - t0) * 1000
    finally:
        hole.close()
    assert len(hole.conns) == 1  # the cloud was called, and hung
    assert r.decision is not None and r.decision["degraded"] and r.tier == "edge"
    assert "cloud failed" in r.decision["reason"]
    assert elapsed <= budget + 250.0  # Tmax plus a small margin
    assert r.answer and "Kelvane" in r.passages[0]["text"]  # the edge's own answer, from the right passage


def test_cloud_only_policy_with_dead_cloud_still_answers(edge: EdgeQA, cloud_dir: Path) -> None:
    cascade = Cascade(edge, forced("edge"), cloud=client(cloud_dir, free_port()))
    r = cascade.answer("What is the capital of Zorvath Island?", policy="cloud", use_cache=False)
    assert r.tier == "edge" and r.decision is not None and r.decision["degraded"] and r.answer == "Miret"


def test_cache_hits_guard_and_reindex_invalidation(edge: EdgeQA, store: DocumentStore, embedder, unseen_squad: Path) -> None:  # type: ignore[no-untyped-def]
    cache = AnswerCache(max_entries=16)
    cascade = Cascade(edge, forced("edge"), cache=cache)
    first = cascade.answer("Who founded the Brindlewick Orchestra?", policy="edge")
    assert first.tier == "edge"
    again = cascade.answer("who founded the Brindlewick Orchestra", policy="edge")
    assert again.tier == "cache" and again.answer == first.answer
    assert again.decision is not None and again.decision["route"] == "cache"
    assert again.timings_ms["total"] < 5.0
    # Another policy or threshold takes its own route: the edge policy's answer is not served to it.
    other = cascade.answer("Who founded the Brindlewick Orchestra?", policy="cascade", threshold=0.0)
    assert other.tier != "cache" and other.decision is not None and other.decision["policy"] == "cascade"
    negated = cascade.answer("Who did not found the Brindlewick Orchestra?", policy="edge")
    assert negated.tier != "cache"
    assert cache.stats()["exact_hits"] == 1
    # A rebuild switches the alias to a new version: the cached answer must not come back.
    passages, sources = load_passages([unseen_squad])
    build_index(store, embedder, passages, sources, "docs", recreate=True)
    time.sleep(2.1)  # the retriever re-reads the manifest every 2 s
    after = cascade.answer("Who founded the Brindlewick Orchestra?", policy="edge")
    assert after.tier == "edge"


class RecordedCloud:
    """The cloud tier as a recorded reading returns it: the fake sits at the process boundary (the real
    client over real TLS is tested above and in tests/cloud)."""

    def __init__(self, reading: PassageReading | None) -> None:
        self.reading = reading  # None: every call fails

    def estimate_bytes_up(self, question: str, passages: list[dict[str, Any]]) -> int:
        return 1500

    def ask(self, question: str, passages: list[dict[str, Any]], timeout_s: float) -> CloudReply:
        if self.reading is None:
            raise ConnectionRefusedError("connection refused")
        return CloudReply(self.reading.answer, 0.9, {"network": 40.0, "cloud": 700.0}, 1500, 400,
                          {"completion_tokens": 3}, {}, "recorded", self.reading.passages[0].p_yes, self.reading)


def test_replay_and_live_cascade_take_the_same_route(edge: EdgeQA) -> None:
    """Issue 23: the live cascade and the evaluation's replay of the same readings route and settle alike —
    real edge readings, four calibrations (the packaged one, two forced, one whose cascade keeps a cloud answer
    only where the edge agrees), every policy, the cloud keeping, dropping or failing."""
    questions = {"What is the capital of Zorvath Island?": ["Miret"], "Who was the first mayor of Miret?": [""],
                 "Who founded the Brindlewick Orchestra?": ["Amara Velt"]}
    readings = {q: edge.generate(q, edge.retrieve(q)) for q in questions}  # the edge model reads each once
    edge.generate = lambda q, retrieved: readings[q]  # type: ignore[method-assign]  # and the cascade gets that reading
    clouds = {"keeps": reading("Miret", p_yes=0.95), "unstated": reading("Paris", p_yes=0.05), "fails": None}
    seen = set()
    try:
        agreeing = forced("cloud")
        agreeing = dataclasses.replace(agreeing, cloud_edge=AnswerModel(on("agree_edge_cloud", 8.0, -4.0), constant(0.9), 0.5))
        for cal in (Calibration.load(), forced("cloud"), forced("cloud_or_nothing"), agreeing):
            for outcome, cloud in clouds.items():
                for policy in ("edge", "cloud", "cascade"):
                    live, records = [], []
                    for q, answers in questions.items():
                        cascade = Cascade(edge, cal, cloud=RecordedCloud(cloud), budget_ms=1e6)
                        r = cascade.answer(q, policy=policy, use_cache=False)
                        live.append((r.tier, r.answer, bool(r.decision and r.decision["degraded"])))
                        ea = readings[q]
                        cloud_part = {"error": "connection refused", "total_ms": 5.0, "bytes_up": 1500} if cloud is None else {
                            "answer": cloud.answer, "reading": cloud.to_json(), "timings": {"network": 40.0, "cloud": 700.0},
                            "bytes_up": 1500, "bytes_down": 400, "usage": {"completion_tokens": 3}, "total_ms": 800.0}
                        records.append({"id": q, "question": q, "answers": answers, "has_answer": answers != [""],
                                        "retrieval_ms": 30.0, "passage_scores": [dataclasses.asdict(s) for s in ea.scores],
                                        "passages": [p["text"] for p in ea.passages],
                                        "edge": {"answer": ea.answer, "reading": ea.reading.to_json(), "total_ms": 2000.0},
                                        "cloud": cloud_part})
                    replayed = [(x.route, x.answer, x.degraded) for x in route_records(records, cal.policy(policy), cal, 1e6)]
                    assert replayed == live, (policy, outcome, cal.provenance)
                    seen.update(x[0] + ("/degraded" if x[2] else "") for x in live)
    finally:
        del edge.generate  # the fixture's own method again
    assert {"edge", "cloud", "abstain", "edge/degraded", "abstain/degraded"} <= seen  # every outcome was compared
