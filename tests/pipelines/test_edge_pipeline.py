from __future__ import annotations

from pathlib import Path

import pytest

from edge.store import DocumentStore
from indexing.build import build_index
from indexing.loaders import load_passages
from pipelines.edge_pipeline import EdgeQA
from pipelines.errors import PipelineError
from pipelines.settings import load_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def edge(tiny_squad: Path, unseen_squad: Path, embedder) -> EdgeQA:  # type: ignore[no-untyped-def]
    store = DocumentStore().open()
    passages, sources = load_passages([tiny_squad, unseen_squad])
    build_index(store, embedder, passages, sources, "docs")
    qa = EdgeQA(load_settings(collection="docs", slm_n_ctx=1024), store).warm_up()
    yield qa
    store.close()


def test_answer_contract_provenance_and_timings(edge: EdgeQA) -> None:
    r = edge.answer("What is the capital of Zorvath Island?")
    assert r.tier == "edge"
    assert "Miret" in r.answer
    assert 0.0 < r.confidence <= 1.0
    assert len(r.passages) == 3
    top = r.passages[0]
    assert "Miret" in top["text"] and top["title"] == "Zorvath Island"
    start, end = top["answer_span"]
    assert top["text"][start:end].lower() in r.answer.lower()
    for stage in ("embed", "retrieve", "prefill", "decode", "generate", "total"):
        assert r.timings_ms[stage] >= 0.0
    assert r.timings_ms["total"] >= r.timings_ms["generate"] + r.timings_ms["retrieve"]
    assert r.usage["prompt_tokens"] > 0 and r.usage["completion_tokens"] > 0
    data = r.to_json()
    assert {"answer", "tier", "confidence", "passages", "timings_ms"} <= set(data)


def test_haystack_pipeline_gives_same_answer(edge: EdgeQA) -> None:
    q = "Who founded the Brindlewick Orchestra?"
    direct = edge.answer(q)
    piped = edge.run_pipeline(q)
    assert piped["parser"]["answer"] == direct.answer
    assert [h.passage.id for h in piped["parser"]["hits"]] == [p["id"] for p in direct.passages]


def test_top_k_override_and_bad_questions(edge: EdgeQA) -> None:
    assert len(edge.answer("Where does the Brindlewick Orchestra perform?", top_k=1).passages) == 1
    with pytest.raises(PipelineError, match="empty"):
        edge.answer("   ")
    with pytest.raises(PipelineError, match="shorten"):
        edge.answer("why " * 400)


def test_for_collection_reuses_the_loaded_models(edge: EdgeQA) -> None:
    edge.warm_up()
    other = edge.for_collection("elsewhere")
    assert other.embedder is edge.embedder and other.generator is edge.generator  # nothing loaded twice
    assert other.settings.collection == "elsewhere" and edge.settings.collection != "elsewhere"
    assert other.retriever is not edge.retriever and other.store is edge.store
