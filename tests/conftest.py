"""Shared fixtures: tiny real corpora, the real MiniLM loaded once, isolated index folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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


@pytest.fixture
def memory_store():
    from edge.store import DocumentStore

    store = DocumentStore().open()
    yield store
    store.close()
