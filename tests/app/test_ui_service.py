"""UiService.ask, the Ask tab's handler, on bad input: the project's one-line errors, before any model
loads (the UI then shows them as an error card)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from app.ui_service import UiService
from edge.store import DocumentStore
from pipelines.calibration import Calibration
from pipelines.cascade import Cascade
from pipelines.edge_pipeline import EdgeQA
from pipelines.errors import PipelineError
from pipelines.settings import load_settings


@pytest.fixture
def service(memory_store: DocumentStore) -> Iterator[UiService]:
    settings = load_settings(collection="docs")
    cascade = Cascade(EdgeQA(settings, memory_store), Calibration.load())  # no model is loaded by either
    yield UiService(settings, memory_store, cascade)


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("threshold", math.nan, "threshold"), ("threshold", 2.0, "threshold"), ("threshold", -1.0, "threshold"),
    ("budget_ms", math.nan, "budget"), ("budget_ms", -5.0, "budget"), ("budget_ms", math.inf, "budget"),
    ("top_k", math.nan, "top-k"), ("top_k", 0, "top-k"), ("top_k", 10_000, "top-k"),
])
def test_ask_refuses_out_of_range_controls(service: UiService, field: str, value: float, fragment: str) -> None:
    """Defect #12.8 (UI): a threshold, Tmax or top-k from the API that is NaN or out of range."""
    with pytest.raises(PipelineError) as exc:
        service.ask("Who founded the Normans?", "cascade", **{field: value})
    msg = str(exc.value)
    assert fragment in msg and " — " in msg and "\n" not in msg
    assert not service.cascade.edge.embedder.loaded  # refused before any model loaded


def test_switching_the_network_moves_the_routers_prediction(tmp_path, embedder, tiny_squad) -> None:  # type: ignore[no-untyped-def]
    """Issue 23: after a switch of the emulated link in the UI, the router predicts with the new link's RTT and
    bandwidth (it held the model of the old link), and the new model is the one that learns."""
    from index_helpers import memory_index

    from cloud.certs import init_material
    from pipelines.answer import build_cascade

    init_material(tmp_path / "cloud")  # one edge (edge-1): the client finds its certificate alone
    settings = load_settings(collection="docs", cloud_url="https://127.0.0.1:9", cloud_dir=tmp_path / "cloud",
                             network="lan", cache_enabled=False)
    store = memory_index(embedder, [tiny_squad])
    service = UiService(settings, store, build_cascade(settings, store))
    try:
        policy = service.cascade.make_policy("cascade")

        def predicted() -> float:
            return service.cascade.router.route(policy, None, 100.0, 20_000, 1e6, True).signals.predicted_total_ms

        on_lan = predicted()
        assert on_lan == pytest.approx(service.cascade.latency.predict(100.0, 20_000).total_ms)
        service.set_network("congested")
        on_congested = predicted()
        assert on_congested == pytest.approx(service.cascade.latency.predict(100.0, 20_000).total_ms)
        assert on_congested > on_lan + 50  # a slower, longer link: RTT and 20 kB over less bandwidth
        service.cascade.latency.observe_edge(7_000.0)  # what the cascade learns reaches the router
        assert service.cascade.router.route(policy, None, 100.0, 20_000, 1e6, True).signals.predicted_total_ms \
            == pytest.approx(service.cascade.latency.predict(100.0, 20_000).total_ms)
        service.set_network("none")
        assert predicted() < on_congested
    finally:
        service.close()
