"""Shared fixtures: tiny real corpora, the real MiniLM loaded once, isolated index folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Hypothesis profiles of the fuzz targets (tests/fuzz/, marker `fuzz`): "ci", the default, runs a few
# hundred examples per target (the whole fuzz suite in under a minute); "fuzz" (`make fuzz`,
# HYPOTHESIS_PROFILE=fuzz) runs 10,000 per target. No deadline: the 2 shared cores make timings noisy.
_FUZZ_SETTINGS = {"deadline": None, "print_blob": True,
                  "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.function_scoped_fixture]}
hypothesis_settings.register_profile("ci", max_examples=200, **_FUZZ_SETTINGS)
hypothesis_settings.register_profile("fuzz", max_examples=10_000, **_FUZZ_SETTINGS)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parent.parent
DEV_A = REPO / "data" / "squad-v2-dev-a.json"

# A SQuAD v2 file about things that exist nowhere in the bundled data, so retrieval and answers
# can only come from what the test indexed ("a file the project has never seen").
UNSEEN = {
    "version": "v2.0",
    "data": [
        {
            "title": "Zorvath_Island",
            "paragraphs": [
                {
                    "context": "Zorvath Island is a volcanic island in the Quellan Sea. Its capital is Miret, "
                    "a harbour town of about 4,000 people founded by salt traders in 1612.",
                    "qas": [
                        {"id": "z1", "question": "What is the capital of Zorvath Island?", "is_impossible": False,
                         "answers": [{"text": "Miret", "answer_start": 71}]},
                        {"id": "z2", "question": "Who was the first mayor of Miret?", "is_impossible": True,
                         "answers": [], "plausible_answers": [{"text": "salt traders", "answer_start": 126}]},
                    ],
                },
                {
                    "context": "The Kelvane glacier covers the northern half of Zorvath Island. Meltwater from "
                    "the glacier feeds the Tarrow River, which runs south to the sea.",
                    "qas": [
                        {"id": "z3", "question": "Which river is fed by meltwater from the Kelvane glacier?",
                         "is_impossible": False, "answers": [{"text": "the Tarrow River", "answer_start": 97}]},
                    ],
                },
            ],
        },
        {
            "title": "Brindlewick_Orchestra",
            "paragraphs": [
                {
                    "context": "The Brindlewick Orchestra was founded in 1887 by the cellist Amara Velt. It "
                    "performs every winter in the Copperdome concert hall.",
                    "qas": [
                        {"id": "b1", "question": "Who founded the Brindlewick Orchestra?", "is_impossible": False,
                         "answers": [{"text": "Amara Velt", "answer_start": 61}]},
                        {"id": "b2", "question": "In which concert hall does the Brindlewick Orchestra perform?",
                         "is_impossible": False, "answers": [{"text": "the Copperdome concert hall", "answer_start": 101}]},
                    ],
                }
            ],
        },
    ],
}


def tiny_dev_a() -> dict:
    """The first 3 paragraphs of the first 2 dev-a articles (real SQuAD v2 text)."""
    doc = json.loads(DEV_A.read_text())
    return {"version": "v2.0", "data": [{**a, "paragraphs": a["paragraphs"][:3]} for a in doc["data"][:2]]}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's data dir or config: every test gets its own index folder."""
    for key in list(os.environ):
        if key.startswith("ECQA_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("ECQA_QDRANT_PATH", str(tmp_path / "qdrant"))


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    (d / "tiny-squad.json").write_text(json.dumps(tiny_dev_a()))
    (d / "unseen-squad.json").write_text(json.dumps(UNSEEN))
    return d


@pytest.fixture(scope="session")
def tiny_squad(corpus_dir: Path) -> Path:
    return corpus_dir / "tiny-squad.json"


@pytest.fixture(scope="session")
def unseen_squad(corpus_dir: Path) -> Path:
    return corpus_dir / "unseen-squad.json"


@pytest.fixture(scope="session")
def embedder():
    from edge.embedder import SentenceEmbedder

    return SentenceEmbedder().load()


@pytest.fixture(params=["edge", "local"])
def memory_store(request: pytest.FixtureRequest):
    """A fresh empty store of each kind: Qdrant Edge in a temporary folder, qdrant-client in memory."""
    from edge.store import DocumentStore
    from edge.store_edge import EdgeShardStore

    store = (EdgeShardStore() if request.param == "edge" else DocumentStore()).open()
    yield store
    store.close()


@pytest.fixture(scope="session")
def answering_calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged calibration with the edge's answer threshold at 0 (the edge never abstains): for tests
    of plumbing (badges, the JSON contract, queues) that need the edge to answer whatever the fitted models
    would say about a made-up passage. Routing itself is tested against the packaged thresholds elsewhere."""
    from pipelines.calibration import DEFAULT_CALIBRATION

    data = json.loads(DEFAULT_CALIBRATION.read_text())
    data["edge"]["threshold"] = 0.0
    path = tmp_path_factory.mktemp("calibration") / "answering.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty model cache folder (``ECQA_MODELS_DIR``) for the model pull tests."""
    folder = tmp_path / "models"
    monkeypatch.setenv("ECQA_MODELS_DIR", str(folder))
    return folder
