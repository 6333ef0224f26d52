"""Errors of the edge tier. Messages say what went wrong and how to fix it.

Exception tree::

    EdgeError
     ├── StoreError                Qdrant problems
     │    ├── StoreLockedError     the local index folder is held by another process
     │    ├── StoreUnreachableError   a Qdrant server URL that does not answer
     │    └── CollectionNotFoundError
     ├── EmbedderError             not a sentence-transformers model / dimension mismatch
     ├── ModelError                a GGUF path that is missing or does not load
     │    └── PromptTooLongError   the passages do not fit the context window (a worker answers 413)
     └── PiiError                  personal data on its way to the cloud
          ├── PiiBlockedError      pii is "block" and the question carries some
          └── PiiModelError        an NER archive that is missing, not the official one, or does not load
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base of errors raised in edge/."""


class StoreError(EdgeError):
    """The Qdrant document store cannot do what was asked."""


class StoreLockedError(StoreError):
    """The embedded Qdrant folder is already open in another process."""


class StoreUnreachableError(StoreError):
    """A Qdrant server did not answer."""


class CollectionNotFoundError(StoreError):
    """No collection or alias of that name."""


class EmbedderError(EdgeError):
    """The embedding model cannot be loaded or does not fit the index."""


class ModelError(EdgeError):
    """The edge language model cannot be loaded."""


class PromptTooLongError(ModelError):
    """The question and its passages do not fit the edge model's context window."""


class PiiError(EdgeError):
    """Personal data cannot be kept from the cloud as configured."""


class PiiBlockedError(PiiError):
    """pii is "block" and the question carries personal data (nothing is sent).

    :param counts: kind → distinct values found (never the values).
    """

    def __init__(self, message: str, counts: dict[str, int]) -> None:
        super().__init__(message)
        self.counts = counts


class PiiModelError(PiiError):
    """The NER model's archive is missing, is not the official release, or does not load."""
