"""`make bench-edge-speed`: the edge's and the cloud's reading before and after their read plans, side by side.

1. **The edge, live.** For N held-out dev-a questions (the records of `make bench-models`: retrieval done,
   the cloud's reading recorded), the edge model (Qwen2.5-Coder-0.5B, q8_0 KV cache, every passage's
   prefix state in the store, filled beforehand) reads each question's passages in rotating order:
   ``full`` (every passage probed and answered, the chosen answer checked: the reading before), ``lean``
   (the read plan `make calibrate` chose: the passages within its retrieval-score gap probed, only the
   best one answered, no check) and ``lean+spec`` (the same with prompt-lookup speculative decoding).
   Each variant's routing models are fitted on the calibration records for its own plan (out of fold,
   never on these questions); the cascade is replayed with the variant's live edge reading and time
   and the recorded cloud reading and time.
2. **The cloud model, live** (Qwen2.5-Coder-1.5B, as the embedded backend reads: each passage's
   prefix state kept in memory): for the first M of those questions, a cold read (no state kept),
   then the full and the lean cloud plan warm, in rotating order.
3. **All held-out records, derived.** Every plan's steps are a subset of the full reading's, so the
   recorded full readings of all of `make bench-models`' held-out questions give each plan's F1 and
   AUROC without reading again (:func:`eval.replay.planned`).

Resumable: one line per question in ``<out>/reads.jsonl`` and ``<out>/cloud.jsonl``. Writes
``<out>/results.json`` and the block between the bench-edge-speed markers in BENCHMARKS.md.
"""

from __future__ import annotations

# Imports inside functions: the model and the fitting load only in the phase that needs them.
import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.markdown import publish
from eval.stats import bootstrap_ci, paired_bootstrap_ci, percentile

START, END = "<!-- bench-edge-speed:start -->", "<!-- bench-edge-speed:end -->"
VARIANTS = ("full", "lean", "lean+spec")


def _records(path: Path, n: int) -> list[dict[str, Any]]:
    from eval.records import labelled, read_records

    recs = [r for r in labelled(read_records(path).values()) if "error" not in r.get("cloud", {"error": ""})]
    return recs[:n]


def calibrations(calibration_records: Path) -> dict[str, Any]:
    """The routing models of the reading before (full on both tiers) and of the plans `make calibrate`
    chooses, fitted on the calibration records."""
    from eval.calibrate import MAX_CLOUD_RATE, choose_cloud_plan, choose_plan, fit
    from eval.records import labelled, read_records
    from eval.replay import planned

    recs = labelled(read_records(calibration_records).values())
    quiet = lambda _: None  # noqa: E731
    cloud_plan, cloud_plans = choose_cloud_plan(recs, MAX_CLOUD_RATE, progress=quiet)
    plan, plans = choose_plan(recs, MAX_CLOUD_RATE, progress=quiet, cloud_plan=cloud_plan)
    return {"full": fit(recs, MAX_CLOUD_RATE, {}, progress=quiet),
            "lean": fit(planned(recs, plan, cloud_plan), MAX_CLOUD_RATE, {}, progress=quiet, plan=plan, cloud_plan=cloud_plan),
            "plans": plans, "cloud_plans": cloud_plans}


def read_live(records: list[dict[str, Any]], plans: dict[str, Any], out: Path, kv_dir: Path, threads: int,
              progress: Any = print) -> list[dict[str, Any]]:
    """Every record's passages read live by each variant, rotating the order; resumable."""
    from benchmarks.layer_probe import load_reader
    from eval.records import read_records
    from pipelines.settings import Settings
    from reading.kv_store import PassageStateStore
    from reading.prompts import Passage
    from reading.reader import SpecStats

    settings = Settings()
    path = out / "reads.jsonl"
    done = read_records(path)
    todo = [r for r in records if r["id"] not in done]
    if todo:
        reader = load_reader(threads, None, kv_type=settings.kv_type)
        store = PassageStateStore(kv_dir, 1 << 40)

        def passages(r: dict[str, Any]) -> list[Passage]:
            return _passages(r, settings.passage_chars)

        progress(f"storing the prefix states of {len(todo)} questions' passages (not timed)")
        for r in todo:
            reader.prepare(passages(r), store)
        with path.open("a") as f:
            for k, r in enumerate(todo):
                row: dict[str, Any] = {"id": r["id"]}
                reader.spec_stats = SpecStats()
                order = VARIANTS[k % len(VARIANTS):] + VARIANTS[:k % len(VARIANTS)]
                for v in order:
                    reader._llm._ctx.kv_cache_seq_rm(0, 0, -1)  # no variant profits from the one before
                    reader._llm.n_tokens = 0
                    reader.speculative = v.endswith("+spec")
                    t0 = time.perf_counter()
                    reading = reader.read_each(r["question"], passages(r), settings.slm_max_tokens, store,
                                               plans[v.removesuffix("+spec")])
                    ms = (time.perf_counter() - t0) * 1000.0
                    row[v] = {"ms": ms, "reading": reading.passages.to_json(), "prefilled": reading.prefilled_tokens,
                              "passes": reading.passages.passes, "kv": list(reading.kv),
                              "decode_ms": reading.timings.get("decode", 0.0)}
                row["spec"] = vars(reader.spec_stats).copy()
                f.write(json.dumps(row) + "\n")
                f.flush()
                done[r["id"]] = row
                if (k + 1) % 25 == 0:
                    progress(f"{k + 1}/{len(todo)} questions read")
    return [done[r["id"]] for r in records]


def _passages(r: dict[str, Any], chars: int) -> list[Any]:
    from reading.prompts import Passage

    return [Passage(title, text, pid, float(s["fused"])).cut(chars)
            for title, text, pid, s in zip(r["titles"], r["passages"], r["passage_ids"], r["passage_scores"], strict=True)]


def read_cloud(records: list[dict[str, Any]], cloud_plan: Any, out: Path, threads: int,
               progress: Any = print) -> list[dict[str, Any]]:
    """The cloud model's reading of each record's passages as the embedded backend reads them (each request's
    passage prefix state kept in memory): cold (nothing kept), then full and ``cloud_plan`` warm, rotating."""
    from eval.records import read_records
    from pipelines.settings import Settings
    from reading.kv_store import MemoryStateStore
    from reading.model_manifest import DEFAULT_CLOUD_MODEL
    from reading.models import resolve_gguf, spec_for_path
    from reading.passages import FULL
    from reading.reader import LlamaReader

    settings = Settings()
    path = out / "cloud.jsonl"
    done = read_records(path)
    todo = [r for r in records if r["id"] not in done]
    if todo:
        gguf = resolve_gguf("", DEFAULT_CLOUD_MODEL)
        spec = spec_for_path(gguf)
        reader = LlamaReader(str(gguf), n_ctx=settings.cloud_n_ctx, n_threads=threads,
                             family=spec.prompt_family if spec else "", model_sha256=spec.sha256 if spec else "")
        reader.warm_up()
        with path.open("a") as f:
            for k, r in enumerate(todo):
                store = MemoryStateStore(1 << 30)
                row: dict[str, Any] = {"id": r["id"]}
                plans = [("full", FULL), ("lean", cloud_plan)]
                for name, plan in [("cold", FULL), *(plans if k % 2 == 0 else plans[::-1])]:
                    reader._llm._ctx.kv_cache_seq_rm(0, 0, -1)
                    reader._llm.n_tokens = 0
                    t0 = time.perf_counter()
                    reading = reader.read_each(r["question"], _passages(r, settings.passage_chars), settings.cloud_max_tokens,
                                               store, plan)
                    row[name] = {"ms": (time.perf_counter() - t0) * 1000.0, "answer": reading.passages.answer,
                                 "prefilled": reading.prefilled_tokens}
                f.write(json.dumps(row) + "\n")
                f.flush()
                done[r["id"]] = row
                progress(f"cloud: {k + 1}/{len(todo)} questions read")
    return [done[r["id"]] for r in records]


def with_edge(r: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The record with the edge's reading, answer and time replaced by a live one (retrieval as recorded)."""
    from reading.passages import PassageReading

    reading = PassageReading.from_json(live["reading"])
    return r | {"edge": r["edge"] | {"reading": live["reading"], "answer": reading.answer,
                                     "total_ms": r["retrieval_ms"] + live["ms"]}}


def _routed(recs: list[dict[str, Any]], cal: Any) -> dict[str, Any]:
    from eval.replay import route_records

    return {name: route_records(recs, cal.policy(name), cal, 12000.0) for name in ("edge", "cloud", "cascade")}


def derived(held: list[dict[str, Any]], cals: dict[str, Any]) -> dict[str, Any]:
    """Each calibration on every held-out record, its plans' readings derived from the recorded full ones."""
    import numpy as np

    from eval.calibrate import auroc
    from eval.replay import planned, record_cloud_signals, record_edge_signals

    out: dict[str, Any] = {"n": len(held), "always_empty_f1": 100 * sum(not r["has_answer"] for r in held) / len(held)}
    y = np.array([r["has_answer"] for r in held], dtype=int)
    per_q = {}
    for v in ("full", "lean"):
        cal = cals[v]
        recs = planned(held, cal.read_plan, cal.cloud_read_plan)
        routed = _routed(recs, cal)
        row = {}
        for name, rs in routed.items():
            f1 = [100 * x.f1 for x in rs]
            row[name] = {"f1": sum(f1) / len(f1), "ci": bootstrap_ci(f1),
                         "cloud_rate": sum(x.cloud_called for x in rs) / len(rs)}
            per_q[(v, name)] = f1
        row["edge_auroc"] = auroc(y, np.array([cal.edge.answerable.predict(record_edge_signals(r)) for r in recs]))
        row["cloud_auroc"] = auroc(y, np.array([cal.cloud.answerable.predict(record_cloud_signals(r)) for r in recs]))
        out[v] = row
    out["paired"] = {name: paired_bootstrap_ci(per_q[("lean", name)], per_q[("full", name)])
                     for name in ("edge", "cloud", "cascade")}
    return out


def analyse(records: list[dict[str, Any]], rows: list[dict[str, Any]], cloud_rows: list[dict[str, Any]],
            held: list[dict[str, Any]], cals: dict[str, Any]) -> dict[str, Any]:
    from reading.passages import PassageReading, under_plan

    n = len(records)
    out: dict[str, Any] = {"n": n, "answerable": sum(r["has_answer"] for r in records), "plans": cals["plans"],
                           "cloud_plans": cals["cloud_plans"], "plan": cals["lean"].read_plan.to_json(),
                           "cloud_plan": cals["lean"].cloud_read_plan.to_json(), "variants": {}}
    f1s = {}
    for v in VARIANTS:
        ms = [row[v]["ms"] for row in rows]
        cal = cals[v.removesuffix("+spec")]
        routed = _routed([with_edge(r, row[v]) for r, row in zip(records, rows, strict=True)], cal)
        f1s[v] = [100 * x.f1 for x in routed["cascade"]]
        edge_ms = [x.latency_ms for x in routed["edge"]]
        out["variants"][v] = {
            "read_ms": {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "mean": sum(ms) / n},
            "decode_ms": sum(row[v]["decode_ms"] for row in rows) / n,
            "edge_ms": {"p50": percentile(edge_ms, 50), "mean": sum(edge_ms) / n},
            "passes": sum(row[v]["passes"] for row in rows) / n,
            "prefilled": sum(row[v]["prefilled"] for row in rows) / n,
            "cascade_f1": sum(f1s[v]) / n, "cascade_ci": bootstrap_ci(f1s[v]),
            "edge_f1": 100 * sum(x.f1 for x in routed["edge"]) / n,
            "cloud_rate": sum(x.cloud_called for x in routed["cascade"]) / n,
            "cascade_ms": sum(x.latency_ms for x in routed["cascade"]) / n,
            "cloud_only_ms": sum(x.latency_ms for x in routed["cloud"]) / n,
            "cloud_only_f1": 100 * sum(x.f1 for x in routed["cloud"]) / n,
        }
    for v in VARIANTS[1:]:
        ratio = [row[v]["ms"] / row["full"]["ms"] for row in rows]
        out["variants"][v]["ratio_p50"] = percentile(ratio, 50)
        out["variants"][v]["paired_f1"] = paired_bootstrap_ci(f1s[v], f1s["full"])
    spec = {k: sum(row["spec"][k] for row in rows) for k in ("checks", "drafted", "accepted")}
    spec["same_reply"] = sum(PassageReading.from_json(row["lean+spec"]["reading"]).reply
                             == PassageReading.from_json(row["lean"]["reading"]).reply for row in rows) / n
    spec["decode_ratio"] = out["variants"]["lean+spec"]["decode_ms"] / max(out["variants"]["lean"]["decode_ms"], 1e-9)
    out["spec"] = spec
    plan = cals["lean"].read_plan
    same = sum(under_plan(PassageReading.from_json(row["full"]["reading"]), plan,
                          [s["fused"] for s in r["passage_scores"]]).answer
               == PassageReading.from_json(row["lean"]["reading"]).answer for r, row in zip(records, rows, strict=True))
    out["same_answer_share"] = same / n
    out["always_empty_f1"] = 100 * sum(not r["has_answer"] for r in records) / n
    if cloud_rows:
        m = len(cloud_rows)
        out["cloud"] = {"n": m, **{k: {"p50": percentile([c[k]["ms"] for c in cloud_rows], 50),
                                        "mean": sum(c[k]["ms"] for c in cloud_rows) / m} for k in ("cold", "full", "lean")},
                        "lean_over_full_p50": percentile([c["lean"]["ms"] / c["full"]["ms"] for c in cloud_rows], 50),
                        "same_answer": sum(c["lean"]["answer"] == c["full"]["answer"] for c in cloud_rows) / m}
    out["derived"] = derived(held, cals)
    return out


def _plan_name(pl: dict[str, Any]) -> str:
    if pl["answer"] == "all":
        return "full"
    return f"lean, gap {'none' if pl['gap'] is None else format(pl['gap'], 'g')}" + (", checked" if pl["verify"] else "")


def markdown(res: dict[str, Any], meta: str) -> str:
    v = res["variants"]
    plan = res["plan"]
    gap = "every passage" if plan["gap"] is None else f"the passages within {plan['gap']:g} of the best retrieval score"
    lines = [
        f"Generated by `make bench-edge-speed` ({meta}): {res['n']} held-out dev-a questions ({res['answerable']} "
        "answerable; the first of `make bench-models`' seeded sample), their retrieval and cloud readings as recorded "
        "there, the edge's reading live, the three variants per question in rotating order (KV cache emptied before "
        "each, every passage's prefix state stored beforehand). Each variant's routing models were fitted on the 945 "
        "calibration-split questions for its own read plans, out of fold; the cascade is replayed on the wifi link "
        "(cloud readings and times as recorded: the cloud's full reading).",
        "",
        f"The edge's read plan chosen by `make calibrate`: probe {gap}, answer only the one with the highest p(yes), "
        "no check. The cloud's: probe every passage, answer the best one, check that answer.",
        "",
        "| edge reading | passes / question | prefilled tokens | read p50 ms | read p95 ms | read mean ms "
        "| of which decode | ratio (p50 per question) "
        "| edge p50 ms (with retrieval) | edge F1 | cascade F1 | 95% CI | cloud calls | cascade mean ms | vs cloud-only |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, key in (("full (before)", "full"), ("lean (read plan)", "lean"), ("lean + speculative decoding", "lean+spec")):
        x = v[key]
        ms = x["read_ms"]
        lines.append(f"| {name} | {x['passes']:.2f} | {x['prefilled']:.0f} | {ms['p50']:.0f} | {ms['p95']:.0f} "
                     f"| {ms['mean']:.0f} | {x['decode_ms']:.0f} | {x.get('ratio_p50', 1.0):.2f} | {x['edge_ms']['p50']:.0f} "
                     f"| {x['edge_f1']:.1f} "
                     f"| {x['cascade_f1']:.1f} | {x['cascade_ci'][0]:.1f} – {x['cascade_ci'][1]:.1f} "
                     f"| {100 * x['cloud_rate']:.0f}% "
                     f"| {x['cascade_ms']:.0f} | {x['cascade_ms'] / x['cloud_only_ms']:.2f}× |")
    lo, hi = v["lean"]["paired_f1"]
    sp = res["spec"]
    lines += [
        "",
        f"- Cascade F1, lean − full: {v['lean']['cascade_f1'] - v['full']['cascade_f1']:+.1f} "
        f"(paired 95% CI {lo:+.1f} – {hi:+.1f}); "
        f"always empty {res['always_empty_f1']:.1f}; cloud only {v['full']['cloud_only_f1']:.1f}.",
        f"- The lean reading's answer equals the one its plan derives from the full reading of the same question on "
        f"{100 * res['same_answer_share']:.1f}% of questions (the rest: near-ties of greedy decoding, as between a stored "
        "prefix state and a prefill).",
        f"- Speculative decoding (prompt lookup, up to 8 draft tokens from the prompt's n-grams): {sp['accepted']} of "
        f"{sp['drafted']} draft tokens accepted in {sp['checks']} checks; the same reply on {100 * sp['same_reply']:.1f}% of "
        f"questions; decode time {sp['decode_ratio']:.2f}× plain decoding's. On these 2 cores a forward pass of k tokens "
        "costs nearly k single-token passes, so a draft pays only when almost all of it is accepted: it stays off "
        "(`ECQA_SPECULATIVE=true` turns it on where a batch is cheap, e.g. a GPU).",
    ]
    if "cloud" in res:
        c = res["cloud"]
        lines += [
            f"- The cloud model (Qwen2.5-Coder-1.5B, read as the embedded backend reads, {c['n']} of these questions): "
            f"cold (no passage state kept) p50 {c['cold']['p50']:.0f} ms; warm, full reading p50 {c['full']['p50']:.0f} ms, "
            f"lean p50 {c['lean']['p50']:.0f} ms (lean / full per question, median {c['lean_over_full_p50']:.2f}); the same "
            f"answer on {100 * c['same_answer']:.0f}%. Replayed cascade times above use the recorded full cloud reading.",
        ]
    d = res["derived"]
    lines += [
        "",
        f"**All {d['n']} held-out questions of `make bench-models`**, each plan's readings derived from the recorded full "
        f"ones (always empty {d['always_empty_f1']:.1f}):",
        "",
        "| plans | edge F1 | cloud-only F1 | cascade F1 | 95% CI | cloud calls | edge AUROC | cloud AUROC |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, key in (("full on both tiers (before)", "full"), ("lean edge, lean cloud (default)", "lean")):
        x = d[key]
        lines.append(f"| {name} | {x['edge']['f1']:.1f} | {x['cloud']['f1']:.1f} | {x['cascade']['f1']:.1f} "
                     f"| {x['cascade']['ci'][0]:.1f} – {x['cascade']['ci'][1]:.1f} | {100 * x['cascade']['cloud_rate']:.0f}% "
                     f"| {x['edge_auroc']:.3f} | {x['cloud_auroc']:.3f} |")
    pc = d["paired"]["cascade"]
    lines += [
        "",
        f"Lean − full, paired: cascade {d['lean']['cascade']['f1'] - d['full']['cascade']['f1']:+.1f} "
        f"({pc[0]:+.1f} – {pc[1]:+.1f}).",
        "",
        "The plans `make calibrate` tried (out of fold on the calibration split; the cheapest within 0.5 F1 of the full "
        "reading is kept):",
        "",
        "| tier | plan | passes / question | cloud-only F1 | cascade F1 | edge F1 | AUROC | chosen |",
        "|---|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for p in res["cloud_plans"]:
        lines.append(f"| cloud | {_plan_name(p['plan'])} | {p['passes']:.2f} | {p['cloud_f1']:.1f} | {p['cascade_f1']:.1f} | | "
                     f"{p['cloud_auroc']:.3f} | {'yes' if p['chosen'] else ''} |")
    for p in res["plans"]:
        lines.append(f"| edge | {_plan_name(p['plan'])} | {p['passes']:.2f} | | {p['cascade_f1']:.1f} | {p['edge_f1']:.1f} "
                     f"| {p['edge_auroc']:.3f} | {'yes' if p['chosen'] else ''} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=Path, default=Path("bench/models/eval/records.jsonl"),
                    help="held-out records of `make bench-models`")
    ap.add_argument("--calibration-records", type=Path, default=Path("bench/models/records-calibration.jsonl"))
    ap.add_argument("-n", type=int, default=300, help="questions the edge reads live")
    ap.add_argument("--cloud-n", type=int, default=30, help="questions the cloud model reads live")
    ap.add_argument("--kv-dir", type=Path, default=Path("bench/models/kv"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/edge-speed"))
    ap.add_argument("--benchmarks-md", type=Path, default=Path("BENCHMARKS.md"))
    ap.add_argument("--from-json", action="store_true", help="rewrite the block from <out>/results.json only")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        res = json.loads((args.out / "results.json").read_text())
    else:
        held = _records(args.records, 10**9)
        records = held[: args.n]
        cals = calibrations(args.calibration_records)
        plans = {"full": cals["full"].read_plan, "lean": cals["lean"].read_plan}
        rows = read_live(records, plans, args.out, args.kv_dir, args.threads)
        cloud_rows = (read_cloud(records[: args.cloud_n], cals["lean"].cloud_read_plan, args.out, args.threads)
                      if args.cloud_n else [])
        res = analyse(records, rows, cloud_rows, held, cals)
        res["meta"] = f"{time.strftime('%Y-%m-%d')}, {args.threads} threads"
    publish(res, None if args.from_json else args.out / "results.json", f"{START}\n\n{markdown(res, res['meta'])}\n{END}\n",
            args.benchmarks_md, START, END, "## Half a second on the edge — `make bench-edge-speed`")


if __name__ == "__main__":
    main()
