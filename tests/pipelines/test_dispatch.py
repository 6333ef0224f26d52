"""The dispatcher over real `ecqa edge serve` workers (real GGUF, mutual TLS with certificates of a real CA,
signed entries in a shared registry folder):
a worker reads as the in-process edge does, a full worker refuses, Random is blind to that while
Load-Aware is not, rejection against redirection to the cloud, and a worker killed mid-request."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from haystack import Document
from index_helpers import memory_index
from routing_helpers import forced, reading
from worker_helpers import SMALL_MODEL, FleetFiles, Worker, post, read_request

from edge.answer_parser import AnswerParser
from edge.prompt_builder import EdgePromptBuilder
from edge.reader import EdgeReader
from edge.registry import FileRegistry
from edge.slm_generator import SlmGenerator
from pipelines.cascade import Cascade, CloudReply
from pipelines.dispatch import Dispatcher, EdgeOverflow
from pipelines.dispatch_policies import RandomPolicy, WorkerLoad
from pipelines.edge_pipeline import EdgeQA
from pipelines.settings import load_settings

pytestmark = [pytest.mark.slow, pytest.mark.network]

DEV_A = Path(__file__).resolve().parents[2] / "data" / "squad-v2-dev-a.json"


def long_texts(n: int = 6) -> list[str]:
    """The longest real SQuAD paragraphs: a request over them keeps a 1-thread worker busy for seconds."""
    doc = json.loads(DEV_A.read_text())
    contexts = sorted({p["context"] for a in doc["data"] for p in a["paragraphs"]}, key=len, reverse=True)
    return contexts[:n]


HOLD = read_request("What is this text about?", long_texts())


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Two workers, one per CPU, one slot and no queue each: a second request to a busy one is refused."""
    reg = tmp_path_factory.mktemp("registry")
    fleet = FleetFiles(tmp_path_factory.mktemp("fleet"))
    a = Worker("w-a", reg, "0", "--queue", "0", fleet=fleet)
    b = Worker("w-b", reg, "1", "--queue", "0", fleet=fleet)
    try:
        yield reg, a.wait_listening(), b.wait_listening(), fleet
    finally:
        a.stop()
        b.stop()


def holding(worker: Worker) -> threading.Thread:
    """Keep ``worker`` busy with a long read (in a thread) and return once it is in flight."""
    t = threading.Thread(target=post, args=(worker.url, HOLD), kwargs={"context": worker.context}, daemon=True)
    t.start()
    worker.wait_busy()
    return t


def test_a_worker_reads_as_the_in_process_edge_does(pair) -> None:  # type: ignore[no-untyped-def]
    reg, a, _, fleet = pair
    texts = ["Normandy is a region in France. It was named after the Normans, who settled there in the 10th century."]
    status, body = post(a.url, read_request("Who was Normandy named after?", texts), context=a.context)
    assert status == 200 and body["worker"] == "w-a"
    local = EdgeReader(EdgePromptBuilder(), SlmGenerator(model_path=SMALL_MODEL, n_threads=1, kv_type="q8_0"), AnswerParser())
    mine = local.read("Who was Normandy named after?", [Document(id="d0", content=texts[0], meta={"title": "T"}, score=1.0)])
    assert body["answer"] == mine.answer and body["answer"]
    assert body["features"]["edge.p_yes_max"] == pytest.approx(mine.features["edge.p_yes_max"], abs=1e-4)
    entry = {e.id: e for e in fleet.registry(reg).entries()}["w-a"]
    assert entry.model.startswith("SmolLM2-135M") and entry.parameters == "135M" and entry.quantization == "Q4_1"
    assert entry.prompt_tps > 10 and entry.gen_tps > 1 and entry.read_tps > 1  # two timings: no order between them
    assert entry.threads == 1 and entry.cores == "0" and entry.capacity == entry.read_tps
    assert a.health()["served"] >= 1


def test_a_full_worker_refuses_and_only_load_aware_looks_elsewhere(pair) -> None:  # type: ignore[no-untyped-def]
    reg, a, b, fleet = pair
    docs = [Document(id="d0", content="The Loire flows through France.", meta={"title": "Loire"})]
    hold = holding(a)
    status, body = post(a.url, read_request("Where does the Loire flow?", ["The Loire flows through France."]),
                        context=a.context)
    assert (status, body["error"]) == (503, "full") and "try another worker" in body["message"]
    # Random, seeded so that its first pick is the busy worker: blind to load, it overflows.
    loads = [WorkerLoad("w-a", 1.0, 0, 1), WorkerLoad("w-b", 1.0, 0, 1)]
    seed = next(s for s in range(100) if RandomPolicy().order(loads, random.Random(s))[0].id == "w-a")
    with pytest.raises(EdgeOverflow, match="w-a full") as info:
        fleet.dispatcher(reg, "random", seed=seed).read("Where does the Loire flow?", docs, timeout_s=60)
    assert [x["outcome"] for x in info.value.attempts] == ["full"]
    d = fleet.dispatcher(reg, "load-aware").read("Where does the Loire flow?", docs, timeout_s=60)
    assert d.worker.id == "w-b" and d.attempts[-1] == {"worker": "w-b", "outcome": "served"}
    assert "France" in d.answer.answer
    assert {x["id"] for x in d.loads} == {"w-a", "w-b"} and d.timings["dispatch"] < 50
    hold.join(120)


class PaidCloud:
    """The cloud tier's client boundary, answering from the passages (the real client over TLS is
    tested in tests/cloud): here only the redirection and its cost are under test."""

    def __init__(self) -> None:
        self.calls = 0

    def ask(self, question: str, passages: list[dict[str, Any]], timeout_s: float) -> CloudReply:
        self.calls += 1
        return CloudReply("France", 0.9, {"cloud": 5.0, "network": 1.0}, 900, 200,
                          usage={"prompt_tokens": 1200, "completion_tokens": 3}, sent={}, model="cloud.gguf",
                          p_answerable=0.95, reading=reading("France", 0.95, passages=len(passages)))

    def estimate_bytes_up(self, question: str, passages: list[dict[str, Any]]) -> int:
        return 900


def test_when_every_worker_is_full_it_is_rejected_or_redirected_and_costed(pair, tiny_squad: Path,  # type: ignore[no-untyped-def]
                                                                          embedder) -> None:
    reg, a, b, fleet = pair
    store = memory_index(embedder, [tiny_squad])
    edge = EdgeQA(load_settings(collection="docs"), store).warm_up_retrieval()  # before the holds: they last seconds
    cal = forced("edge")
    holds = [holding(a), holding(b)]
    reject = Cascade(edge, cal, cloud=PaidCloud(), budget_ms=60000,
                     dispatcher=fleet.dispatcher(reg, "load-aware", overflow="reject"))
    with pytest.raises(EdgeOverflow) as info:
        reject.answer("In what country is Normandy located?", use_cache=False)
    assert "\n" not in str(info.value) and "ECQA_DISPATCH_OVERFLOW=cloud" in str(info.value)
    cloud = PaidCloud()
    redirect = Cascade(edge, cal, cloud=cloud, budget_ms=60000, prices=(0.5, 2.0),
                       dispatcher=fleet.dispatcher(reg, "load-aware", overflow="cloud"))
    r = redirect.answer("In what country is Normandy located?", use_cache=False)
    assert (r.tier, r.answer, cloud.calls) == ("cloud", "France", 1)
    assert r.dispatch is not None and r.dispatch["redirected"] and r.dispatch["worker"] is None
    assert r.dispatch["cloud_cost_usd"] == pytest.approx((1200 * 0.5 + 3 * 2.0) / 1000)
    assert "redirected to the cloud" in r.decision["reason"]
    assert not edge.generator.loaded  # the dispatching process never loaded an edge model of its own
    for t in holds:
        t.join(120)
    served = redirect.answer("In what country is Normandy located?", use_cache=False)  # workers free again
    assert served.dispatch["worker"] in ("w-a", "w-b") and not served.dispatch["redirected"]
    assert served.models["slm"].startswith("SmolLM2-135M")
    assert served.to_json()["dispatch"]["loads"][0]["limit"] == 1
    store.close()


def test_a_worker_killed_mid_request_fails_over_once(tmp_path: Path) -> None:
    reg = tmp_path / "registry"
    workers = [Worker("k-a", reg, "0", ttl_s=2.0), Worker("k-b", reg, "1", ttl_s=2.0)]
    try:
        for w in workers:
            w.wait_listening()
        dispatcher = Dispatcher(FileRegistry(reg, ttl_s=2.0), "load-aware")
        docs = [Document(id=d["id"], content=d["content"], meta=d["meta"]) for d in HOLD["documents"]]
        result: dict[str, Any] = {}
        t = threading.Thread(target=lambda: result.update(d=dispatcher.read(HOLD["question"], docs, timeout_s=120)))
        t.start()
        victim = None
        while victim is None and t.is_alive():
            victim = next((w for w in workers if w.health()["in_flight"] >= 1), None)
        assert victim is not None, "the request finished before a worker could be killed"
        victim.proc.send_signal(signal.SIGKILL)
        t.join(180)
        survivor = next(w for w in workers if w is not victim)
        d = result["d"]
        assert d.worker.id == survivor.id
        assert [x["worker"] for x in d.attempts] == [victim.id, survivor.id]
        assert d.attempts[0]["outcome"].startswith("died") and d.attempts[1]["outcome"] == "served"
        assert survivor.health()["served"] == 1  # answered once, by the survivor only
        deadline = time.monotonic() + 10
        while victim.id in {e.id for e in FileRegistry(reg, ttl_s=2.0).entries()}:  # its heartbeat stopped
            assert time.monotonic() < deadline, "a dead worker never left the registry"
            time.sleep(0.2)
        assert [e.id for e in FileRegistry(reg, ttl_s=2.0).entries()] == [survivor.id]
    finally:
        for w in workers:
            w.stop()
