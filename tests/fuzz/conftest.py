"""Fixtures of the fuzz targets: each loads what it needs once (module or session scope), never per
example, and never a language model: the real MiniLM, a real in-memory Qdrant holding the tiny corpus,
a real gateway over mutual TLS in front of the fake completions backend (a process-boundary fake,
tests/cloud/cloud_helpers.py). Every test here is marked ``fuzz``; the Hypothesis profiles ("ci", the
default, and "fuzz" for `make fuzz`) are registered in tests/conftest.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The fake backend lives with the cloud tests; make it importable here too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cloud"))

from cloud_helpers import FakeOpenAI  # noqa: E402

FUZZ_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if FUZZ_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.fuzz)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """MiniLM on one thread while fuzzing: with two threads on the 2 shared cores, torch's spinning
    threads made one short question take ~480 ms to embed instead of ~11 ms (measured here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fuzz_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Cloud material (one edge), the fake backend (it reports a 2048-token context, as vLLM does) and a
    real gateway in front of it."""
    from cloud.backend import OpenAIBackend
    from cloud.certs import init_material, load_server_material
    from cloud.gateway import Gateway

    material = tmp_path_factory.mktemp("fuzz-cloud") / "material"
    init_material(material)
    fake = FakeOpenAI()
    fake.max_model_len = 2048
    gateway = Gateway(load_server_material(material), OpenAIBackend(fake.url), port=0).start()
    yield {"material": material, "fake": fake, "gateway": gateway}
    gateway.stop()
    fake.stop()


@pytest.fixture(scope="session")
def fuzz_store(embedder: Any, tiny_squad: Path, unseen_squad: Path) -> Iterator[Any]:
    """An in-memory Qdrant holding collection 'docs' (the tiny SQuAD corpus of tests/conftest.py)."""
    from index_helpers import memory_index

    store = memory_index(embedder, [tiny_squad, unseen_squad])
    yield store
    store.close()


@pytest.fixture(scope="session")
def fuzz_cascade(fuzz_store: Any, fuzz_cloud: dict[str, Any]) -> Any:
    """The cascade over 'docs', escalating to the fuzz gateway; the retrieval models loaded once."""
    from pipelines.answer import build_cascade
    from pipelines.settings import load_settings

    # cloud_n_ctx = the fake backend's context: the edge cuts passages to what the gateway accepts.
    settings = load_settings(collection="docs", cloud_url=fuzz_cloud["gateway"].url, cloud_dir=fuzz_cloud["material"],
                             cloud_n_ctx=2048)
    return build_cascade(settings, fuzz_store).warm_up("cloud")
