"""Errors of index building. Messages say what went wrong and how to fix it.

Exception tree::

    IndexingError            (one of pipelines.errors.USER_ERRORS: the CLI prints it as one line)
     ├── InputFileError     a path that is missing, unreadable or undecodable
     ├── InputFormatError   malformed JSON/JSONL, JSON that is not SQuAD v2, an unknown extension
     └── EmptyCorpusError   the inputs hold no passage
"""

from __future__ import annotations


class IndexingError(Exception):
    """Base of errors raised in indexing/."""


class InputFileError(IndexingError):
    """An input path cannot be read."""


class InputFormatError(IndexingError):
    """An input file is not in a format the loaders accept."""


class EmptyCorpusError(IndexingError):
    """The inputs hold no passage to index."""
