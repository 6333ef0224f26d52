from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.embedder import SentenceEmbedder, resolve_embedder_dir
from edge.errors import EmbedderError


def test_bundled_minilm_embeds_unit_vectors(embedder: SentenceEmbedder) -> None:
    assert embedder.dimension == 384
    a, b, c = np.array(embedder.encode(["Where is Normandy?", "Normandy is a region of France.", "Mitochondria make ATP."]))
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert a @ b > a @ c + 0.2


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="not a directory"):
        resolve_embedder_dir(str(tmp_path / "missing"))


def test_directory_without_modules_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EmbedderError, match="not a sentence-transformers model"):
        resolve_embedder_dir(str(tmp_path))


def test_broken_model_dir_fails_at_load(tmp_path: Path) -> None:
    (tmp_path / "modules.json").write_text("[]garbage")
    with pytest.raises(EmbedderError, match="cannot load"):
        SentenceEmbedder(str(tmp_path)).load()
