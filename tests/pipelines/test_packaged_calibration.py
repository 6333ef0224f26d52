"""The packaged routing calibration: fitted on the calibration split only, on the new signals, and it
routes controlled questions the way its numbers say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.features import FEATURES
from pipelines.calibration import DEFAULT_CALIBRATION, Calibration, in_calibration_split


def test_fitted_on_the_calibration_split_only_with_the_answerability_signal() -> None:
    raw = json.loads(DEFAULT_CALIBRATION.read_text())
    ids = raw["provenance"]["question_ids"]
    assert len(ids) >= 100 and all(in_calibration_split(i) for i in ids)  # never an evaluation question
    cal = Calibration.load()
    for model in (cal.correct, cal.unanswerable, cal.gain):
        assert set(model.weights) == set(FEATURES) and "p_answerable" in model.weights
    th = cal.thresholds
    assert {"cascade", "abstain", "edge_abstain", "cloud_min_answerable", "cloud_min_confidence"} <= set(th)
    assert all(0.0 <= th[k] <= 1.01 for k in th)
    ans = cal.metrics["answerability"]
    assert set(ans) == {"edge", "cloud"} and all(0.5 < ans[t]["auroc"] <= 1.0 for t in ans)
    # The unanswerable model leans on the edge's own "is it stated?" answer: the more the model says
    # yes, the less likely the question is unanswerable.
    assert cal.unanswerable.weights["p_answerable"] < 0


@pytest.mark.slow
def test_the_edge_answers_a_stated_question_and_doubts_an_unstated_one(unseen_squad: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    from edge.store import DocumentStore
    from indexing.build import build_index
    from indexing.loaders import load_passages
    from pipelines.answer import build_cascade
    from pipelines.settings import load_settings

    with DocumentStore().open() as store:
        passages, sources = load_passages([unseen_squad])
        build_index(store, embedder, passages, sources, "docs")
        cascade = build_cascade(load_settings(collection="docs", cache_enabled=False), store)
        stated = cascade.answer("What is the capital of Zorvath Island?", policy="edge")
        unstated = cascade.answer("Who was the first mayor of Miret?", policy="edge")
    assert (stated.tier, stated.answer) == ("edge", "Miret")
    assert stated.decision is not None and unstated.decision is not None
    assert stated.decision["p_unanswerable"] < unstated.decision["p_unanswerable"]
