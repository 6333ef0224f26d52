"""The document store an entry point opens, from the settings."""

from __future__ import annotations

from edge.store import DocumentStore
from pipelines.settings import Settings

__all__ = ["DocumentStore", "open_store"]


def open_store(settings: Settings) -> DocumentStore:
    """Open Qdrant at ``qdrant_url`` when set, else the embedded index folder.

    :raises StoreError: folder locked by another process, or server unreachable.
    """
    key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    if settings.qdrant_url:
        return DocumentStore(url=settings.qdrant_url, api_key=key).open()
    return DocumentStore(path=settings.effective_qdrant_path()).open()
