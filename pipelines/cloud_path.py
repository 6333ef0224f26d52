"""The cloud client an entry point builds from its settings, over the link the settings name (the cascade
calls it and switches it, see :meth:`pipelines.cascade.Cascade.relink`)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cloud.certs import default_cloud_dir
from cloud.cloud_answerer import CloudAnswerer
from cloud.errors import CloudError
from cloud.prompting import prompt_char_limit
from edge.pii import Redactor, unpack_ner_archive
from netem.link import LinkEmulator
from netem.profiles import get_profile
from pipelines.calibration import cloud_read_plan
from pipelines.cloud_client import AnswererClient
from pipelines.errors import PipelineError
from pipelines.latency import CloudCost
from pipelines.settings import Settings
from reading.models import models_dir

logger = logging.getLogger(__name__)


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
        # The cloud reads as its keep / drop models were fitted (the calibration's cloud read plan).
        read_plan=cloud_read_plan(settings.calibration_path),
    )


@functools.lru_cache(maxsize=4)
def _redactor(ner_archive: Path | None) -> Redactor:
    ner = unpack_ner_archive(ner_archive, models_dir() / "spacy") if ner_archive is not None else None
    return Redactor(ner)


def redactor_from(settings: Settings) -> Redactor | None:
    """The process's redactor for ``settings.pii`` (None: "off"); loaded once (about a second), then shared.

    :raises PiiModelError: ``pii_ner_archive`` is missing, not the official archive, or does not load.
    """
    return None if settings.pii == "off" else _redactor(settings.pii_ner_archive)


def cloud_client_from(settings: Settings) -> AnswererClient:
    """The cascade's cloud client for the settings: the answerer, and personal data kept on the device as
    ``settings.pii`` says (not warmed up).

    :raises PipelineError: no gateway URL configured.
    :raises PiiModelError: a bad ``pii_ner_archive``.
    """
    return AnswererClient(cloud_answerer_from(settings), settings.pii, redactor_from(settings))


@contextlib.contextmanager
def emulated_link(settings: Settings) -> Iterator[Settings]:
    """Settings whose cloud URL goes through a link emulator for ``settings.network``, while open.

    :raises LinkError: unknown profile.
    """
    if not settings.network or not settings.cloud_url:
        yield settings
        return
    profile = get_profile(settings.network)
    parts = urlsplit(settings.cloud_url)
    if not parts.hostname or not parts.port:
        raise PipelineError(f"cannot emulate a link to {settings.cloud_url!r} — give the cloud URL with a port, "
                            "e.g. https://127.0.0.1:8443")
    with LinkEmulator(profile, (parts.hostname, parts.port)) as link:
        # The gateway's certificate names 127.0.0.1 and localhost, so the proxy keeps TLS valid.
        yield settings.model_copy(update={"cloud_url": f"https://127.0.0.1:{link.address[1]}"})


def link_priors(network: str | None) -> dict[str, float]:
    """The latency model's priors for link profile ``network`` (none: the model's defaults).

    :raises LinkError: unknown profile.
    """
    if not network:
        return {}
    profile = get_profile(network)
    return {"rtt_ms": profile.rtt_ms, "bandwidth_mbit": profile.bandwidth_mbit}


@dataclass
class CloudLink:
    """The cloud client over one link (direct, or through a link emulator), and what keeps that link open.

    :param client: the cascade's cloud client.
    :param network: the link profile (None: direct to the gateway).
    """

    client: AnswererClient
    network: str | None
    _open: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    def priors(self) -> dict[str, float]:
        """The latency model's priors for this link."""
        return link_priors(self.network)

    def close(self) -> None:
        """Close the client's connections, then the emulator."""
        self.client.answerer.close()
        self._open.close()

    def answer_cost(self) -> CloudCost | None:
        """What the gateway says an answer costs there (its /healthz): the answer it measured at start-up over
        passages it had not read, the same answer once it had, and those passages' size; else (a gateway that
        did not measure) the recent answers' average. None when it says neither or cannot be asked (the latency
        model then keeps its prior: the call itself will tell)."""
        try:
            cost = self.client.answerer.health().get("answer_ms")
        except CloudError as exc:
            logger.info("no answer time from the gateway: %s", exc)
            return None
        if not isinstance(cost, dict):
            return None
        cold, warm, recent = (_ms(cost.get(k)) for k in ("measured", "measured_warm", "recent"))
        if cold is None:
            return None if recent is None else CloudCost(recent)
        decode = cost.get("measured_decode")
        decode_ms, tokens = (_ms(decode.get("ms")), _count(decode.get("tokens"))) if isinstance(decode, dict) else (None, 0)
        return CloudCost(cold, warm, _count(cost.get("measured_chars")), decode_ms if tokens else None, tokens)


def _ms(value: object) -> float | None:
    """A time the gateway reported, or None when it is not a plausible one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 3_600_000:
        return float(value)
    return None


def _count(value: object) -> int:
    """A count the gateway reported, or 0 when it is not one."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def open_cloud_link(settings: Settings) -> CloudLink:
    """The cloud client for ``settings.cloud_url``, through an emulated ``settings.network`` when set, warmed up:
    configuration mistakes (bad URL, missing certificates) are errors now; only failures at call time
    (unreachable, slow, refused) degrade to the edge answer.

    :raises PipelineError: no gateway URL configured.
    :raises LinkError: unknown profile.
    :raises CloudError: a cloud URL that is not https://, missing cloud material.
    """
    stack = contextlib.ExitStack()
    try:
        linked = stack.enter_context(emulated_link(settings))
        client = cloud_client_from(linked)
        client.answerer.warm_up()
    except BaseException:
        stack.close()
        raise
    return CloudLink(client, settings.network, stack)


Linker = Callable[[str | None], CloudLink]  # a link profile (None: direct) -> the cloud link over it
