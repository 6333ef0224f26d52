"""The gateway's LLM backend: any OpenAI-compatible completions server, by URL.

Production runs vLLM (``vllm serve MODEL --port 8000 --enable-prefix-caching``) and passes its URL;
without a URL the gateway starts :class:`EmbeddedBackend`, a child process serving the default
cloud model, Qwen2.5-Coder-1.5B-Instruct (see :mod:`cloud.backend_server`), on 127.0.0.1. Both are spoken to through :class:`OpenAIBackend`,
so the embedded default exercises the same client code as vLLM.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from cloud.backend_server import CONTEXT_ERROR_TYPE, READY_MARKER
from cloud.errors import BackendContextError, BackendError, CloudModelError
from reading.errors import ReadingError
from reading.model_manifest import DEFAULT_CLOUD_MODEL
from reading.models import resolve_gguf, spec_for_path

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
    top_logprobs: tuple[dict[str, float], ...] = ()  # per generated token, when asked for


class Backend(Protocol):
    """What the gateway needs from a backend (:class:`OpenAIBackend`, :class:`EmbeddedBackend`)."""

    @property
    def name(self) -> str: ...

    @property
    def prompt_family(self) -> str: ...

    def warm_up(self) -> None: ...

    def complete(self, prompt: str, max_tokens: int, stop: tuple[str, ...], top_logprobs: int = 0) -> Completion: ...

    def chat(self, messages: list[dict[str, str]], max_tokens: int, stop: tuple[str, ...] = (),
             top_logprobs: int = 0) -> Completion: ...

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


# The embedded server types a prompt over the context window (CONTEXT_ERROR_TYPE, with the numbers), as llama.cpp's
# server does. How other servers say it (HTTP 400): vLLM (two wordings; its errors carry no type for it), llama.cpp's
# server (older builds: only the message). Only the numbers are kept: the message may quote the prompt.
_CONTEXT_ERRORS = (
    re.compile(r"maximum context length is (?P<ctx>\d+) tokens.*?(?:requested (?P<requested>\d+) tokens|"
               r"has (?P<prompt>\d+) input tokens)", re.DOTALL),
    re.compile(r"exceed_context_size_error|exceeds the available context size"),
)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def context_error(status: int, body: bytes) -> BackendContextError | None:
    """A :class:`BackendContextError` if ``body`` is a backend's "prompt over the context window" refusal."""
    if status != 400:
        return None
    try:
        err = json.loads(body).get("error") or {}
    except (ValueError, AttributeError):
        return None
    if not isinstance(err, dict):
        return None
    if err.get("type") == CONTEXT_ERROR_TYPE:
        return BackendContextError("the prompt is longer than the backend's context window",
                                   _int(err.get("n_prompt_tokens")), _int(err.get("n_ctx")))
    text = str(err.get("message", ""))
    for pattern in _CONTEXT_ERRORS:
        found = pattern.search(text)
        if found:
            groups = {k: v for k, v in found.groupdict().items() if v}
            prompt = int(groups.get("prompt") or groups.get("requested") or _int(err.get("n_prompt_tokens")))
            ctx = int(groups.get("ctx") or _int(err.get("n_ctx")))
            return BackendContextError("the prompt is longer than the backend's context window", prompt, ctx)
    return None


@dataclass(eq=False, repr=False)
class OpenAIBackend:
    """Client of an OpenAI-compatible ``/v1/completions`` endpoint (vLLM, llama.cpp, the embedded server).

    Sends greedy requests (temperature 0, no repetition penalty under both the llama.cpp and the
    vLLM parameter name) asking for the chosen tokens' logprobs.

    :param url: base URL, with or without ``/v1``.
    :param model: model id to request; '' = the first one ``/v1/models`` lists.
    :param timeout_s: read timeout for one completion.
    :param api_key: bearer token if the server was started with ``--api-key``.
    :param prompt_family: "chat" (an instruct model: ``/v1/chat/completions``, the server applies its
        chat template) or "base" (a completion-style few-shot prompt to ``/v1/completions``).
    """

    url: str
    model: str = ""
    timeout_s: float = 60.0
    api_key: str | None = None
    prompt_family: str = "chat"
    context_tokens: int | None = field(default=None, init=False)  # the model's window, when /v1/models says (vLLM: max_model_len)
    _client: httpx.Client | None = field(default=None, init=False)
    _model: str = field(default="", init=False)

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
            models = [m for m in resp.json().get("data", []) if isinstance(m, dict) and "id" in m]
            ids = [m["id"] for m in models]
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
        card = next((m for m in models if m["id"] == self._model), {})
        max_len = card.get("max_model_len")
        if isinstance(max_len, int) and not isinstance(max_len, bool) and max_len > 0:
            self.context_tokens = max_len
        self._client = client
        logger.info("backend %s serves %s", base, self._model)

    def _body(self, max_tokens: int, stop: tuple[str, ...]) -> dict[str, Any]:
        return {
            "model": self._model,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stop": list(stop),
            # llama.cpp's servers default repeat_penalty to 1.1, which garbles copied spans;
            # vLLM names it repetition_penalty (and ignores unknown fields).
            "repeat_penalty": 1.0,
            "repetition_penalty": 1.0,
        }

    def complete(self, prompt: str, max_tokens: int, stop: tuple[str, ...], top_logprobs: int = 0) -> Completion:
        """A greedy ``/v1/completions`` call (a base model's completion-style prompt).

        :raises BackendError: unreachable, timed out, an error status or a reply without a choice.
        """
        self.warm_up()  # resolves the model id the body names
        body = {**self._body(max_tokens, stop), "prompt": prompt, "logprobs": max(1, top_logprobs)}
        return self._post("/v1/completions", body, chat=False, top=top_logprobs)

    def chat(self, messages: list[dict[str, str]], max_tokens: int, stop: tuple[str, ...] = (),
             top_logprobs: int = 0) -> Completion:
        """A greedy ``/v1/chat/completions`` call: the server renders the model's chat template.

        :raises BackendError: unreachable, timed out, an error status or a reply without a choice.
        """
        self.warm_up()  # resolves the model id the body names
        body: dict[str, Any] = {**self._body(max_tokens, stop), "messages": messages, "logprobs": True}
        if top_logprobs:
            body["top_logprobs"] = top_logprobs
        return self._post("/v1/chat/completions", body, chat=True, top=top_logprobs)

    def _post(self, path: str, body: dict[str, Any], chat: bool, top: int) -> Completion:
        assert self._client is not None  # complete() and chat() warmed up: the body names the model
        try:
            resp = self._client.post(path, json=body)
        except httpx.TimeoutException:
            raise BackendError(
                f"backend did not answer within {self.timeout_s:g} s — raise ECQA_CLOUD_BACKEND_TIMEOUT_S or use a faster backend"
            ) from None
        except httpx.HTTPError as exc:
            raise BackendError(f"backend unreachable ({type(exc).__name__}) — check that it is still running") from None
        if resp.status_code != 200:
            # The backend's message may quote the prompt: keep it out of errors and logs.
            too_long = context_error(resp.status_code, resp.content)
            if too_long is not None:
                raise too_long
            raise BackendError(f"backend answered HTTP {resp.status_code} to {path} — check the backend's own log")
        try:
            data = resp.json()
            choice = data["choices"][0]
            if chat:
                text = str((choice.get("message") or {}).get("content") or "")
                content = (choice.get("logprobs") or {}).get("content") or []
                lps = [float(c["logprob"]) for c in content if c.get("token")]
                tops = tuple({str(t["token"]): float(t["logprob"]) for t in (c.get("top_logprobs") or [])}
                             for c in content) if top else ()
            else:
                text = str(choice.get("text") or "")
                logprobs = choice.get("logprobs") or {}
                lps = _answer_logprobs(text, logprobs)
                tops = tuple({str(k): float(v) for k, v in (t or {}).items()}
                             for t in (logprobs.get("top_logprobs") or [])) if top else ()
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
                top_logprobs=tops,
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise BackendError("backend reply is not an OpenAI completion — point --backend-url at an OpenAI-compatible server") from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


@dataclass(eq=False, repr=False)
class EmbeddedBackend:
    """The default backend: the cloud GGUF model served by a child process on 127.0.0.1.

    The child exits when its stdin closes, so it never outlives the gateway even on SIGKILL.

    :param model_path: a manifest model name or a GGUF file; '' = the default cloud model.
    :param n_ctx: context window.
    :param n_threads: CPU threads, 0 = all cores but one.
    :param start_timeout_s: how long the model may take to load.
    :param timeout_s: read timeout for one completion.
    """

    model_path: str = ""
    n_ctx: int = 4096
    n_threads: int = 0
    start_timeout_s: float = 120.0
    timeout_s: float = 60.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _client: OpenAIBackend | None = field(default=None, init=False)
    _family: str = field(default="", init=False)

    def __repr__(self) -> str:
        return f"EmbeddedBackend(model_path={self.model_path!r}, pid={self.pid})"

    @property
    def name(self) -> str:
        return self._client.name if self._client else "embedded"

    @property
    def prompt_family(self) -> str:
        self.warm_up()
        return self._family

    @property
    def context_tokens(self) -> int:
        """The context window the child serves (the gateway refuses prompts that cannot fit it)."""
        return self.n_ctx

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
        try:
            path = resolve_gguf(self.model_path, DEFAULT_CLOUD_MODEL)
        except ReadingError as exc:
            raise CloudModelError(f"cloud model: {exc}") from None
        spec = spec_for_path(path)
        cmd = [sys.executable, "-m", "cloud.backend_server", "--model", str(path), "--host", "127.0.0.1", "--port", "0",
               "--n-ctx", str(self.n_ctx), "--threads", str(self.n_threads), "--watch-stdin", "--token-stdin"]
        if spec is not None:
            cmd += ["--family", spec.prompt_family, "--model-name", spec.name]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Only the gateway holds the token: other local processes cannot use the plain-HTTP port. It goes
        # over the child's stdin, never argv or the environment (readable in /proc by the same user).
        token = secrets.token_urlsafe(32)
        # Own session: a terminal's Ctrl-C reaches the gateway only, which then stops the child.
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        self._proc = proc
        assert proc.stdout is not None and proc.stdin is not None
        try:
            proc.stdin.write(token.encode("ascii") + b"\n")
            proc.stdin.flush()
        except OSError:
            pass  # the child already exited: reported below
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
        url, family = text.split()[1:3]
        client = OpenAIBackend(url, timeout_s=self.timeout_s, api_key=token, prompt_family=family)
        try:
            client.warm_up()
        except BackendError:
            self.close()
            raise
        self._client, self._family = client, family
        logger.info("embedded backend pid %s serves %s at %s", proc.pid, client.name, url)

    def complete(self, prompt: str, max_tokens: int, stop: tuple[str, ...], top_logprobs: int = 0) -> Completion:
        self.warm_up()
        assert self._client is not None
        return self._client.complete(prompt, max_tokens, stop, top_logprobs)

    def chat(self, messages: list[dict[str, str]], max_tokens: int, stop: tuple[str, ...] = (),
             top_logprobs: int = 0) -> Completion:
        self.warm_up()
        assert self._client is not None
        return self._client.chat(messages, max_tokens, stop, top_logprobs)

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
