"""The embedded cloud backend: a minimal OpenAI-compatible server for a GGUF model.

It serves ``/v1/chat/completions`` (the model's own chat template, from the GGUF metadata) and
``/v1/completions``, greedy, with the chosen tokens' logprobs and up to 20 top alternatives —
what the gateway's answerability probe reads. Why not llama-cpp-python's own server: it returns
logprobs only for models loaded with ``logits_all=True``, which keeps n_ctx x vocabulary floats
(2.4 GiB for Qwen's 152k vocabulary at n_ctx 4096). The decoding is :class:`reading.reader.LlamaReader`'s,
the same loop as the edge's; the longest common prefix of consecutive prompts (the probe's and
the answer's share the passages and the question) stays in the KV cache, and the state of a
prompt's part before its last ``Question: `` line — the passage, in the reading's prompts — is kept in
memory (LRU, ``--prefix-cache-mb``) and restored when a prompt with the same part comes again.

It serves on uvicorn + Starlette (:mod:`reading.http_server`, the workers' and the gateway's stack too).
Run by :class:`cloud.backend.EmbeddedBackend` as ``python -m cloud.backend_server``; it binds
127.0.0.1 only, prints ``ECQA-BACKEND-READY <url> <prompt family>`` when it serves, and exits
when its stdin closes (so it never outlives the gateway that started it). With ``--token-stdin`` the
first line of stdin is a bearer token that every request must carry (``Authorization: Bearer …``,
else 401): the gateway makes a random one, so no other local process can reach the model past the
gateway's mutual TLS. The token never appears in argv or the environment (both readable in ``/proc``).
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from reading.errors import ReadingError
from reading.http_server import BodyRefused, HttpServer, read_body
from reading.kv_store import MemoryStateStore
from reading.models import spec_for_path
from reading.reader import Generation, LlamaReader, PromptTooLongError

logger = logging.getLogger(__name__)

READY_MARKER = "ECQA-BACKEND-READY"
# The error type of a prompt over the context window: llama.cpp's server's, with its ``n_prompt_tokens`` and ``n_ctx``.
CONTEXT_ERROR_TYPE = "exceed_context_size_error"
MAX_BODY_BYTES = 8 << 20
MAX_TOP_LOGPROBS = 20
# Seconds a connection may send nothing (before or between requests, mid-headers, mid-body).
IDLE_TIMEOUT_S = 30.0
# Threads waiting on the model at once (the reader serializes the model itself): the gateway's own limit is 32.
READ_THREADS = 32
# The passage cache: each passage is read with several prompts (probe, answer, check) and comes back with
# the next question about it; a Qwen2.5-1.5B state is ~28 KB per token (f16), ~7 MB per SQuAD passage.
DEFAULT_PREFIX_CACHE_MB = 1024


def default_threads() -> int:
    """All cores: the edge waits while the cloud answers (Qwen2.5-1.5B prefill: 95 tok/s on 2 threads,
    50 on 1, on the 2-core test machine)."""
    return max(1, os.cpu_count() or 1)


class BadRequest(ValueError):
    """A completion request this server does not support (answered with HTTP 400)."""


def _common(body: Any, n_ctx: int) -> tuple[int, list[str]]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    max_tokens = body.get("max_tokens", 16)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= n_ctx:
        raise BadRequest(f"'max_tokens' must be an integer from 1 to {n_ctx}")
    temperature = body.get("temperature", 0.0)
    if not isinstance(temperature, (int, float)) or temperature != 0:
        raise BadRequest("this backend decodes greedily — send temperature 0")
    for name in ("repeat_penalty", "repetition_penalty"):
        if name in body and body[name] not in (1, 1.0):
            raise BadRequest(f"this backend applies no repetition penalty — send {name} 1.0")
    for name in ("stream", "echo"):
        if body.get(name):
            raise BadRequest(f"'{name}' is not supported by this backend")
    if body.get("n", 1) != 1:
        raise BadRequest("'n' must be 1")
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise BadRequest("'stop' must be a string or a list of at most 4 non-empty strings")
    return max_tokens, stop


def _top(value: Any, name: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TOP_LOGPROBS:
        raise BadRequest(f"'{name}' must be an integer from 0 to {MAX_TOP_LOGPROBS}")
    return value


def parse_completion_request(body: Any, n_ctx: int) -> tuple[str, int, list[str], int | None]:
    """``(prompt, max_tokens, stop, logprobs)`` of an OpenAI ``/v1/completions`` body
    (``logprobs`` = how many top alternatives per token, None = no logprobs).

    :raises BadRequest: an unsupported or invalid parameter (greedy decoding only).
    """
    max_tokens, stop = _common(body, n_ctx)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("'prompt' must be one non-empty string")
    logprobs = body.get("logprobs")
    return prompt, max_tokens, stop, None if logprobs is None else _top(logprobs, "logprobs")


def parse_chat_request(body: Any, n_ctx: int) -> tuple[list[dict[str, str]], int, list[str], bool, int]:
    """``(messages, max_tokens, stop, logprobs, top_logprobs)`` of a ``/v1/chat/completions`` body.

    :raises BadRequest: an unsupported or invalid parameter.
    """
    max_tokens, stop = _common(body, n_ctx)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise BadRequest("'messages' must be a non-empty list of {role: system|user|assistant, content: string}")
    logprobs = body.get("logprobs", False)
    if not isinstance(logprobs, bool):
        raise BadRequest("'logprobs' must be true or false")
    top = _top(body.get("top_logprobs"), "top_logprobs")
    if top and not logprobs:
        raise BadRequest("'top_logprobs' needs 'logprobs': true")
    return [{"role": m["role"], "content": m["content"]} for m in messages], max_tokens, stop, logprobs, top


def _top_n(gen: Generation, n: int) -> list[dict[str, float]]:
    return [dict(list(t.items())[:n]) for t in gen.top_logprobs]


def _json(obj: dict[str, Any], status: int = 200, close: bool = False) -> Response:
    # json.dumps as the http.server backend did: Starlette's JSONResponse refuses a -inf logprob.
    return Response(json.dumps(obj).encode(), status, {"Connection": "close"} if close else None,
                    media_type="application/json")


def _error(status: int, message: str, close: bool = False) -> Response:
    return _json({"error": {"message": message, "type": "invalid_request_error", "code": status}}, status, close)


def _completion(server: BackendServer, path: str, body: Any) -> Response:
    """One completion (blocking: the model reads), as the OpenAI API answers it."""
    reader = server.reader
    chat = path == "/v1/chat/completions"
    try:
        if chat:
            messages, max_tokens, stop, want, top = parse_chat_request(body, reader.n_ctx)
            if reader.family != "chat":
                raise BadRequest(f"{server.model_name} is a base model without a chat template — use /v1/completions")
            prompt = reader.render(messages)
        else:
            prompt, max_tokens, stop, logprobs = parse_completion_request(body, reader.n_ctx)
            want, top = logprobs is not None, logprobs or 0
        gen = reader.generate(prompt, max_tokens, stop, top_logprobs=top, prefix_store=server.prefix_store)
    except PromptTooLongError as exc:  # typed as llama.cpp's server types it: the client maps it by type, not wording
        return _json({"error": {"message": str(exc), "type": CONTEXT_ERROR_TYPE, "code": 400,
                                "n_prompt_tokens": exc.prompt_tokens, "n_ctx": exc.n_ctx}}, 400)
    except BadRequest as exc:
        return _error(400, str(exc))
    if chat:
        content = None
        if want:
            tops = _top_n(gen, top)
            content = [{"token": t, "logprob": lp, "bytes": None,
                        "top_logprobs": [{"token": k, "logprob": v, "bytes": None} for k, v in (tops[i].items() if i < len(tops) else [])]}
                       for i, (t, lp) in enumerate(zip(gen.tokens, gen.token_logprobs))]
            if not content and tops:  # stopped at once: the first position's alternatives still count
                content = [{"token": "", "logprob": 0.0, "bytes": None,
                            "top_logprobs": [{"token": k, "logprob": v, "bytes": None} for k, v in tops[0].items()]}]
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": gen.text},
                                  "finish_reason": gen.finish_reason, "logprobs": {"content": content} if want else None}
    else:
        choice = {"index": 0, "text": gen.text, "finish_reason": gen.finish_reason, "logprobs": None}
        if want:
            choice["logprobs"] = {"tokens": list(gen.tokens), "token_logprobs": list(gen.token_logprobs),
                                  # one entry per token (the stop position's too when nothing was generated)
                                  "top_logprobs": _top_n(gen, top)[: max(len(gen.tokens), 1)] if top else None,
                                  "text_offset": None}
    return _json({
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": server.model_name,
        "choices": [choice],
        "usage": {
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": len(gen.token_logprobs),
            "total_tokens": gen.prompt_tokens + len(gen.token_logprobs),
            "prompt_tokens_details": {"cached_tokens": gen.cached_prompt_tokens},
        },
        # llama.cpp's server reports the same: prefill (uncached prompt) and decode speed.
        "timings": {
            "cache_n": gen.cached_prompt_tokens,
            "prompt_n": gen.prompt_tokens - gen.cached_prompt_tokens,
            "prompt_ms": round(gen.prefill_ms, 3),
            "predicted_n": len(gen.token_logprobs),
            "predicted_ms": round(gen.decode_ms, 3),
        },
    })


def make_app(server: BackendServer) -> Starlette:
    """The backend's OpenAI-compatible API as an ASGI app: checks on the event loop, each completion in a
    thread (the reader serializes its model; READ_THREADS bounds the threads waiting on it)."""
    threads = anyio.CapacityLimiter(READ_THREADS)

    def authorized(request: Request) -> bool:
        """The request carries the server's bearer token (always true without one)."""
        if server.token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode("utf-8", "replace"), f"Bearer {server.token}".encode())

    def refused() -> Response:  # the body (if any) is not read: the connection closes after the reply
        return _error(401, "a bearer token is required — only the ecqa gateway that started this server may call it",
                      close=True)

    async def health(request: Request) -> Response:
        return _json({"status": "ok"}) if authorized(request) else refused()

    async def models(request: Request) -> Response:
        if not authorized(request):
            return refused()
        return _json({"object": "list", "data": [{"id": server.model_name, "object": "model", "owned_by": "ecqa"}]})

    async def complete(request: Request) -> Response:
        if not authorized(request):
            return refused()
        declared = request.headers.get("content-length")
        if not declared or not declared.isdigit() or int(declared) == 0:
            return _error(411, "a JSON body with Content-Length is required", close=True)
        try:
            raw = await read_body(request, MAX_BODY_BYTES, server.timeout_s)
        except BodyRefused as exc:
            return _error(exc.status, f"a JSON body with Content-Length is required ({exc})", close=True)
        if raw is None:  # the client went away
            return _error(400, "the connection closed mid-body", close=True)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _error(400, "the body is not JSON")
        return await anyio.to_thread.run_sync(_completion, server, request.url.path, body, limiter=threads)

    async def elsewhere(request: Request, exc: Exception) -> Response:
        if not authorized(request):
            return refused()
        if request.method == "POST":
            return _error(404, "only /v1/completions and /v1/chat/completions are served")
        return _error(404, "not found")

    return Starlette(routes=[Route("/health", health, methods=["GET"]), Route("/v1/health", health, methods=["GET"]),
                             Route("/v1/models", models, methods=["GET"]),
                             Route("/v1/completions", complete, methods=["POST"]),
                             Route("/v1/chat/completions", complete, methods=["POST"])],
                     exception_handlers={404: elsewhere, 405: elsewhere})


class BackendServer(HttpServer):
    """The backend's HTTP server (uvicorn, :mod:`reading.http_server`), bound when it is made.

    :param reader: the loaded model.
    :param model_name: the id ``/v1/models`` serves.
    :param token: the bearer token every request must carry; None = no check.
    :param prefix_store: the states of prompts' parts before "Question: " (None: no cache).
    :param timeout_s: seconds a connection may send nothing (a stalled body: 408, then closed).
    """

    def __init__(self, host: str, port: int, reader: LlamaReader, model_name: str, token: str | None = None,
                 prefix_store: MemoryStateStore | None = None, timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.reader = reader
        self.prefix_store = prefix_store
        self.model_name = model_name
        self.token = token
        self.timeout_s = timeout_s
        super().__init__(make_app(self), host, port, timeout_s=timeout_s, name="cloud-backend")

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def _exit_when_stdin_closes(server: BackendServer) -> None:
    try:
        while sys.stdin.buffer.read(1):
            pass
    except (OSError, ValueError):
        pass
    threading.Thread(target=server.shutdown, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud.backend_server", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--model-name", default="", help="id served by /v1/models (default: file name without .gguf)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--family", choices=("", "chat", "base"), default="",
                        help="prompt family ('' = chat when the GGUF has a chat template)")
    parser.add_argument("--prefix-cache-mb", type=int, default=DEFAULT_PREFIX_CACHE_MB,
                        help="memory for the KV states of prompt prefixes before 'Question: ' (passages; 0 = none)")
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes (set by the gateway)")
    parser.add_argument("--token-stdin", action="store_true",
                        help="read a bearer token from the first line of stdin and refuse requests without it (401)")
    args = parser.parse_args(argv)
    token = None
    if args.token_stdin:
        token = sys.stdin.buffer.readline().decode("ascii", errors="replace").strip()
        if not token:
            print("error: --token-stdin: no token on the first line of stdin — the gateway writes it there", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    spec = spec_for_path(Path(args.model))
    reader = LlamaReader(args.model, n_ctx=args.n_ctx, n_threads=args.threads or default_threads(), family=args.family,
                         model_sha256=spec.sha256 if spec else "")
    try:
        reader.warm_up()
    except ReadingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = args.model_name or Path(args.model).name.removesuffix(".gguf")
    store = MemoryStateStore(args.prefix_cache_mb * 1024 * 1024) if args.prefix_cache_mb > 0 else None
    server = BackendServer(args.host, args.port, reader, name, token=token, prefix_store=store)
    if args.watch_stdin:
        threading.Thread(target=_exit_when_stdin_closes, args=(server,), daemon=True).start()
    print(f"{READY_MARKER} {server.url} {reader.family}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
