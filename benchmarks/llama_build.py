"""`make bench-llama-build`: the portable llama.cpp build (run-time CPU dispatch) against a native one.

Both builds are the same llama-cpp-python version; each runs in its own environment and in its own
child process, interleaved round by round on the same model, so machine noise hits both alike.
Per round a child prefills a fixed prompt and then decodes a fixed number of tokens greedily; the
table gives the medians and the portable/native ratio. Writes the BENCHMARKS.md block.
"""

from __future__ import annotations

# Imports inside functions: each phase (and each child process, after it sets its environment) imports
# only what it measures, so one phase never pays for another's models.

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
START, END = "<!-- bench-llama-build:start -->", "<!-- bench-llama-build:end -->"
# A SQuAD-like passage, repeated to the prompt length.
TEXT = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region "
        "in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway. ")


def child(model: str, prompt_tokens: int, gen_tokens: int, threads: int) -> dict[str, float]:
    """In the child: load the backends (a no-op for a native build) and time prefill and decode."""
    sys.path.insert(0, str(REPO))
    from reading.llama_runtime import load_backends

    runtime = load_backends()
    from llama_cpp import Llama

    llm = Llama(model_path=model, n_ctx=prompt_tokens + gen_tokens + 16, n_threads=threads, n_threads_batch=threads,
                verbose=False)
    tokens = llm.tokenize((TEXT * 64).encode(), add_bos=True)[:prompt_tokens]
    t0 = time.perf_counter()
    llm.eval(tokens)
    t1 = time.perf_counter()
    import numpy as np

    for _ in range(gen_tokens):
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
        llm.eval([int(logits.argmax())])
    t2 = time.perf_counter()
    return {"prompt_tok_s": prompt_tokens / (t1 - t0), "gen_tok_s": gen_tokens / (t2 - t1), "variant": runtime.variant}


def run(python: str, model: str, prompt_tokens: int, gen_tokens: int, threads: int) -> dict[str, float]:
    out = subprocess.run([python, str(Path(__file__).resolve()), "--child", "--model", model, "--prompt-tokens",
                          str(prompt_tokens), "--gen-tokens", str(gen_tokens), "--threads", str(threads)],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--portable", default=sys.executable, help="Python of the environment with the portable build")
    ap.add_argument("--native", help="Python of the environment with the native build")
    ap.add_argument("--model", default="", help="GGUF (default: the default edge model)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.prompt_tokens, args.gen_tokens, args.threads)))
        return
    if not args.native:
        ap.error("--native is required")
    from reading.model_manifest import DEFAULT_EDGE_MODEL
    from reading.models import model_path

    model = args.model or str(model_path(DEFAULT_EDGE_MODEL))
    builds = {"portable": args.portable, "native": args.native}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in builds}
    for i in range(args.rounds):
        for name in (builds if i % 2 == 0 else reversed(list(builds))):  # alternate who goes first
            rows[name].append(run(builds[name], model, args.prompt_tokens, args.gen_tokens, args.threads))
            print(name, rows[name][-1], flush=True)
    med = {n: {k: statistics.median(r[k] for r in rs) for k in ("prompt_tok_s", "gen_tok_s")} for n, rs in rows.items()}
    variant = {n: rs[0]["variant"] for n, rs in rows.items()}
    from benchmarks.markdown import replace_block
    from reading.llama_runtime import relevant_cpu_flags

    ratio = {k: med["portable"][k] / med["native"][k] for k in ("prompt_tok_s", "gen_tok_s")}
    md = "\n".join([
        START,
        f"Command: `make bench-llama-build` · {time.strftime('%Y-%m-%d')} · llama-cpp-python, the same version built "
        f"two ways · model {Path(model).name} · {args.threads} threads · {args.prompt_tokens}-token prompt, "
        f"{args.gen_tokens} greedy tokens · {args.rounds} rounds, interleaved, median · CPU flags: "
        f"{' '.join(relevant_cpu_flags())}",
        "",
        "| build | CPU code | prompt tok/s | generation tok/s |",
        "|---|---|---:|---:|",
        f"| portable (`GGML_BACKEND_DL` + `GGML_CPU_ALL_VARIANTS`, run-time dispatch) | variant `{variant['portable']}` "
        f"| {med['portable']['prompt_tok_s']:.1f} | {med['portable']['gen_tok_s']:.1f} |",
        f"| native (`GGML_NATIVE=ON`, this CPU only) | `-march=native` ({variant['native']}) "
        f"| {med['native']['prompt_tok_s']:.1f} | {med['native']['gen_tok_s']:.1f} |",
        f"| **portable / native** | | **{ratio['prompt_tok_s']:.3f}** | **{ratio['gen_tok_s']:.3f}** |",
        "",
        "Per-round figures: " + "; ".join(
            f"{n} " + ", ".join(f"{r['prompt_tok_s']:.0f}/{r['gen_tok_s']:.1f}" for r in rs) for n, rs in rows.items()),
        END,
    ])
    replace_block(args.benchmarks, START, END, md, "## llama.cpp build — `make bench-llama-build`")
    print(md)


if __name__ == "__main__":
    main()
