"""Errors of the reading layer. Messages say what went wrong and how to fix it.

Exception tree::

    ReadingError
     └── ModelError                   a model file that cannot be named, fetched or trusted
          ├── UnknownModelError       a name that is not in the manifest
          ├── ModelNotPulledError     a manifest model that is not in the cache yet
          ├── ModelFileError          a GGUF path that does not exist or is not a GGUF file
          ├── ModelVerifyError        a file whose size or SHA-256 differs from the manifest
          └── ModelPullError          a source failed (offline, refused wheel, pip missing)
               └── NoSpaceError       the disk of the models folder is full
"""

from __future__ import annotations


class ReadingError(Exception):
    """Base of errors raised in reading/."""


class ModelError(ReadingError):
    """A model file cannot be named, fetched or trusted."""


class UnknownModelError(ModelError):
    """The name is not in the model manifest."""


class ModelNotPulledError(ModelError):
    """The model is in the manifest but not in the cache: `ecqa models pull NAME` fetches it."""


class ModelFileError(ModelError):
    """A path given as a model does not exist or is not a GGUF file."""


class ModelVerifyError(ModelError):
    """A model file does not have the manifest's size and SHA-256; nothing was loaded or kept."""


class ModelPullError(ModelError):
    """A model could not be fetched from any of its sources."""


class NoSpaceError(ModelPullError):
    """The models folder's disk is full (ENOSPC); no other source can fix that."""
