"""Errors a user can fix, raised by the pipelines layer and re-exported for entry points.

Exception tree (every message says what went wrong and how to fix it)::

    PipelineError                 pipelines/ — settings, answering
     └── ConfigError              a settings file or value that does not validate
    IndexingError                 indexing/ — see indexing/errors.py
    EdgeError                     edge/ — see edge/errors.py
    CloudError                    cloud/ — see cloud/errors.py
    LinkError                     netem/ — see netem/errors.py

Entry points catch :data:`USER_ERRORS` and print one line (exit code 2 in the CLI).
"""

from __future__ import annotations

from cloud.errors import CloudError
from edge.errors import EdgeError
from indexing.errors import IndexingError
from netem.errors import LinkError
from reading.errors import ReadingError


class PipelineError(Exception):
    """Base of errors raised in pipelines/ (and indexing/)."""


class ConfigError(PipelineError):
    """A configuration file or value is invalid."""


USER_ERRORS: tuple[type[Exception], ...] = (PipelineError, IndexingError, EdgeError, CloudError, ReadingError,
                                              LinkError)
