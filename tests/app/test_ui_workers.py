"""The Ask tab with edge workers: the answer says which worker read it, the panel shows each
worker's live load, and a worker that stops leaves the panel (real worker process over mutual TLS, real
Chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ui_helpers import ask, choose, free_port
from worker_helpers import FleetFiles, Worker

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.network]


@pytest.fixture(scope="module")
def worker_ui(tmp_path_factory: pytest.TempPathFactory, tiny_squad: Path, unseen_squad: Path,
              embedder: Any, answering_calibration: Path) -> Iterator[tuple[str, Any, Worker]]:
    from app.ui import launch
    from app.ui_service import UiService
    from edge.store_edge import EdgeShardStore
    from indexing.build import build_index
    from indexing.loaders import load_passages
    from pipelines.settings import Settings

    root = tmp_path_factory.mktemp("ui-workers")
    # The default edge model, as the other UI tests answer with it.
    fleet = FleetFiles(root / "fleet")  # the real fleet: a signed entry, mutual TLS between the UI's dispatcher and it
    worker = Worker("edge-ui-1", root / "registry", "0", ttl_s=2.0, model="qwen2.5-coder-0.5b-instruct",
                    fleet=fleet).wait_listening()
    passages, sources = load_passages([tiny_squad, unseen_squad])
    with EdgeShardStore(path=root / "qdrant") as store:
        build_index(store, embedder, passages, sources, "ui")
    settings = Settings(qdrant_path=root / "qdrant", collection="ui", policy="edge", network=None,
                        calibration_path=answering_calibration, edge_registry=str(root / "registry"),
                        registry_ttl_s=2.0, budget_ms=60000, cloud_dir=fleet.dir, cloud_edge="dispatcher")
    service = UiService.open(settings)
    demo = launch(service, "127.0.0.1", free_port())
    try:
        yield demo.local_url, service, worker
    finally:
        demo.close()
        service.close()
        worker.stop()


def test_the_answer_names_its_worker_and_the_panel_shows_the_load(browser: Any, worker_ui: Any) -> None:
    url, service, worker = worker_ui
    assert not service.cascade.edge.generator.loaded  # the UI process loaded no edge model of its own
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(90_000)
    page.goto(url)
    row = page.locator('#workers tr[data-worker="edge-ui-1"]')
    row.wait_for()
    assert "qwen2.5-coder-0.5b" in row.inner_text().lower() and row.get_attribute("data-in-flight") == "0"
    choose(page, "policy", "edge")
    card = ask(page, "What is the capital of Zorvath Island?")
    assert card["badge"] == "edge" and "Miret" in card["answer"]
    line = page.locator("#answer-card .ecqa-dispatch")
    assert line.get_attribute("data-worker") == "edge-ui-1"
    assert "read by edge worker edge-ui-1 (qwen2.5-coder-0.5b" in line.inner_text().lower() and "load-aware" in line.inner_text()
    page.wait_for_function("() => document.querySelector('#workers tr[data-worker=\"edge-ui-1\"] td:nth-child(4)')"
                           ".innerText.trim() !== '0'")  # served, refreshed by the panel's timer
    worker.stop()  # its entry is withdrawn: the panel empties and a question is refused, in one line
    page.locator('#workers [data-workers="0"]').wait_for()
    card = ask(page, "Who founded the Brindlewick Orchestra?", press_enter=False)
    assert "no edge worker is registered" in card["text"] and "ecqa edge serve" in card["text"]
    assert card["text"].count("\n") <= 1
