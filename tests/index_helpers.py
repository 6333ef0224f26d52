"""A collection built for a test (importable: tests/ is on sys.path through tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.store import DocumentStore
from indexing.build import build_index
from indexing.loaders import load_passages


def memory_index(embedder: Any, paths: list[Path], collection: str = "docs") -> DocumentStore:
    """An open in-memory Qdrant holding ``paths`` as ``collection`` (the caller closes it)."""
    store = DocumentStore().open()
    passages, sources = load_passages(paths)
    build_index(store, embedder, passages, sources, collection)
    return store
