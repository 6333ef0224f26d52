"""`make bench-edge`: retrieval recall variants, index build throughput, pipeline overhead and
edge latency/RSS/accuracy — every comparison side by side in one run.

Writes ``--out`` (JSON) and rewrites the block between the bench-edge markers in BENCHMARKS.md.
"""

from __future__ import annotations

# Imports inside functions: each phase (and each child process, after it sets its environment) imports
# only what it measures, so one phase never pays for another's models.
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.markdown import publish
from eval.stats import percentile  # the one percentile of every table (linear interpolation)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

START, END = "<!-- bench-edge:start -->", "<!-- bench-edge:end -->"
HEADING = "## Edge — `make bench-edge`"


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). Unlike ru_maxrss it is per address space, so a
    child started by exec does not inherit its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- retrieval ------------------------------------------------------------------------------
def bench_retrieval(data: Path, extra: Path) -> dict[str, Any]:
    from edge import sparse
    from edge.embedder import SentenceEmbedder
    from edge.store import DocumentStore, document_id
    from eval.data import load_questions
    from indexing.build import embedded_text
    from indexing.loaders import load_passages

    passages, _ = load_passages([data, extra])
    questions = [q for q in load_questions(data) if q.has_answer]
    emb = SentenceEmbedder().load()
    ids = [document_id(p.title, p.text) for p in passages]
    avg = sparse.average_length([p.text for p in passages])
    sparse_vecs = [sparse.document_vector(f"{p.title} {p.text}", avg) for p in passages]
    payloads = [{"text": p.text, "title": p.title} for p in passages]
    store = DocumentStore().open()
    for name, titled in (("bare", False), ("title", True)):
        vecs = emb.encode([embedded_text(p.title, p.text, titled) for p in passages])
        backing = store.create_version(name, emb.dimension, hybrid=True)
        store.upsert(backing, ids, vecs, sparse_vecs, payloads)
        store.publish(name, backing, {"model": emb.name, "dimension": emb.dimension, "hybrid": True})
    qvecs = emb.encode([q.question for q in questions])
    gold = [document_id(q.title, q.context) for q in questions]
    qsparse = [sparse.query_vector(q.question) for q in questions]
    variants: dict[str, dict[str, Any]] = {
        "dense, text only (plain MiniLM)": dict(coll="bare", hybrid=False, fusion="convex", dw=1.0),
        "dense, 'title: text'": dict(coll="title", hybrid=False, fusion="convex", dw=1.0),
        "BM25 sparse only": dict(coll="bare", hybrid=True, fusion="convex", dw=0.0),
        "hybrid RRF 1:1": dict(coll="bare", hybrid=True, fusion="rrf", dw=1.0, sw=1.0),
        "hybrid RRF, sparse x2": dict(coll="bare", hybrid=True, fusion="rrf", dw=1.0, sw=2.0),
        "hybrid convex, alpha 0.4": dict(coll="bare", hybrid=True, fusion="convex", dw=0.4),
        "hybrid convex, alpha 0.6 (default)": dict(coll="bare", hybrid=True, fusion="convex", dw=0.6),
        "hybrid convex, alpha 0.6, 'title: text'": dict(coll="title", hybrid=True, fusion="convex", dw=0.6),
    }
    rows = []
    for label, v in variants.items():
        hits_at = {1: 0, 3: 0, 5: 0}
        t0 = time.perf_counter()
        for qv, qs, g in zip(qvecs, qsparse, gold):
            hits = store.search(v["coll"], qv, qs if v["hybrid"] else None, 5, v["fusion"], v["dw"], v.get("sw", 1.0))
            ranked = [h.id for h in hits]
            for k in hits_at:
                hits_at[k] += g in ranked[:k]
        ms = (time.perf_counter() - t0) * 1000 / len(questions)
        n = len(questions)
        rows.append({"variant": label, "recall@1": hits_at[1] / n, "recall@3": hits_at[3] / n,
                     "recall@5": hits_at[5] / n, "ms_per_query": ms})
    store.close()
    return {"questions": len(questions), "passages": len(passages), "rows": rows}


# --- build throughput -----------------------------------------------------------------------
def bench_build(data: Path, extra: Path) -> dict[str, Any]:
    from edge.embedder import SentenceEmbedder
    from edge.store import DocumentStore
    from indexing.build import build_index, embedded_text
    from indexing.loaders import load_passages

    passages, sources = load_passages([data, extra])
    emb = SentenceEmbedder().load()
    texts = [embedded_text(p.title, p.text, True) for p in passages]
    emb.encode(texts[:64])  # warm-up
    raw, built, batches = [], [], {}
    for _ in range(2):  # interleaved, best of two: the machine is shared and noisy
        t0 = time.perf_counter()
        emb._st.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        raw.append(len(texts) / (time.perf_counter() - t0))
        store = DocumentStore().open()
        t0 = time.perf_counter()
        report = build_index(store, emb, passages, sources, "bench", recreate=True, batch_size=64)
        built.append(report.documents / (time.perf_counter() - t0))
        store.close()
    for bs in (8, 16, 32, 64, 128):
        rates = []
        for _ in range(2):
            t0 = time.perf_counter()
            emb._st.encode(texts, batch_size=bs, normalize_embeddings=True, show_progress_bar=False)
            rates.append(len(texts) / (time.perf_counter() - t0))
        batches[bs] = max(rates)
    return {"passages": len(texts), "raw_encode_per_s": max(raw), "build_per_s": max(built),
            "ratio": max(built) / max(raw), "encode_per_s_by_batch": batches}


# --- pipeline overhead + edge latency (child process: its peak RSS is the edge's) ----------
def edge_child(args: argparse.Namespace) -> None:
    from eval.data import load_questions
    from eval.squad_metrics import evaluate
    from pipelines import open_store
    from pipelines.edge_pipeline import EdgeQA
    from pipelines.settings import load_settings

    s = load_settings(qdrant_path=Path(args.qdrant_path), collection="bench")
    questions = load_questions(Path(args.data), limit=args.n)
    store = open_store(s)
    qa = EdgeQA(s, store).warm_up()
    rss_warm = peak_rss_mib()
    # Pipeline.run overhead: the same embed+retrieve stages, direct calls vs a Haystack Pipeline.
    from haystack import Pipeline

    pipe = Pipeline()
    pipe.add_component("embedder", qa.embedder)
    pipe.add_component("retriever", qa.retriever)
    pipe.connect("embedder.embedding", "retriever.embedding")
    direct, piped = [], []
    for q in questions[:50]:
        t0 = time.perf_counter()
        e = qa.embedder.run(question=q.question)
        qa.retriever.run(question=q.question, embedding=e["embedding"])
        direct.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        pipe.run({"embedder": {"question": q.question}, "retriever": {"question": q.question}})
        piped.append((time.perf_counter() - t0) * 1000)
    stages: dict[str, list[float]] = {}
    preds, toks_per_s, prompt_tokens, cached, prefilled = {}, [], [], [], []
    for q in questions:
        r = qa.answer(q.question)
        preds[q.id] = r.answer
        for k, v in r.timings_ms.items():
            stages.setdefault(k, []).append(v)
        if r.usage["completion_tokens"] and r.timings_ms["decode"] > 0:
            toks_per_s.append(r.usage["completion_tokens"] / (r.timings_ms["decode"] / 1000))
        prompt_tokens.append(r.usage["prompt_tokens"])
        cached.append(r.usage["cached_prompt_tokens"])
        # What was run through the model: the per-passage reading also prefills the probe's and the answer's
        # question suffix for each passage, and a passage missing from the store.
        prefilled.append(r.usage["prefilled_tokens"])
    prefill_tok_s = [n / (t / 1000) for n, t in zip(prefilled, stages["prefill"]) if t > 0]
    out = {
        "n": len(questions),
        "model": qa.generator.model_name, "reading": s.slm_reading, "kv_store": bool(qa.generator.store),
        "stages": {k: {"p50": percentile(v, 50), "p95": percentile(v, 95), "mean": statistics.mean(v)} for k, v in stages.items()},
        "decode_tokens_per_s": statistics.median(toks_per_s) if toks_per_s else 0.0,
        "prefill_tokens_per_s": statistics.median(prefill_tok_s) if prefill_tok_s else 0.0,
        "prompt_tokens_mean": statistics.mean(prompt_tokens),
        "cached_prompt_tokens_mean": statistics.mean(cached),
        "prefilled_tokens_mean": statistics.mean(prefilled),
        "rss_after_warm_up_mib": rss_warm,
        "peak_rss_mib": peak_rss_mib(),
        "pipeline_overhead": {"direct_p50_ms": percentile(direct, 50), "pipeline_p50_ms": percentile(piped, 50),
                              "overhead_p50_ms": percentile(piped, 50) - percentile(direct, 50)},
        "accuracy": {"edge": evaluate(questions, preds), "always_no_answer": evaluate(questions, {})},
    }
    store.close()
    Path(args.child_out).write_text(json.dumps(out))


def bench_edge(data: Path, extra: Path, n: int) -> dict[str, Any]:
    from edge.embedder import SentenceEmbedder
    from indexing.build import build_index
    from indexing.loaders import load_passages
    from pipelines.settings import load_settings, open_store

    with tempfile.TemporaryDirectory() as tmp:
        passages, sources = load_passages([data, extra])
        with open_store(load_settings(qdrant_path=Path(tmp) / "q")) as store:
            build_index(store, SentenceEmbedder().load(), passages, sources, "bench")
        child_out = Path(tmp) / "edge.json"
        subprocess.run(
            [sys.executable, "-m", "benchmarks.edge_tier", "--child", "--qdrant-path", str(Path(tmp) / "q"),
             "--data", str(data), "--n", str(n), "--child-out", str(child_out)],
            check=True, env={**os.environ, "ECQA_KV_DIR": str(Path(tmp) / "kv")},  # an empty store: filled as it reads
        )
        return json.loads(child_out.read_text())


# --- report ---------------------------------------------------------------------------------
def markdown(res: dict[str, Any], cmd: str) -> str:
    r, b, e = res["retrieval"], res["build"], res["edge"]
    lines = [START, "", f"Generated by `{cmd}` on {res['when']} ({res['machine']}).", ""]
    lines += [f"### Retrieval: gold paragraph among the top k ({r['questions']} answerable dev-a questions, "
              f"{r['passages']} passages: dev-a + distractors)", "",
              "| variant | recall@1 | recall@3 | recall@5 | ms/query |", "|---|---:|---:|---:|---:|"]
    for row in r["rows"]:
        lines.append(f"| {row['variant']} | {row['recall@1']:.3f} | {row['recall@3']:.3f} | {row['recall@5']:.3f} "
                     f"| {row['ms_per_query']:.1f} |")
    lines += ["", f"### Index build throughput ({b['passages']} passages, MiniLM, same run)", "",
              "| path | passages/s | ratio |", "|---|---:|---:|",
              f"| raw `SentenceTransformer.encode` (batch 64) | {b['raw_encode_per_s']:.1f} | 1.00 |",
              f"| `build_index` (encode + BM25 + Qdrant upsert + alias switch) | {b['build_per_s']:.1f} | "
              f"{b['ratio']:.2f} |", "", "raw encode() passages/s by batch size (all passages, best of two): "
              + ", ".join(f"{k}: {v:.1f}" for k, v in b["encode_per_s_by_batch"].items()), ""]
    model = e.get("model", "SmolLM2-135M Q4_1")  # records before 2026-12-06 did not name it: SmolLM2 then
    reading = ""
    if "reading" in e:
        reading = f", reading {e['reading']}" + (" from the passage KV store (filled as it went)" if e["kv_store"] else "")
    lines += [f"### Edge latency per stage ({e['n']} first dev-a questions, full index, top-3, {model}{reading})", "",
              "| stage | p50 ms | p95 ms | mean ms |", "|---|---:|---:|---:|"]
    for k in ("embed", "retrieve", "prompt", "restore", "prefill", "kv_store", "probe", "decode", "generate", "parse",
              "total"):
        if k in e["stages"]:
            v = e["stages"][k]
            lines.append(f"| {k} | {v['p50']:.1f} | {v['p95']:.1f} | {v['mean']:.1f} |")
    po = e["pipeline_overhead"]
    prefilled = (f"; tokens run through the model (prefilled): mean {e['prefilled_tokens_mean']:.0f}"
                 if "prefilled_tokens_mean" in e else "")
    lines += ["", f"- prompt tokens: mean {e['prompt_tokens_mean']:.0f}, of which served from the KV prefix cache "
              f"or the passage store: mean {e['cached_prompt_tokens_mean']:.0f}{prefilled}",
              f"- prefill {e['prefill_tokens_per_s']:.0f} tokens/s, generation (decode) "
              f"{e['decode_tokens_per_s']:.0f} tokens/s (medians)",
              f"- edge process RSS: {e['rss_after_warm_up_mib']:.0f} MiB after warm-up, peak {e['peak_rss_mib']:.0f} MiB",
              f"- Haystack `Pipeline.run` vs direct component calls (embed + retrieve, p50 of 50): "
              f"{po['pipeline_p50_ms']:.1f} ms vs {po['direct_p50_ms']:.1f} ms → {po['overhead_p50_ms']:.1f} ms overhead", ""]
    lines += [f"### Edge answer quality on the same {e['n']} questions (retrieved passages, no gold context)", "",
              "| configuration | exact | F1 | HasAns F1 | NoAns acc |", "|---|---:|---:|---:|---:|"]
    for name, label in (("always_no_answer", "always no-answer (trivial baseline)"), ("edge", f"edge reader, no answerability gate ({model})")):
        a = e["accuracy"][name]
        lines.append(f"| {label} | {a['exact']:.1f} | {a['f1']:.1f} | {a['has_ans_f1']:.1f} | {a['no_ans_accuracy']:.1f} |")
    lines += ["", "The reader answers every question here; the policies that abstain or escalate on its calibrated "
              "answerability are measured by `make bench-models` and `make bench`.", "", END]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("data/squad-v2-dev-a.json"))
    ap.add_argument("--extra", type=Path, default=Path("data/squad-v2-extra-paragraphs.json"))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("bench/edge.json"))
    ap.add_argument("--benchmarks-md", type=Path, default=Path("BENCHMARKS.md"))
    ap.add_argument("--from-json", type=Path, help="only rewrite the block from a previous --out file (no measuring)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--qdrant-path", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        edge_child(args)
        return
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        publish(saved, None, markdown(saved, "make bench-edge"), args.benchmarks_md, START, END, HEADING)
        return
    res: dict[str, Any] = {"when": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    print("retrieval…", flush=True)
    res["retrieval"] = bench_retrieval(args.data, args.extra)
    print("build throughput…", flush=True)
    res["build"] = bench_build(args.data, args.extra)
    print(f"edge latency over {args.n} questions…", flush=True)
    res["edge"] = bench_edge(args.data, args.extra, args.n)
    publish(res, args.out, markdown(res, "make bench-edge"), args.benchmarks_md, START, END, HEADING)


if __name__ == "__main__":
    main()
