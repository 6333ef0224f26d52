"""A collection built for a test (importable: tests/ is on sys.path through tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.store_edge import EdgeShardStore
from indexing.build import build_index
from indexing.loaders import load_passages


def memory_index(embedder: Any, paths: list[Path], collection: str = "docs") -> EdgeShardStore:
    """An open Qdrant Edge store (the default) in a temporary folder holding ``paths`` as ``collection`` (the caller
    closes it, which removes the folder)."""
    store = EdgeShardStore().open()
    passages, sources = load_passages(paths)
    build_index(store, embedder, passages, sources, collection)
    return store
