"""`make bench-kv`: the edge reading each passage from its stored KV state against prefilling it,
interleaved question by question in one run, plus the joint prompt of all passages for quality.

For each of N dev-a questions outside the calibration split, the passages are retrieved once (the
whole collection, hybrid top-3) and read by the edge model (Qwen2.5-Coder-0.5B, q8_0 KV cache)
in four ways, in rotating order so that machine noise falls on all alike:

- ``store``: each passage on its own, its [system + passage] state restored from the store
  (filled beforehand, as `ecqa index build --kv` does), only the question prefilled;
- ``prefill``: the same per-passage reading with every prefix prefilled (no store);
- ``store-f16``: as ``store`` with an f16 KV cache (answers and bytes against q8_0);
- ``joint``: all passages in one prompt (the reading before the store).

The KV cache is emptied before every reading, so no variant profits from the one before.
Writes ``<out>/kv.json`` and the block between the bench-kv markers in BENCHMARKS.md.

``--index-build`` (the last step of `make bench-kv`) times `ecqa index build` of the bundled
collection with and without ``--kv``; ``--eval FOLDER`` (`make bench-kv-cascade`, and the last step
of `make bench-models`) reads the cascade's and cloud-only's mean latency from that evaluation. Both go to
``<out>/product.json`` and the bench-kv-product block.
"""

from __future__ import annotations

# Imports inside functions: each phase (and each child process, after it sets its environment) imports
# only what it measures, so one phase never pays for another's models.
import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from sklearn.metrics import roc_auc_score

from benchmarks.markdown import replace_block
from eval.data import load_questions
from eval.squad_metrics import evaluate
from eval.stats import (
    percentile,  # the one percentile of every table (linear interpolation)
)
from pipelines.calibration import in_calibration_split

START, END = "<!-- bench-kv:start -->", "<!-- bench-kv:end -->"
PRODUCT_START, PRODUCT_END = "<!-- bench-kv-product:start -->", "<!-- bench-kv-product:end -->"
VARIANTS = ("store", "prefill", "store-f16", "joint")


def _reader(kv_type: str) -> Any:
    from reading.model_manifest import DEFAULT_EDGE_MODEL
    from reading.models import model_path
    from reading.reader import LlamaReader

    r = LlamaReader(str(model_path(DEFAULT_EDGE_MODEL)), n_ctx=2048, kv_type=kv_type)
    r.warm_up()
    return r


def run(args: argparse.Namespace) -> dict[str, Any]:
    from edge.prompt_builder import EdgePromptBuilder
    from pipelines import open_store
    from pipelines.edge_pipeline import EdgeQA
    from pipelines.settings import load_settings
    from reading.kv_store import PassageStateStore

    settings = load_settings(qdrant_path=args.qdrant, collection=args.collection)
    questions = [q for q in load_questions(args.data) if not in_calibration_split(q.id)][: args.n]
    builder = EdgePromptBuilder(passage_chars=settings.passage_chars)
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    with open_store(settings) as store:
        edge = EdgeQA(settings, store).warm_up_retrieval()
        retrieved = []
        for q in questions:
            docs = edge.retrieve(q.question).documents
            retrieved.append((docs, builder.run(documents=docs)["passages"]))
    readers = {"q8_0": _reader("q8_0"), "f16": _reader("f16")}
    stores = {k: PassageStateStore(out_dir / f"store-{k}", budget_bytes=1 << 40) for k in readers}
    # The store, filled as `ecqa index build --kv` fills it: every passage these questions retrieve
    # (f16: those of the first --f16-n questions, for its bytes and its answers against q8_0).
    prep: dict[str, dict[str, float]] = {}
    for kind, reader in readers.items():
        some = retrieved if kind == "q8_0" else retrieved[: args.f16_n]
        unique = list({(p.title, p.text): p for _, ps in some for p in ps}.values())
        t0 = time.perf_counter()
        states = reader.prepare(unique, stores[kind])
        prep[kind] = {"passages": len(unique), "computed": states.count("miss"), "seconds": time.perf_counter() - t0,
                      "bytes": stores[kind].size_bytes()}
        print(f"{kind}: {len(unique)} passage states, {prep[kind]['bytes'] / 1e6:.0f} MB, {prep[kind]['seconds']:.0f} s",
              flush=True)
    rows: list[dict[str, Any]] = []
    for i, (q, (_, passages)) in enumerate(zip(questions, retrieved, strict=True)):
        row: dict[str, Any] = {"id": q.id, "has_answer": q.has_answer}
        order = VARIANTS[i % 4:] + VARIANTS[: i % 4]
        for v in order:
            if v == "store-f16" and i >= args.f16_n:
                continue
            reader = readers["f16" if v == "store-f16" else "q8_0"]
            reader._llm.n_tokens = 0  # nothing of the previous reading stays in the cache
            t0 = time.perf_counter()
            if v == "joint":
                r = reader.read(q.question, passages, settings.slm_max_tokens)
            else:
                store = stores["f16" if v == "store-f16" else "q8_0"] if v != "prefill" else None
                r = reader.read_each(q.question, passages, settings.slm_max_tokens, store)
            ms = (time.perf_counter() - t0) * 1000.0
            row[v] = {"ms": ms, "answer": r.passages.answer, "p": r.p_answerable,
                      "prefilled": r.prefilled_tokens, "restore_ms": r.timings.get("restore", 0.0),
                      "decode_ms": r.timings.get("decode", 0.0), "kv": list(r.kv)}
        rows.append(row)
        if (i + 1) % 10 == 0:
            med = {v: percentile([x[v]["ms"] for x in rows if v in x], 50) for v in VARIANTS}
            print(f"{i + 1}/{len(questions)} " + " ".join(f"{v} {m:.0f} ms" for v, m in med.items()), flush=True)
    result = summarize(questions, rows, prep, args)
    (out_dir / "kv.json").write_text(json.dumps({"summary": result, "rows": rows}, indent=1))
    return result


def summarize(questions: list[Any], rows: list[dict[str, Any]], prep: dict[str, dict[str, float]],
              args: argparse.Namespace) -> dict[str, Any]:
    y = [int(r["has_answer"]) for r in rows]
    out: dict[str, Any] = {"n": len(rows), "answerable": sum(y), "prep": prep, "variants": {},
                           "cpu": _cpu(), "date": time.strftime("%Y-%m-%d")}
    out["baseline_f1"] = evaluate(questions, {})["f1"]
    for v in VARIANTS:
        sub = [r for r in rows if v in r]
        ids = {r["id"] for r in sub}
        ms = [r[v]["ms"] for r in sub]
        preds = {r["id"]: r[v]["answer"] for r in sub}
        m = evaluate([q for q in questions if q.id in ids], preds)
        ys = [int(r["has_answer"]) for r in sub]
        out["variants"][v] = {"n": len(sub),
            "p50": percentile(ms, 50), "p95": percentile(ms, 95), "mean": sum(ms) / len(ms),
            "prefilled": sum(r[v]["prefilled"] for r in sub) / len(sub),
            "restore_ms": sum(r[v]["restore_ms"] for r in sub) / len(sub),
            "decode_ms": sum(r[v]["decode_ms"] for r in sub) / len(sub),
            "f1_ungated": m["f1"], "has_ans_f1": m["has_ans_f1"], "no_ans_acc": m["no_ans_accuracy"],
            "auroc": float(roc_auc_score(ys, [r[v]["p"] for r in sub])) if 0 < sum(ys) < len(ys) else float("nan"),
            "hits": sum(k == "hit" for r in sub for k in r[v]["kv"]),
            "reads": sum(len(r[v]["kv"]) for r in sub),
        }
    def same(a: str, b: str) -> float:
        both = [r for r in rows if a in r and b in r]
        return sum(r[a]["answer"] == r[b]["answer"] for r in both) / len(both)

    out["same_store_prefill"] = same("store", "prefill")
    out["same_q8_f16"] = same("store", "store-f16")
    out["same_each_joint"] = same("store", "joint")
    return out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


def block(s: dict[str, Any], command: str) -> str:
    v = s["variants"]
    st, pf, jt = v["store"], v["prefill"], v["joint"]
    per_k = {k: p["bytes"] / p["passages"] * 1000 / 1e6 for k, p in s["prep"].items()}
    lines = [
        START, "",
        f"Generated by `{command}` ({s['date']}, {s['cpu']}): {s['n']} dev-a questions outside the calibration "
        f"split ({s['answerable']} answerable), retrieval over the whole collection (hybrid top-3), the edge model "
        "Qwen2.5-Coder-0.5B-Instruct. Each question's passages were read four ways in rotating order, the KV cache "
        "emptied before each; latency is the whole reading (probes, answer, parsing not included). Percentiles "
        "interpolate linearly between ranks.",
        "",
        "| reading | p50 ms | p95 ms | mean ms | tokens prefilled / question | restore ms / question | decode ms | "
        "F1 (ungated) | HasAns F1 | answerability AUROC |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {"store": "each passage, state from the store (q8_0)", "prefill": "each passage, prefilled (q8_0)",
              "store-f16": f"each passage, state from the store (f16; first {v['store-f16']['n']} questions)",
              "joint": "all passages in one prompt (q8_0)"}
    for k in VARIANTS:
        x = v[k]
        lines.append(f"| {labels[k]} | {x['p50']:.0f} | {x['p95']:.0f} | {x['mean']:.0f} | {x['prefilled']:.0f} | "
                     f"{x['restore_ms']:.1f} | {x['decode_ms']:.0f} | {x['f1_ungated']:.1f} | {x['has_ans_f1']:.1f} | "
                     f"{x['auroc']:.3f} |")
    lines.append(f"| always no-answer (baseline) | — | — | — | — | — | — | {s['baseline_f1']:.1f} | 0.0 | — |")
    lines += [
        "",
        f"- **Store against prefill:** p50 ratio {st['p50'] / pf['p50']:.2f}, tokens prefilled per question "
        f"{pf['prefilled'] / max(st['prefilled'], 1e-9):.1f}× fewer; same answer on "
        f"{100 * s['same_store_prefill']:.1f}% of questions. Against the joint prompt: p50 ratio "
        f"{st['p50'] / jt['p50']:.2f}, {jt['prefilled'] / max(st['prefilled'], 1e-9):.1f}× fewer tokens prefilled.",
        f"- **q8_0 against f16:** same answer on {100 * s['same_q8_f16']:.1f}% of the {v['store-f16']['n']} questions "
        "read both ways; store bytes per 1000 "
        f"passages: q8_0 {per_k['q8_0']:.0f} MB, f16 {per_k['f16']:.0f} MB.",
        "- **Filling the store** (what `ecqa index build --kv` does per passage): "
        + ", ".join(f"{k} {p['passages'] / p['seconds']:.2f} passages/s" for k, p in s["prep"].items())
        + f" over the {s['prep']['q8_0']['passages']} passages these questions retrieve.",
    ]
    lines += [
        "",
        END,
    ]
    return "\n".join(lines) + "\n"


def product_block(p: dict[str, Any]) -> str:
    """The store in the product: `ecqa index build --kv` of the bundled collection, and the cascade
    (its edge reading from those states) against cloud-only in `make bench-models`."""
    lines = [PRODUCT_START, ""]
    ib = p.get("index_build")
    if ib:
        lines.append(
            f"- **`ecqa index build --kv`** on the bundled collection ({ib['date']}, {ib['cpu']}; {ib['passages']} "
            f"passages, {ib['kv']['kv_type']} states): {ib['kv_s']:.0f} s against {ib['plain_s']:.0f} s for the same "
            f"build without `--kv` ({ib['kv_s'] / ib['plain_s']:.1f}×), {ib['kv']['computed']} states, "
            f"{ib['kv']['bytes'] / 1e6:.0f} MB ({ib['kv']['bytes'] / ib['kv']['computed'] / 1e3:.0f} kB per passage). "
            "`make bench-kv`'s last step.")
    else:
        lines.append("- **`ecqa index build --kv`**: not timed yet — `make bench-kv`'s last step does.")
    c = p.get("cascade")
    if c:
        lines.append(
            f"- **Cascade against cloud-only** over the `{c['network']}` link ({c['date']}; `{c['command']}`, "
            f"{c['n']} held-out questions, the edge reading its passages from the states above): mean "
            f"{c['cascade_ms']:.0f} ms against {c['cloud_ms']:.0f} ms, **ratio {c['cascade_ms'] / c['cloud_ms']:.2f}** "
            f"(aim ≤ 0.35); F1 {c['cascade_f1']:.1f} against {c['cloud_f1']:.1f} (aim ≥ cloud − 1), "
            f"{100 * c['cloud_rate']:.0f}% of questions sent to the cloud.")
    else:
        lines.append("- **Cascade against cloud-only**: not measured yet — `make bench-kv-cascade` does.")
    return "\n".join([*lines, "", PRODUCT_END]) + "\n"


def cascade_vs_cloud(folder: Path) -> dict[str, Any]:
    from eval.report import load_report

    report = load_report(folder)
    if report is None or not {"cloud", "cascade"} <= set(report["policies"]):
        raise SystemExit(f"no report with cloud and cascade in {folder} — run `make bench-models` first")
    pol = report["policies"]
    return {"n": report["n"], "network": report["config"]["network"],
            "cascade_ms": pol["cascade"]["latency_ms"]["mean"], "cloud_ms": pol["cloud"]["latency_ms"]["mean"],
            "cascade_f1": pol["cascade"]["f1"], "cloud_f1": pol["cloud"]["f1"],
            "cloud_rate": pol["cascade"]["cloud_call_rate"], "date": time.strftime("%Y-%m-%d")}


def index_build(args: argparse.Namespace) -> dict[str, Any]:
    """`ecqa index build --kv` of the bundled collection into a fresh index and KV folder, timed."""
    import shutil
    import subprocess

    kv_dir, qdrant = args.out / "index-kv", args.out / "index-qdrant"
    shutil.rmtree(kv_dir, ignore_errors=True)
    shutil.rmtree(qdrant, ignore_errors=True)
    ecqa = str(Path(sys.executable).parent / "ecqa")
    cmd = [ecqa, "index", "build", str(args.data), *map(str, args.extra), "--qdrant-path", str(qdrant), "--json"]
    env = {**os.environ, "ECQA_KV_DIR": str(kv_dir)}
    t0 = time.perf_counter()
    plain = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
    t1 = time.perf_counter()
    shutil.rmtree(qdrant)
    built = json.loads(subprocess.run([*cmd, "--kv"], env=env, check=True, capture_output=True, text=True).stdout)
    t2 = time.perf_counter()
    return {"passages": plain["documents"], "plain_s": t1 - t0, "kv_s": t2 - t1, "kv": built["kv"],
            "date": time.strftime("%Y-%m-%d"), "cpu": _cpu()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/squad-v2-dev-a.json"))
    ap.add_argument("--qdrant", type=Path, help="an index of the whole collection (make bench-kv builds it)")
    ap.add_argument("--collection", default="squad")
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--f16-n", type=int, default=50, help="questions also read with an f16 KV cache")
    ap.add_argument("--out", type=Path, default=Path("bench/kv"))
    ap.add_argument("--md", type=Path, default=Path("BENCHMARKS.md"))
    ap.add_argument("--command", default="make bench-kv")
    ap.add_argument("--extra", type=Path, nargs="*", default=[Path("data/squad-v2-extra-paragraphs.json")])
    ap.add_argument("--from-json", action="store_true",
                    help="only rewrite the blocks from <out>/kv.json and <out>/product.json, those that exist")
    ap.add_argument("--eval", type=Path, help="an `ecqa eval` folder with cloud and cascade (make bench-models): "
                    "their mean latency side by side")
    ap.add_argument("--index-build", action="store_true",
                    help="time `ecqa index build` with and without --kv on the bundled collection into <out>/kv.json")
    args = ap.parse_args()
    product_heading = "### The store in the product — `make bench-kv`, `make bench-models`"
    if args.from_json:
        kv_json, product_json = args.out / "kv.json", args.out / "product.json"
        if not kv_json.exists() and not product_json.exists():
            ap.error(f"no {kv_json} or {product_json} — run make bench-kv (or make bench-models) first")
        for missing in (p for p in (kv_json, product_json) if not p.exists()):
            print(f"no {missing} on this machine — its block is left as it is", file=sys.stderr)
        if kv_json.exists():
            replace_block(args.md, START, END, block(json.loads(kv_json.read_text())["summary"], args.command),
                          "## Passage KV states — `make bench-kv`")
        if product_json.exists():
            replace_block(args.md, PRODUCT_START, PRODUCT_END, product_block(json.loads(product_json.read_text())),
                          product_heading)
        return
    if args.index_build or args.eval:
        # The product block: its own JSON, so that the 200-question reading block above stays as measured.
        path = args.out / "product.json"
        product = json.loads(path.read_text()) if path.exists() else {}
        if args.index_build:
            product["index_build"] = index_build(args)
        if args.eval:
            product["cascade"] = {**cascade_vs_cloud(args.eval), "command": args.command}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(product, indent=1))
        replace_block(args.md, PRODUCT_START, PRODUCT_END, product_block(product), product_heading)
        print(json.dumps(product))
        return
    if args.qdrant is None:
        ap.error("--qdrant is required for the reading benchmark — make bench-kv builds bench/kv/qdrant")
    s = run(args)
    replace_block(args.md, START, END, block(s, args.command), "## Passage KV states — `make bench-kv`")
    print(json.dumps({k: s[k] for k in ("same_store_prefill", "same_q8_f16", "same_each_joint")}))

if __name__ == "__main__":
    main()
