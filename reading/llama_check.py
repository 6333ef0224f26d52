"""Generate one token in a child process and report the llama.cpp CPU variant that ran it.

``python -m reading.llama_check [--model GGUF] [--json]`` is run by ``make env`` right after the
environment is built: a build that cannot run on this CPU dies of a signal (SIGILL for an
instruction the CPU lacks, SIGSEGV as AMX did), and the parent turns that into one line that
names the signal, the CPU's relevant flags and the command that rebuilds — instead of a crashed
test suite later. ``ecqa doctor`` runs the same check.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from reading.llama_runtime import LlamaRuntimeError, load_backends, relevant_cpu_flags
from reading.model_manifest import DEFAULT_EDGE_MODEL
from reading.models import resolve_gguf

REBUILD_COMMAND = "make rebuild-llama"


class CheckFailed(RuntimeError):
    """The child could not generate a token; the message is one line that says how to fix it."""


def generate_one_token(model: str, threads: int = 0) -> dict[str, Any]:
    """In this process: load the backends and ``model``, prefill a short prompt, decode one token."""
    runtime = load_backends()
    from llama_cpp import Llama

    n = threads or os.cpu_count() or 1
    t0 = time.perf_counter()
    llm = Llama(model_path=model, n_ctx=256, n_threads=n, n_threads_batch=n, verbose=False)
    t_load = time.perf_counter()
    tokens = llm.tokenize(b"The capital of France is", add_bos=True, special=False)
    llm.eval(tokens)
    logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
    best = int(logits.argmax())
    t_end = time.perf_counter()
    return {
        **runtime.to_json(),
        "model": model,
        "token": llm.detokenize([best]).decode("utf-8", errors="replace"),
        "load_s": round(t_load - t0, 3),
        "first_token_s": round(t_end - t_load, 3),
    }


def check(model: str, timeout_s: float = 300.0, python: str = sys.executable) -> dict[str, Any]:
    """Run :func:`generate_one_token` in a child process (``python -m reading.llama_check --child``).

    :raises CheckFailed: the child died of a signal, failed, or timed out.
    """
    cmd = [python, "-m", "reading.llama_check", "--child", "--model", model]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              cwd=str(Path(__file__).resolve().parent.parent))
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"llama.cpp did not generate one token with {model} in {timeout_s:.0f} s — "
                          "is the machine overloaded? retry, or rebuild with `" + REBUILD_COMMAND + "`") from None
    flags = " ".join(relevant_cpu_flags()) or "none"
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        raise CheckFailed(f"llama.cpp died of {sig} generating one token with {Path(model).name}; this CPU has "
                          f"{flags} — rebuild it for this CPU with `{REBUILD_COMMAND}`")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CheckFailed(f"llama.cpp could not generate one token with {Path(model).name}: {last} — "
                          f"rebuild with `{REBUILD_COMMAND}`")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _default_model() -> str:
    return str(resolve_gguf("", DEFAULT_EDGE_MODEL))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="GGUF file (default: the default edge model)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        try:
            print(json.dumps(generate_one_token(args.model)), flush=True)
        except (LlamaRuntimeError, ValueError, RuntimeError) as exc:
            print(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, file=sys.stderr)
            return 1
        return 0
    try:
        report = check(args.model or _default_model())
    except (CheckFailed, LlamaRuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # reading.models' own errors: a model not pulled, a bad hash
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print(f"llama.cpp {report['llama_cpp_version']}: CPU variant {report['cpu_variant']} "
              f"(of {len(report['variants'])} built) generated {report['token']!r} with "
              f"{Path(report['model']).name} in {report['first_token_s']:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
