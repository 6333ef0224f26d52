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
