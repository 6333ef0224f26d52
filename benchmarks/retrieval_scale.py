"""`make bench-retrieval`: the edge's two embedded stores side by side at 1k, 10k and 100k passages —
qdrant-client's local mode (brute force) against Qdrant Edge (the engine in-process, HNSW).

Each index holds every dev-a paragraph and the distractor paragraphs (960), topped up with generated
filler to the size: text from a word-bigram chain over those same paragraphs (seeded), so filler
shares the corpus's words and competes for BM25 without holding a gold paragraph. The real passages
and the questions are embedded with the default MiniLM. A filler passage's dense vector is, by
default, a random mix of three real passages' vectors plus noise, normalized: embedding 100k
passages with MiniLM takes over an hour on 2 cores (489 s per 10k, measured), and a store's costs
depend on the vectors' number and spread, not on where they came from; ``--embed-filler`` embeds
the filler text itself instead (cached under ``--out``). Both stores index the same vectors, so
the build time is the store's own: BM25 vectors, upserts and the alias switch (Qdrant Edge builds
its HNSW graph there).
Queries are the answerable dev-a questions' hybrid searches (dense + BM25, convex fusion, top 3) as
the edge runs them, alternating store by store question by question so a load change on the
shared cores falls on both; recall@3 is the share whose gold paragraph is among the three.
Writes ``--out``/results.json and the bench-retrieval block of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.markdown import publish
from edge import sparse
from edge.embedder import SentenceEmbedder
from edge.store import DocumentStore, IndexStore, document_id
from edge.store_edge import EdgeShardStore
from eval.data import load_questions
from indexing.build import embedded_text
from indexing.loaders import load_passages

START, END = "<!-- bench-retrieval:start -->", "<!-- bench-retrieval:end -->"
HEADING = "## Retrieval at scale — `make bench-retrieval`"
STORES = ("local", "edge")
BATCH = 256


def _filler(texts: list[str], n: int, seed: int) -> list[str]:
    """``n`` passages of word-bigram text drawn from ``texts``, each as long as a random real one."""
    words = [re.findall(r"\S+", t) for t in texts]
    follow: dict[str, list[str]] = {}
    for ws in words:
        for a, b in zip(ws, ws[1:], strict=False):  # word pairs: one fewer than words
            follow.setdefault(a, []).append(b)
    starts = [ws[0] for ws in words if ws]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = len(rng.choice(words))
        w = rng.choice(starts)
        seq = [w]
        while len(seq) < length:
            nxt = follow.get(w)
            w = rng.choice(nxt) if nxt else rng.choice(starts)
            seq.append(w)
        out.append(" ".join(seq))
    return out


def _embed_cached(embedder: SentenceEmbedder, texts: list[str], cache: Path) -> np.ndarray:
    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = cache / f"vectors-{embedder.name}-{len(texts)}-{key}.npy"
    if path.exists():
        return np.load(path)
    vectors = np.asarray(embedder.encode(texts, batch_size=64), dtype=np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def _mixed_vectors(real: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` unit vectors, each a Dirichlet mix of three real ones plus Gaussian noise of a third of their norm."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(real), size=(n, 3))
    weights = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
    mixed = np.einsum("nk,nkd->nd", weights, real[picks])
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    mixed += rng.standard_normal(mixed.shape).astype(np.float32) / (3 * np.sqrt(real.shape[1]))
    return mixed / np.linalg.norm(mixed, axis=1, keepdims=True)


def _open(kind: str, folder: Path) -> IndexStore:
    return (EdgeShardStore(folder) if kind == "edge" else DocumentStore(path=folder)).open()


def _build(store: IndexStore, ids: list[str], titles: list[str], texts: list[str], vectors: np.ndarray) -> float:
    t0 = time.perf_counter()
    avg = sparse.average_length(texts)
    backing = store.create_version("bench", vectors.shape[1], hybrid=True)
    for i in range(0, len(ids), BATCH):
        sl = slice(i, i + BATCH)
        store.upsert(backing, ids[sl], vectors[sl].tolist(),
                     [sparse.document_vector(f"{t} {x}", avg) for t, x in zip(titles[sl], texts[sl], strict=True)],
                     [{"text": x, "title": t} for t, x in zip(titles[sl], texts[sl], strict=True)])
    store.publish("bench", backing, {"model": "bench", "dimension": int(vectors.shape[1]), "hybrid": True})
    return time.perf_counter() - t0


def run(data: Path, extra: Path, sizes: list[int], n_questions: int, out: Path, seed: int,
        embed_filler: bool) -> dict[str, Any]:
    passages, _ = load_passages([data, extra])
    base_titles = [p.title for p in passages]
    base_texts = [p.text for p in passages]
    # (question, gold paragraph id), as bench-edge's retrieval table counts them
    questions = [(q.question, document_id(q.title, q.context)) for q in load_questions(data) if q.has_answer]
    random.Random(seed).shuffle(questions)
    questions = questions[:n_questions]
    biggest = max(sizes)
    filler = _filler(base_texts, max(0, biggest - len(base_texts)), seed)
    titles = base_titles + ["Filler"] * len(filler)
    texts = base_texts + filler
    ids = [document_id(t, x) for t, x in zip(titles, texts, strict=True)]
    embedder = SentenceEmbedder().load()
    t0 = time.perf_counter()
    if embed_filler:
        vectors = _embed_cached(embedder, [embedded_text(t, x, True) for t, x in zip(titles, texts, strict=True)], out / "cache")
    else:
        real = np.asarray(embedder.encode([embedded_text(t, x, True) for t, x in zip(base_titles, base_texts, strict=True)],
                                          batch_size=64), dtype=np.float32)
        vectors = np.concatenate([real, _mixed_vectors(real, len(filler), seed)])
    embed_s = time.perf_counter() - t0
    qvecs = np.asarray(embedder.encode([q for q, _ in questions]), dtype=np.float32).tolist()
    qsparse = [sparse.query_vector(q) for q, _ in questions]
    res: dict[str, Any] = {"sizes": {}, "questions": len(questions), "squad_passages": len(base_texts),
                           "embed_seconds": round(embed_s, 1), "embedded": len(texts), "embed_filler": embed_filler}
    for size in sizes:
        n = min(size, len(texts))
        row: dict[str, Any] = {"passages": n}
        with tempfile.TemporaryDirectory() as tmp:
            stores = {}
            for kind in STORES:
                stores[kind] = _open(kind, Path(tmp) / kind)
                row[f"{kind}_build_s"] = round(_build(stores[kind], ids[:n], titles[:n], texts[:n], vectors[:n]), 2)
                stores[kind].search("bench", qvecs[0], qsparse[0], top_k=3)  # opened and warm
                print(f"{n} passages, {kind}: built in {row[f'{kind}_build_s']} s", flush=True)
            lat: dict[str, list[float]] = {k: [] for k in STORES}
            hits: dict[str, int] = {k: 0 for k in STORES}
            same = 0
            for i, (qv, qs) in enumerate(zip(qvecs, qsparse, strict=True)):
                order = STORES if i % 2 == 0 else tuple(reversed(STORES))
                got = {}
                for kind in order:
                    t = time.perf_counter()
                    found = stores[kind].search("bench", qv, qs, top_k=3)
                    lat[kind].append((time.perf_counter() - t) * 1000)
                    got[kind] = [h.id for h in found]
                    hits[kind] += questions[i][1] in got[kind]
                same += got["local"] == got["edge"]
            for kind in STORES:
                xs = sorted(lat[kind])
                row[f"{kind}_p50_ms"] = round(statistics.median(xs), 3)
                row[f"{kind}_p95_ms"] = round(xs[int(0.95 * (len(xs) - 1))], 3)
                row[f"{kind}_recall3"] = round(hits[kind] / len(questions), 4)
                stores[kind].close()
            row["same_top3"] = round(same / len(questions), 4)
            row["p50_ratio_local_over_edge"] = round(row["local_p50_ms"] / row["edge_p50_ms"], 2)
            row["build_ratio_local_over_edge"] = round(row["local_build_s"] / row["edge_build_s"], 2)
        print(json.dumps(row), flush=True)
        res["sizes"][str(n)] = row
    return res


def markdown(res: dict[str, Any], command: str) -> str:
    lines = [
        START,
        "",
        f"Generated by `{command}` on {res['when']} ({res['machine']}); {res['questions']} answerable dev-a questions, "
        f"hybrid search (dense + BM25, convex fusion) for the top 3, the two stores alternating question by question.",
        "",
        "| passages | store | build s | query p50 ms | query p95 ms | recall@3 |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for size, row in res["sizes"].items():
        for kind, label in (("local", "local mode (brute force)"), ("edge", "Qdrant Edge (HNSW)")):
            lines.append(f"| {int(size):,} | {label} | {row[f'{kind}_build_s']:.2f} | {row[f'{kind}_p50_ms']:.2f} | "
                         f"{row[f'{kind}_p95_ms']:.2f} | {row[f'{kind}_recall3']:.3f} |")
    lines += ["", "| passages | p50 local / Edge | build local / Edge | same top 3 |", "|---:|---:|---:|---:|"]
    for size, row in res["sizes"].items():
        lines.append(f"| {int(size):,} | {row['p50_ratio_local_over_edge']:.2f}× | {row['build_ratio_local_over_edge']:.2f}× | "
                     f"{100 * row['same_top3']:.1f}% |")
    lines += [
        "",
        f"Passages: the {res['squad_passages']} dev-a and distractor paragraphs, then word-bigram filler from them "
        + ("(filler embedded with MiniLM too). " if res["embed_filler"] else
           "(a filler passage's dense vector: a random mix of three real passages' vectors plus noise; "
           "`--embed-filler` embeds the filler text instead, over an hour at 100k on 2 cores). ")
        + f"Embedding took {res['embed_seconds']:.0f} s, shared by both stores and not in the build times. Build: BM25 "
        "vectors, upserts and the alias switch, which on Qdrant Edge includes building the HNSW graph. Same top 3: "
        "the share of questions where both stores return the same three passages in the same order (local mode "
        "searches exactly; HNSW approximately).",
        "",
        END,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/squad-v2-dev-a.json"))
    ap.add_argument("--extra", type=Path, default=Path("data/squad-v2-extra-paragraphs.json"))
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("-n", "--questions", type=int, default=200, help="answerable questions searched at each size "
                    "(local mode takes seconds a query at 100k)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--embed-filler", action="store_true", help="embed the filler text with MiniLM (slow, cached)")
    ap.add_argument("--out", type=Path, default=Path("bench/retrieval"))
    ap.add_argument("--benchmarks-md", type=Path, default=Path("BENCHMARKS.md"))
    ap.add_argument("--command", default="make bench-retrieval")
    ap.add_argument("--from-json", action="store_true", help="only re-render BENCHMARKS.md from OUT/results.json")
    args = ap.parse_args()
    if args.from_json:
        res = json.loads((args.out / "results.json").read_text())
        publish(res, None, markdown(res, args.command), args.benchmarks_md, START, END, HEADING)
        return
    res: dict[str, Any] = {"when": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    res.update(run(args.data, args.extra, [int(s) for s in args.sizes.split(",")], args.questions, args.out, args.seed,
                   args.embed_filler))
    publish(res, args.out / "results.json", markdown(res, args.command), args.benchmarks_md, START, END, HEADING)


if __name__ == "__main__":
    main()
