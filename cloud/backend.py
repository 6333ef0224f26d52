"""The gateway's LLM backend: any OpenAI-compatible completions server, by URL.

Production runs vLLM (``vllm serve MODEL --port 8000``) and passes its URL; without a URL the
gateway starts :class:`EmbeddedBackend`, a child process serving the default cloud model (see
:mod:`cloud.backend_server`) on 127.0.0.1. Both are spoken to through :class:`OpenAIBackend`,
so the embedded default exercises the same client code as vLLM.
"""

from __future__ import annotations

import logging
import math
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from cloud.errors import BackendError
from cloud.models import resolve_model_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    """One greedy completion: the text, each generated token's logprob, token counts."""

    text: str
    token_logprobs: tuple[float, ...]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    model: str
    timings_ms: dict[str, float] = field(default_factory=dict)  # "prefill"/"decode" when the server reports them
    cached_prompt_tokens: int = 0


class Backend(Protocol):
    """What the gateway needs from a backend (:class:`OpenAIBackend`, :class:`EmbeddedBackend`)."""

    @property
    def name(self) -> str: ...

    def warm_up(self) -> None: ...

    def complete(self, prompt: str, max_tokens: int, stop: tuple[str, ...]) -> Completion: ...

    def close(self) -> None: ...


def check_backend_url(url: str) -> str:
    """The URL without a trailing ``/`` or ``/v1``.

    :raises BackendError: not an http(s) URL with a host.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendError(
            f"backend URL {url!r} is not an http(s) URL — give the OpenAI-compatible server's base URL, e.g. http://127.0.0.1:8000"
        )
    base = url.strip().rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def _answer_logprobs(text: str, logprobs: dict[str, Any]) -> list[float]:
    """The logprobs of the tokens that make up ``text``.

    vLLM also reports the token that hit the stop string (it is cut from the text, not from
    the logprobs); with the tokens listed, those past the end of the text are dropped so that
    every backend's confidence covers the same tokens.
    """
    values = logprobs.get("token_logprobs") or []
    tokens = logprobs.get("tokens")
    kept: list[float] = []
    consumed = 0
    for i, lp in enumerate(values):
        if isinstance(tokens, list) and i < len(tokens):
            if consumed >= len(text):
                break
            consumed += len(str(tokens[i]))
        if lp is not None and math.isfinite(float(lp)):
            kept.append(float(lp))
    return kept


class OpenAIBackend:
    """Client of an OpenAI-compatible ``/v1/completions`` endpoint (vLLM, llama.cpp, the embedded server).

    Sends greedy requests (temperature 0, no repetition penalty under both the llama.cpp and the
    vLLM parameter name) asking for the chosen tokens' logprobs.

    :param url: base URL, with or without ``/v1``.
    :param model: model id to request; '' = the first one ``/v1/models`` lists.
    :param timeout_s: read timeout for one completion.
    :param api_key: bearer token if the server was started with ``--api-key``.
    """

    def __init__(self, url: str, model: str = "", timeout_s: float = 60.0, api_key: str | None = None) -> None:
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        self.api_key = api_key
        self._client: httpx.Client | None = None
        self._model = ""

    def __repr__(self) -> str:
        return f"OpenAIBackend(url={self.url!r}, model={self.model!r})"

    @property
    def name(self) -> str:
        return self._model or self.model or "?"

    def warm_up(self) -> None:
        """Connect and resolve the model id.

        :raises BackendError: the server does not answer or lists no model.
        """
        if self._client is not None:
            return
        base = check_backend_url(self.url)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        client = httpx.Client(
            base_url=base, headers=headers, trust_env=False,
            timeout=httpx.Timeout(connect=5.0, read=self.timeout_s, write=10.0, pool=self.timeout_s),
        )
        try:
            resp = client.get("/v1/models")
            resp.raise_for_status()
            ids = [m["id"] for m in resp.json().get("data", []) if isinstance(m, dict) and "id" in m]
        except httpx.HTTPStatusError as exc:
            client.close()
            raise BackendError(
                f"backend {base} answered /v1/models with HTTP {exc.response.status_code} — is it an OpenAI-compatible "
                "server (and is ECQA_CLOUD_BACKEND_API_KEY right)?"
            ) from None
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            client.close()
            raise BackendError(
                f"backend {base} does not answer ({type(exc).__name__}) — start it (e.g. `vllm serve MODEL --port 8000`) "
                "or omit --backend-url to use the embedded model"
            ) from None
        if self.model and self.model not in ids:
            client.close()
            raise BackendError(f"backend {base} does not serve model {self.model!r} (it serves: {', '.join(ids) or 'none'}) — fix --backend-model")
        if not ids and not self.model:
            client.close()
            raise BackendError(f"backend {base} lists no model at /v1/models — pass --backend-model NAME")
        self._model = self.model or ids[0]
        self._client = client
        logger.info("backend %s serves %s", base, self._model)

    def complete(self, prompt: str, max_tokens: int, stop: tuple[str, ...]) -> Completion:
        """:raises BackendError: unreachable, timed out, an error status or a reply without a choice."""
        self.warm_up()
        assert self._client is not None
        body: dict[str, Any] = {
            "model": self._model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stop": list(stop),
            "logprobs": 1,
            # llama.cpp's servers default repeat_penalty to 1.1, which garbles copied spans;
            # vLLM names it repetition_penalty (and ignores unknown fields).
            "repeat_penalty": 1.0,
            "repetition_penalty": 1.0,
        }
        try:
            resp = self._client.post("/v1/completions", json=body)
        except httpx.TimeoutException:
            raise BackendError(
                f"backend did not answer within {self.timeout_s:g} s — raise ECQA_CLOUD_BACKEND_TIMEOUT_S or use a faster backend"
            ) from None
        except httpx.HTTPError as exc:
            raise BackendError(f"backend unreachable ({type(exc).__name__}) — check that it is still running") from None
        if resp.status_code != 200:
            # The backend's message may quote the prompt: keep it out of errors and logs.
            raise BackendError(f"backend answered HTTP {resp.status_code} — check the backend's own log")
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = str(choice.get("text") or "")
            lps = _answer_logprobs(text, choice.get("logprobs") or {})
            usage = data.get("usage") or {}
            # llama.cpp-style timings (the embedded server, llama.cpp's server); vLLM sends none.
            t = data.get("timings") or {}
            timings = {"prefill": float(t["prompt_ms"]), "decode": float(t["predicted_ms"])} if "prompt_ms" in t else {}
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
            return Completion(
                text=text,
                token_logprobs=tuple(lps),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                finish_reason=str(choice.get("finish_reason") or ""),
                model=str(data.get("model") or self._model),
                timings_ms=timings,
                cached_prompt_tokens=int(cached),
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise BackendError("backend reply is not an OpenAI completion — point --backend-url at an OpenAI-compatible server") from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class EmbeddedBackend:
    """The default backend: the cloud GGUF model served by a child process on 127.0.0.1.

    The child exits when its stdin closes, so it never outlives the gateway even on SIGKILL.

    :param model_path: GGUF file; '' = gemma-3-270m Q4_K_M (assembled into the cache on first use).
    :param n_ctx: context window.
    :param n_threads: CPU threads, 0 = all cores but one.
    :param start_timeout_s: how long the model may take to load.
    :param timeout_s: read timeout for one completion.
    """

    def __init__(
        self, model_path: str = "", n_ctx: int = 4096, n_threads: int = 0, start_timeout_s: float = 120.0, timeout_s: float = 60.0
    ) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.start_timeout_s = start_timeout_s
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: OpenAIBackend | None = None

    def __repr__(self) -> str:
        return f"EmbeddedBackend(model_path={self.model_path!r}, pid={self.pid})"

    @property
    def name(self) -> str:
        return self._client.name if self._client else "embedded"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def url(self) -> str:
        return self._client.url if self._client else ""

    def warm_up(self) -> None:
        """Start the child and wait until it serves.

        :raises CloudModelError: the model cannot be assembled / is not a GGUF file.
        :raises BackendError: the child exits or does not become ready in time.
        """
        if self._client is not None:
            return
        from cloud.backend_server import READY_MARKER

        path = resolve_model_path(self.model_path)
        cmd = [sys.executable, "-m", "cloud.backend_server", "--model", str(path), "--host", "127.0.0.1", "--port", "0",
               "--n-ctx", str(self.n_ctx), "--threads", str(self.n_threads), "--watch-stdin"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Own session: a terminal's Ctrl-C reaches the gateway only, which then stops the child.
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        self._proc = proc
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + self.start_timeout_s
        line = b""
        try:
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(timeout=left):
                    raise BackendError(f"the embedded backend did not start within {self.start_timeout_s:g} s — see its messages above")
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    raise BackendError(f"the embedded backend exited (code {proc.wait()}) — see its messages above")
                line += chunk
        except BaseException:
            self.close()
            raise
        finally:
            sel.close()
        text = line.decode(errors="replace").strip()
        if not text.startswith(READY_MARKER):
            self.close()
            raise BackendError("the embedded backend printed an unexpected line at start — see its messages above")
        url = text.split()[-1]
        client = OpenAIBackend(url, timeout_s=self.timeout_s)
        try:
            client.warm_up()
        except BackendError:
            self.close()
            raise
        self._client = client
        logger.info("embedded backend pid %s serves %s at %s", proc.pid, client.name, url)

    def complete(self, prompt: str, max_tokens: int, stop: tuple[str, ...]) -> Completion:
        self.warm_up()
        assert self._client is not None
        return self._client.complete(prompt, max_tokens, stop)

    def close(self) -> None:
        """Stop the child: close its stdin (it exits by itself), then SIGTERM, then SIGKILL."""
        if self._client is not None:
            self._client.close()
            self._client = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for step in ("stdin", "terminate", "kill"):
            if step == "stdin" and proc.stdin is not None:
                proc.stdin.close()
            elif step == "terminate":
                proc.terminate()
            elif step == "kill":
                proc.kill()
            try:
                proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        if proc.stdout is not None:
            proc.stdout.close()
        logger.info("embedded backend pid %s stopped", proc.pid)
