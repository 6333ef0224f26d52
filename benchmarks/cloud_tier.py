"""`make bench-cloud`: envelope cost, zstd ratio on real SQuAD payloads, gateway overhead against
calling the backend directly (same run, interleaved), cloud generation speed and answer quality.

Payloads are what the edge really sends: each question with its top-3 passages retrieved
(hybrid MiniLM + BM25) from an in-memory index of all dev-a paragraphs, cut at the
``passage_chars`` setting's default. Writes ``--out`` (JSON) and rewrites the block between the
bench-cloud markers at the end of BENCHMARKS.md.
"""

from __future__ import annotations

# Imports inside functions: each phase (and each child process, after it sets its environment) imports
# only what it measures, so one phase never pays for another's models.
import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from eval.stats import (
    percentile,  # the one percentile of every table (linear interpolation)
)
from reading.prompts import PASSAGE_CHARS  # the `passage_chars` setting's default

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

START, END = "<!-- bench-cloud:start -->", "<!-- bench-cloud:end -->"


# --- payloads -----------------------------------------------------------------------------------
def retrieved_payloads(data: Path, n: int, seed: int) -> tuple[list[Any], list[list[Any]]]:
    """``n`` sampled dev-a questions and their top-3 retrieved Documents."""
    from edge.embedder import SentenceEmbedder
    from edge.retriever import EdgeRetriever
    from edge.store import DocumentStore
    from eval.data import load_questions
    from indexing.build import build_index
    from indexing.loaders import load_passages

    questions = load_questions(data, limit=n, seed=seed)
    passages, sources = load_passages([data])
    emb = SentenceEmbedder().load()
    store = DocumentStore().open()
    build_index(store, emb, passages, sources, "bench", embed_titles=False)
    retriever = EdgeRetriever(store, "bench", top_k=3)
    vecs = emb.encode([q.question for q in questions])
    docs = [retriever.run(question=q.question, embedding=v)["documents"] for q, v in zip(questions, vecs, strict=True)]
    return questions, docs


def request_of(question: str, docs: list[Any]) -> Any:
    from cloud.wire import AnswerRequest
    from reading.prompts import Passage

    return AnswerRequest(question=question, passages=tuple(Passage.from_document(d).cut(PASSAGE_CHARS) for d in docs),
                         max_tokens=24)


# --- envelope cost and compression --------------------------------------------------------------
def bench_envelope(requests: list[Any], repeat: int = 5) -> dict[str, Any]:
    import zstandard
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from cloud.envelope import AesKey, new_request_id, now_ms, pack, seal, unseal
    from cloud.wire import DIRECTION_REPLY, DIRECTION_REQUEST, AnswerReply, Envelope

    key = AesKey.generate()
    from reading.passages import PassageReading, PassageSignals

    # A reply as the gateway sends it: every one of the three passages' signals (the answer's 4 tokens each).
    signals = tuple(PassageSignals(p, r, r, (-0.21345, -0.0123, -0.00456, -0.30127), -4.51234, True)
                    for p, r in ((0.953211, "the Atlantic Ocean"), (0.412345, "Brazil"), (0.101234, "Peru")))
    reply = AnswerReply(answer="the Atlantic Ocean", confidence=0.83, answer_spans=((12, 30), None, None),
                        usage={"prompt_tokens": 700, "completion_tokens": 16, "requests": 7},
                        timings_ms={"open": 0.1, "prompt": 0.05, "backend": 812.3, "parse": 0.05, "total": 813.0}, model="m",
                        p_answerable=0.953211, reading=PassageReading(signals, 0, 0.871234)).to_dict()
    times: dict[str, list[float]] = {k: [] for k in ("seal_request", "open_request", "seal_reply", "open_reply", "total",
                                                       "zstd_only", "aesgcm_only", "json_only")}
    sizes: list[dict[str, int]] = []
    levels = (1, 3, 9, 19)
    level_bytes = {lv: 0 for lv in levels}
    level_us: dict[int, list[float]] = {lv: [] for lv in levels}
    for req in requests:
        payload = req.to_dict()
        raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        for lv in levels:
            t = time.perf_counter_ns()
            level_bytes[lv] += len(zstandard.ZstdCompressor(level=lv).compress(raw))
            level_us[lv].append((time.perf_counter_ns() - t) / 1000)
        env = None
        for _ in range(repeat):
            rid, ts = new_request_id(), now_ms()
            t0 = time.perf_counter_ns()
            env = seal(payload, key, rid=rid, edge="edge-1", direction=DIRECTION_REQUEST, ts_ms=ts)
            wire = env.to_bytes()
            t1 = time.perf_counter_ns()
            unseal(Envelope.from_bytes(wire), key, edge="edge-1", direction=DIRECTION_REQUEST)
            t2 = time.perf_counter_ns()
            renv = seal(reply, key, rid=rid, edge="edge-1", direction=DIRECTION_REPLY, ts_ms=ts)
            rwire = renv.to_bytes()
            t3 = time.perf_counter_ns()
            unseal(Envelope.from_bytes(rwire), key, edge="edge-1", direction=DIRECTION_REPLY)
            t4 = time.perf_counter_ns()
            for name, a, b in (("seal_request", t0, t1), ("open_request", t1, t2), ("seal_reply", t2, t3), ("open_reply", t3, t4),
                               ("total", t0, t4)):
                times[name].append((b - a) / 1000)
            t5 = time.perf_counter_ns()
            json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
            t6 = time.perf_counter_ns()
            blob = pack(payload)
            t7 = time.perf_counter_ns()
            AESGCM(key.secret_bytes()).encrypt(os.urandom(12), blob, b"aad")
            t8 = time.perf_counter_ns()
            times["json_only"].append((t6 - t5) / 1000)
            times["zstd_only"].append((t7 - t6) / 1000)
            times["aesgcm_only"].append((t8 - t7) / 1000)
        assert env is not None
        sizes.append({"plain": len(raw), "zstd": len(pack(payload)), "ct": len(env.ct), "wire": len(env.to_bytes()),
                      "reply_plain": len(json.dumps(reply, separators=(",", ":")).encode()), "reply_wire": len(rwire)})
    total_plain = sum(s["plain"] for s in sizes)
    total_zstd = sum(s["zstd"] for s in sizes)
    total_wire = sum(s["wire"] for s in sizes)
    return {
        "requests": len(requests),
        "repeat": repeat,
        "us": {k: {"p50": percentile(v, 50), "p95": percentile(v, 95), "mean": statistics.fmean(v)} for k, v in times.items()},
        "bytes": {
            "plain_p50": percentile([s["plain"] for s in sizes], 50),
            "zstd_p50": percentile([s["zstd"] for s in sizes], 50),
            "wire_p50": percentile([s["wire"] for s in sizes], 50),
            "plain_total": total_plain,
            "zstd_total": total_zstd,
            "wire_total": total_wire,
            "ratio": total_plain / total_zstd,
            "wire_over_plain": total_wire / total_plain,
            "reply_plain_p50": percentile([s["reply_plain"] for s in sizes], 50),
            "reply_wire_p50": percentile([s["reply_wire"] for s in sizes], 50),
        },
        "levels": {lv: {"ratio": total_plain / level_bytes[lv], "us_p50": percentile(level_us[lv], 50)} for lv in levels},
    }


# --- gateway vs direct ---------------------------------------------------------------------------
class _ZeroCost:
    """A reader that answers at once: the embedded server's HTTP path with no model behind it."""

    n_ctx = 1 << 20
    family = "chat"

    def render(self, messages: list[dict[str, str]]) -> str:
        return "\n".join(m["content"] for m in messages)

    def generate(self, prompt: str, max_tokens: int, stop: Any = (), top_logprobs: int = 0, prefix_store: Any = None) -> Any:
        from reading.reader import Generation

        if max_tokens == 1:  # the answerability probe
            return Generation("Yes", (-0.1,), ("Yes",), ({"Yes": -0.1, "No": -2.4},), len(prompt) // 4, 0, "length",
                              0.0, 0.0)
        return Generation("the Atlantic Ocean", (-0.1, -0.2, -0.05), ("the", " Atlantic", " Ocean"), (),
                          len(prompt) // 4, 0, "stop", 0.0, 0.0)


def _paired(questions: list[Any], docs: list[list[Any]], direct: Any, gateway_url: str, cloud_dir: Path,
            rounds: int = 1) -> dict[str, Any]:
    """Each prompt once through the gateway and once straight to the backend (``direct``, a started backend:
    the embedded one is reached with its own token, as the gateway reaches it).

    Pass 1 sends odd questions through the gateway and even ones direct, pass 2 the opposite;
    so every call of a question follows the same previous prompt in both paths, and the
    backend's prefix cache is in the same state for both (a clean paired difference).
    """
    from cloud.cloud_answerer import CloudAnswerer
    from cloud.prompting import read_with

    def ask_direct(question: str, passages: Any, max_tokens: int = 24) -> Any:
        """What the gateway sends its backend: each passage's probe and answer, then the check of one."""
        return read_with(direct, question, passages, max_tokens)

    direct.warm_up()
    cloud = CloudAnswerer(url=gateway_url, cloud_dir=str(cloud_dir), read_timeout_s=120.0)
    cloud.warm_up()
    # Warm both paths (TLS session, HTTP keep-alive, the model's few-shot prefix) outside the timing.
    cloud.run(question="warm-up?", documents=[])
    ask_direct("warm-up?", [], 4)
    n = len(questions)
    via_ms = [0.0] * n
    direct_ms = [0.0] * n
    answers: dict[str, str] = {}
    gen: list[dict[str, float]] = []
    last_q, last_p = questions[-1].question, request_of(questions[-1].question, docs[-1]).passages
    for _ in range(rounds):
        for flip in (0, 1):
            ask_direct(last_q, last_p, 1)  # unmeasured: question 0 follows the same prompt in both passes
            for i, (q, d) in enumerate(zip(questions, docs, strict=True)):
                t0 = time.perf_counter()
                if (i + flip) % 2:
                    out = cloud.run(question=q.question, documents=d)
                    via_ms[i] += (time.perf_counter() - t0) * 1000.0 / rounds
                    answers[q.id] = out["answer"]
                else:
                    req = request_of(q.question, d)
                    _, comps = ask_direct(q.question, req.passages)
                    direct_ms[i] += (time.perf_counter() - t0) * 1000.0 / rounds
                    for comp in comps:
                        if comp.timings_ms:
                            gen.append({"prompt_n": comp.prompt_tokens - comp.cached_prompt_tokens,
                                        "cached": comp.cached_prompt_tokens, "prefill_ms": comp.timings_ms["prefill"],
                                        "decode_n": comp.completion_tokens, "decode_ms": comp.timings_ms["decode"],
                                        "call_ms": comp.timings_ms["prefill"] + comp.timings_ms["decode"]})
    cloud.close()
    direct.close()
    diff = [v - d for v, d in zip(via_ms, direct_ms, strict=True)]
    return {
        "n": n,
        "direct_ms": {"p50": percentile(direct_ms, 50), "p95": percentile(direct_ms, 95)},
        "gateway_ms": {"p50": percentile(via_ms, 50), "p95": percentile(via_ms, 95)},
        "overhead_ms": {"p50": percentile(diff, 50), "p95": percentile(diff, 95), "mean": statistics.fmean(diff)},
        "answers": answers,
        "generation": gen,
    }


def bench_gateway(questions: list[Any], docs: list[list[Any]], zero_cost_n: int) -> dict[str, Any]:
    from cloud.backend import EmbeddedBackend, OpenAIBackend
    from cloud.backend_server import BackendServer
    from cloud.certs import init_material, load_server_material
    from cloud.gateway import Gateway

    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cloud_dir = Path(tmp) / "cloud"
        init_material(cloud_dir)
        material = load_server_material(cloud_dir)
        # 1) zero-cost backend: the gateway's own cost, nothing else.
        stub = BackendServer("127.0.0.1", 0, _ZeroCost(), "zero-cost")  # type: ignore[arg-type]
        stub.start()
        times = zero_cost_n // max(1, len(questions)) + 1
        zq, zd = (questions * times)[:zero_cost_n], (docs * times)[:zero_cost_n]
        with Gateway(material, OpenAIBackend(stub.url), port=0) as gw:
            res["zero_cost"] = _paired(zq, zd, OpenAIBackend(stub.url), gw.url, cloud_dir)
        res["zero_cost"].pop("answers")
        res["zero_cost"].pop("generation")
        stub.shutdown()
        stub.server_close()
        # 2) the real embedded backend (the default cloud model).
        backend = EmbeddedBackend()
        t0 = time.perf_counter()
        backend.warm_up()
        res["embedded_start_s"] = time.perf_counter() - t0
        with Gateway(material, backend, port=0) as gw:
            res["embedded"] = _paired(questions, docs, backend, gw.url, cloud_dir)
    gen = res["embedded"].pop("generation")
    res["generation"] = {
        "calls": len(gen),
        "prefill_tok_s": sum(g["prompt_n"] for g in gen) / max(1e-9, sum(g["prefill_ms"] for g in gen) / 1000.0),
        "decode_tok_s": sum(g["decode_n"] for g in gen) / max(1e-9, sum(g["decode_ms"] for g in gen) / 1000.0),
        "completion_tok_s": sum(g["decode_n"] for g in gen) / max(1e-9, sum(g["call_ms"] for g in gen) / 1000.0),
        "prompt_tokens_p50": percentile([g["prompt_n"] + g["cached"] for g in gen], 50),
        "cached_p50": percentile([g["cached"] for g in gen], 50),
        "completion_tokens_mean": statistics.fmean(g["decode_n"] for g in gen) if gen else 0.0,
    }
    from eval.squad_metrics import evaluate

    res["quality"] = evaluate(questions, res["embedded"].pop("answers"))
    return res


# --- report ---------------------------------------------------------------------------------------
def markdown(res: dict[str, Any], command: str) -> str:
    env, gw = res["envelope"], res["gateway"]
    us, b = env["us"], env["bytes"]
    lines = [
        START,
        "",
        "## Cloud tier — `make bench-cloud`",
        "",
        "What it measures, on payloads the edge really sends (a dev-a question + its top-3 hybrid-retrieved passages):",
        "- **seal + open** cost of the AES-256-GCM envelopes, both directions, split into JSON / zstd / AES;",
        "- **zstd ratio** before sealing and the resulting bytes on the wire (base64 inside the JSON envelope);",
        "- **gateway overhead**: the same prompt sent straight to the backend and through the gateway (mutual TLS,",
        "  checks, sealing), interleaved in one run — with a zero-cost stub backend (the gateway alone) and with the embedded model;",
        "- **cloud generation speed** of the embedded backend and the cloud answers' SQuAD v2 scores on those questions.",
        "",
        f"Generated by `{command}` on {res['when']} ({res['machine']}; load average {res['load'][0]:.1f} at the start, "
        f"{res['load'][1]:.1f} at the end"
        + (": another process shared the cores" if res["load"][0] >= 0.5 else ", the benchmark's own")
        + "). Payload: a dev-a question + its top-3 hybrid-retrieved passages,"
        f" each cut at {PASSAGE_CHARS} characters ({env['requests']} sampled questions).",
        "",
        f"### Seal + open per request (µs; {env['requests']} payloads × {env['repeat']})",
        "",
        "| step | p50 | p95 | mean |",
        "|---|---:|---:|---:|",
    ]
    names = {"seal_request": "edge: seal request (JSON → zstd → AES-GCM → envelope JSON)", "open_request": "gateway: open request",
             "seal_reply": "gateway: seal reply", "open_reply": "edge: open reply",
             "total": "**whole request + reply**", "json_only": "of which JSON encode", "zstd_only": "of which zstd level 3",
             "aesgcm_only": "of which AES-256-GCM"}
    for k, label in names.items():
        v = us[k]
        lines.append(f"| {label} | {v['p50']:.0f} | {v['p95']:.0f} | {v['mean']:.0f} |")
    lines += [
        "",
        "### Size on the wire: zstd before sealing (the S of S/B)",
        "",
        "| bytes per request | p50 |",
        "|---|---:|",
        f"| plaintext JSON (question + 3 passages) | {b['plain_p50']:.0f} |",
        f"| zstd level 3 | {b['zstd_p50']:.0f} |",
        f"| envelope on the wire (base64 ciphertext + tag, nonce, ids) | {b['wire_p50']:.0f} |",
        f"| reply: plaintext JSON → envelope | {b['reply_plain_p50']:.0f} → {b['reply_wire_p50']:.0f} |",
        "",
        f"zstd ratio over all {env['requests']} payloads: **{b['ratio']:.2f}×** (plaintext / compressed); the envelope is "
        f"{b['wire_over_plain']:.2f}× the plaintext (base64 adds 4/3 back). By zstd level: "
        + ", ".join(f"{lv}: {v['ratio']:.2f}× in {v['us_p50']:.0f} µs" for lv, v in env["levels"].items())
        + " (p50 per payload).",
        "",
        "### Gateway overhead against calling the backend directly (ms, same run, paired: each prompt both ways)",
        "",
        "| backend | n | direct p50 | direct p95 | via gateway p50 | via gateway p95 | overhead p50 | overhead p95 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in (("zero_cost", "zero-cost stub (gateway cost alone)"), ("embedded", "embedded cloud model (default: Qwen2.5-Coder-1.5B Q4_K_M)")):
        r = gw[key]
        lines.append(
            f"| {label} | {r['n']} | {r['direct_ms']['p50']:.1f} | {r['direct_ms']['p95']:.1f} | {r['gateway_ms']['p50']:.1f} | "
            f"{r['gateway_ms']['p95']:.1f} | {r['overhead_ms']['p50']:.1f} | {r['overhead_ms']['p95']:.1f} |"
        )
    g, qual = gw["generation"], gw["quality"]
    lines += [
        "",
        "Direct = the edge's OpenAI client POSTing the same few-shot prompt to the backend over plain HTTP on 127.0.0.1;"
        " via gateway = `CloudAnswerer.run` (seal, mutual TLS 1.3 on a kept-alive connection, gateway checks, prompt,"
        " backend call, seal, open). Overhead = via gateway − direct for the same prompt.",
        "",
        "### Cloud generation speed (the embedded cloud model, llama.cpp, CPU)",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| decode tokens/s | {g['decode_tok_s']:.1f} |",
        f"| prefill tokens/s (uncached prompt tokens) | {g['prefill_tok_s']:.0f} |",
        f"| completion tokens per second of backend call (prefill included) | {g['completion_tok_s']:.1f} |",
        f"| prompt tokens p50 (of which reused from the prefix cache) | {g['prompt_tokens_p50']:.0f} ({g['cached_p50']:.0f}) |",
        f"| completion tokens, mean | {g['completion_tokens_mean']:.1f} |",
        f"| embedded backend start (model load) | {gw['embedded_start_s']:.1f} s |",
        "",
        f"Cloud answer quality on these {qual['n']:.0f} questions (retrieved passages, via the gateway): F1 {qual['f1']:.1f},"
        f" EM {qual['exact']:.1f}; HasAns F1 {qual['has_ans_f1']:.1f} (n={qual['has_ans_n']:.0f}),"
        f" NoAns accuracy {qual['no_ans_accuracy']:.1f} (n={qual['no_ans_n']:.0f}), before the calibrated cloud gate "
        "(p(answerable) and confidence) that the cascade applies. Always no-answer on the same questions: F1 "
        f"{100 * qual['no_ans_n'] / qual['n']:.1f}.",
        "",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_block(path: Path, md: str) -> None:
    """Replace the bench-cloud block, or append it at the end of the file."""
    from benchmarks.markdown import replace_block

    replace_block(path, START, END, md, "## Cloud tier — `make bench-cloud`")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("data/squad-v2-dev-a.json"))
    ap.add_argument("--n", type=int, default=60, help="questions through the embedded model (each twice: direct and via the gateway)")
    ap.add_argument("--envelope-n", type=int, default=300, help="payloads for the seal/open and zstd measurements")
    ap.add_argument("--zero-cost-n", type=int, default=200, help="paired calls with the zero-cost backend")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", type=Path, default=Path("bench/cloud.json"))
    ap.add_argument("--benchmarks-md", type=Path, default=Path("BENCHMARKS.md"))
    ap.add_argument("--from-json", type=Path, help="only re-render BENCHMARKS.md from a previous --out file")
    args = ap.parse_args()
    if args.from_json:
        md = markdown(json.loads(args.from_json.read_text()), "make bench-cloud")
        write_block(args.benchmarks_md, md)
        print(md)
        return
    load0 = os.getloadavg()[0]
    res: dict[str, Any] = {"when": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    print(f"retrieving top-3 passages for {max(args.n, args.envelope_n)} questions…", flush=True)
    questions, docs = retrieved_payloads(args.data, max(args.n, args.envelope_n), args.seed)
    print("envelope cost and compression…", flush=True)
    res["envelope"] = bench_envelope([request_of(q.question, d) for q, d in zip(questions[: args.envelope_n], docs[: args.envelope_n], strict=True)])
    print(f"gateway vs direct ({args.zero_cost_n} zero-cost pairs, {args.n} embedded-model pairs)…", flush=True)
    res["gateway"] = bench_gateway(questions[: args.n], docs[: args.n], args.zero_cost_n)
    res["load"] = [load0, os.getloadavg()[0]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    md = markdown(res, "make bench-cloud")
    write_block(args.benchmarks_md, md)
    print(md)


if __name__ == "__main__":
    main()
