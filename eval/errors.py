"""Errors of the evaluation harness a user can fix.

Exception tree::

    pipelines.errors.PipelineError
     └── EvalError     bad --out folder, --limit, extra corpus, or an output folder of another run

The CLI prints them as one line and exits with code 2.
"""

from __future__ import annotations

from pipelines.errors import PipelineError


class EvalError(PipelineError):
    """An evaluation that cannot run as asked; the message says how to fix it."""
