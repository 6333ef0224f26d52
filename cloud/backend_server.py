"""The embedded cloud backend: a minimal OpenAI-compatible completions server for a GGUF model.

Why not llama-cpp-python's own server: it returns token logprobs only for models loaded with
``logits_all=True``, which keeps n_ctx x vocab floats (2 GiB for gemma's 262k vocabulary at
n_ctx 2048). Here decoding is a greedy loop over ``Llama.eval`` that reads each chosen token's
logprob from the last logits row only, and the prompt's longest common prefix with the previous
one (the few-shot examples) stays in the KV cache.

Run by :class:`cloud.backend.EmbeddedBackend` as ``python -m cloud.backend_server``; it binds
127.0.0.1 only, prints ``ECQA-BACKEND-READY <url>`` when it serves, and exits when its stdin
closes (so it never outlives the gateway that started it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

READY_MARKER = "ECQA-BACKEND-READY"
MAX_BODY_BYTES = 8 << 20


def default_threads() -> int:
    """All cores but one (the gateway and the edge need CPU too); at least one."""
    return max(1, (os.cpu_count() or 1) - 1)


class BadRequest(ValueError):
    """A completion request this server does not support (answered with HTTP 400)."""


class LlamaCompleter:
    """Greedy completions with token logprobs from a GGUF model (one request at a time).

    :param model_path: GGUF file.
    :param n_ctx: context window in tokens.
    :param n_threads: CPU threads, 0 = all cores.
    """

    def __init__(self, model_path: str, n_ctx: int = 4096, n_threads: int = 0) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._llm: Any = None
        self._stop_ids: set[int] = set()
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        if self._llm is not None:
            return
        from llama_cpp import Llama

        threads = self.n_threads or default_threads()
        # n_threads_batch defaults to every core in llama-cpp-python; when other processes use
        # the cores too, spinning batch threads made an 11-token prefill take 3 s instead of 40 ms.
        self._llm = Llama(
            model_path=self.model_path, n_ctx=self.n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        llm = self._llm
        stops = {llm.token_eos()}
        for marker in ("<end_of_turn>", "<eos>", "<|im_end|>", "<|eot_id|>"):
            ids = llm.tokenize(marker.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                stops.add(ids[0])
        self._stop_ids = stops
        logger.info("backend model loaded from %s (%d threads, n_ctx %d)", self.model_path, threads, self.n_ctx)

    def _last_logprobs(self) -> np.ndarray:
        llm = self._llm
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).astype(np.float64)
        top = logits.max()
        return logits - (top + np.log(np.exp(logits - top).sum()))

    def complete(self, prompt: str, max_tokens: int, stop: list[str]) -> dict[str, Any]:
        """Greedy completion of ``prompt``.

        :raises BadRequest: the prompt does not fit the context window.
        """
        self.warm_up()
        with self._lock:
            return self._complete(prompt, max_tokens, stop)

    def _complete(self, prompt: str, max_tokens: int, stop: list[str]) -> dict[str, Any]:
        llm = self._llm
        tokens = llm.tokenize(prompt.encode(), add_bos=True, special=False)
        if len(tokens) + max_tokens > self.n_ctx:
            raise BadRequest(
                f"the prompt has {len(tokens)} tokens; with max_tokens {max_tokens} it exceeds the context window {self.n_ctx}"
            )
        t0 = time.perf_counter()
        cached = 0
        previous = llm.input_ids[: llm.n_tokens]
        limit = min(len(previous), len(tokens) - 1)  # evaluate at least one token for fresh logits
        while cached < limit and previous[cached] == tokens[cached]:
            cached += 1
        llm.n_tokens = cached
        llm.eval(tokens[cached:])
        t_prefill = time.perf_counter()
        out: list[int] = []
        logprobs: list[float] = []
        text = ""
        finish = "length"
        for step in range(max_tokens):
            lp = self._last_logprobs()
            tok = int(lp.argmax())
            if tok in self._stop_ids:
                finish = "stop"
                break
            before = len(text)
            out.append(tok)
            logprobs.append(float(lp[tok]))
            text = llm.detokenize(out).decode("utf-8", errors="ignore")
            hit = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
            if hit >= 0:
                text = text[:hit]
                if hit <= before:  # the token only completed the stop string: not part of the answer
                    out.pop()
                    logprobs.pop()
                finish = "stop"
                break
            if step + 1 < max_tokens:
                llm.eval([tok])
        t_end = time.perf_counter()
        return {
            "text": text,
            "token_logprobs": logprobs,
            "tokens": [llm.detokenize([t]).decode("utf-8", errors="ignore") for t in out],
            "prompt_tokens": len(tokens),
            "cached_prompt_tokens": cached,
            "completion_tokens": len(out),
            "finish_reason": finish,
            "prefill_ms": (t_prefill - t0) * 1000.0,
            "decode_ms": (t_end - t_prefill) * 1000.0,
        }


def parse_completion_request(body: Any, n_ctx: int) -> tuple[str, int, list[str], int | None]:
    """``(prompt, max_tokens, stop, logprobs)`` of an OpenAI ``/v1/completions`` body.

    :raises BadRequest: an unsupported or invalid parameter (greedy decoding only).
    """
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("'prompt' must be one non-empty string")
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
    logprobs = body.get("logprobs")
    if logprobs is not None and (not isinstance(logprobs, int) or isinstance(logprobs, bool) or not 0 <= logprobs <= 1):
        raise BadRequest("'logprobs' must be 0 or 1 (only the chosen token's logprob is returned)")
    return prompt, max_tokens, stop, logprobs


class _Handler(BaseHTTPRequestHandler):
    server: BackendServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, the second waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("backend %s", format % args)

    def _send(self, status: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}})

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.model_name, "object": "model", "owned_by": "ecqa"}]})
        else:
            self._error(404, "not found")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if self.path != "/v1/completions":
            self._error(404, "only /v1/completions is served")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._error(413 if length else 411, "a JSON body with Content-Length is required")
            return
        try:
            body = json.loads(self.rfile.read(length))
            prompt, max_tokens, stop, want_logprobs = parse_completion_request(body, self.server.completer.n_ctx)
            result = self.server.completer.complete(prompt, max_tokens, stop)
        except (BadRequest, ValueError) as exc:
            self._error(400, str(exc) if isinstance(exc, BadRequest) else "the body is not JSON")
            return
        choice: dict[str, Any] = {"index": 0, "text": result["text"], "finish_reason": result["finish_reason"], "logprobs": None}
        if want_logprobs is not None:
            choice["logprobs"] = {
                "tokens": result["tokens"],
                "token_logprobs": result["token_logprobs"],
                "top_logprobs": None,
                "text_offset": None,
            }
        self._send(
            200,
            {
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": self.server.model_name,
                "choices": [choice],
                "usage": {
                    "prompt_tokens": result["prompt_tokens"],
                    "completion_tokens": result["completion_tokens"],
                    "total_tokens": result["prompt_tokens"] + result["completion_tokens"],
                    "prompt_tokens_details": {"cached_tokens": result["cached_prompt_tokens"]},
                },
                # llama.cpp's server reports the same: prefill (uncached prompt) and decode speed.
                "timings": {
                    "cache_n": result["cached_prompt_tokens"],
                    "prompt_n": result["prompt_tokens"] - result["cached_prompt_tokens"],
                    "prompt_ms": round(result["prefill_ms"], 3),
                    "predicted_n": result["completion_tokens"],
                    "predicted_ms": round(result["decode_ms"], 3),
                },
            },
        )


class BackendServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, completer: LlamaCompleter, model_name: str) -> None:
        self.completer = completer
        self.model_name = model_name
        super().__init__((host, port), _Handler)

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
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin closes (set by the gateway)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    completer = LlamaCompleter(args.model, n_ctx=args.n_ctx, n_threads=args.threads)
    try:
        completer.warm_up()
    except (ValueError, RuntimeError) as exc:
        print(f"error: llama.cpp cannot load {args.model}: {exc}", file=sys.stderr)
        return 2
    name = args.model_name or Path(args.model).name.removesuffix(".gguf")
    server = BackendServer(args.host, args.port, completer, name)
    if args.watch_stdin:
        threading.Thread(target=_exit_when_stdin_closes, args=(server,), daemon=True).start()
    print(f"{READY_MARKER} {server.url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
