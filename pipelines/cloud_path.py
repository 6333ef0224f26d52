"""The cloud client an entry point builds from its settings (the cascade calls it, see pipelines/answer.py)."""

from __future__ import annotations

from pathlib import Path

from cloud.certs import default_cloud_dir
from cloud.cloud_answerer import CloudAnswerer
from cloud.prompting import prompt_char_limit
from pipelines.errors import PipelineError
from pipelines.settings import Settings


def cloud_dir_of(settings: Settings) -> Path:
    """``cloud_dir``, or the default ``<user data dir>/ecqa/cloud`` that `ecqa cloud init` writes."""
    return settings.cloud_dir or default_cloud_dir()


def cloud_answerer_from(settings: Settings) -> CloudAnswerer:
    """A (not yet warmed-up) CloudAnswerer configured from the settings.

    :raises PipelineError: no gateway URL configured.
    """
    if not settings.cloud_url:
        raise PipelineError(
            "no cloud gateway URL — pass --cloud-url https://HOST:PORT (printed by `ecqa cloud serve`) or set ECQA_CLOUD_URL"
        )
    return CloudAnswerer(
        url=settings.cloud_url,
        cloud_dir=str(cloud_dir_of(settings)),
        edge=settings.cloud_edge,
        connect_timeout_s=settings.cloud_connect_timeout_s,
        read_timeout_s=settings.cloud_read_timeout_s,
        retries=settings.cloud_retries,
        passage_chars=settings.passage_chars,
        max_tokens=settings.cloud_max_tokens,
        # The backend's context (the embedded one's, ECQA_CLOUD_N_CTX): passages are cut to fit it.
        max_prompt_chars=prompt_char_limit(settings.cloud_n_ctx, settings.cloud_max_tokens),
    )
