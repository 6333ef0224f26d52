"""`make bench-dispatch` (real part): edge workers measured as processes on this machine.

Three phases, each writing JSON under ``--out`` and its own BENCHMARKS.md block:

1. **profile** — each worker configuration (model x threads) started alone as `ecqa edge serve`,
   its read time fitted as ``overhead + size / prompt_tps + GEN_TOKENS / gen_tps`` from reads of
   50, 200 and 500 prompt tokens. ``profiles.json`` is what the simulator's 8 edges are built from.
2. **contention** — p50/p95/p99 read latency of the default edge model alone, against two workers
   reading at once: both spread over every core (4 threads on 2 cores) or one core each.
3. **reality** — the simulator checked against real processes: the same bursty workload shape
   scaled down to 3 workers for ``--minutes`` per policy, through the real dispatcher; the
   simulator then predicts the same arrivals on the same measured workers. Also the dispatcher's
   own overhead per request (p50, p95).

Requests are real SQuAD paragraphs cut to a size in prompt tokens, read in one prompt (joint
reading), so a request's cost follows its size as the simulator assumes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from haystack import Document

from benchmarks.dispatch_sim import GEN_TOKENS, EdgeProfile, bursty_workload, load_profiles, simulate
from benchmarks.markdown import replace_block
from edge.reader import documents_to_json
from edge.registry import FileRegistry
from eval.stats import percentile  # the one percentile of every table (linear interpolation)
from pipelines.dispatch import Dispatcher, EdgeOverflow
from pipelines.dispatch_policies import POLICIES

REPO = Path(__file__).resolve().parent.parent
ECQA = str(Path(sys.executable).parent / "ecqa")
DEV_A = REPO / "data" / "squad-v2-dev-a.json"
START, END = "<!-- bench-dispatch-real:start -->", "<!-- bench-dispatch-real:end -->"
HEADING = "### Many edges on this machine — `make bench-dispatch`"
CHARS_PER_TOKEN = 4.2  # English SQuAD text in these tokenizers (close enough: the fit maps nominal size to time)

# (name, model, threads, cpus): the configurations measured alone. The first four build the simulated
# fleet; the reality check runs three of them, two sharing core 1.
CONFIGS = [
    ("smollm2-t1", "smollm2-135m-instruct", 1, "0"),
    ("gemma270m-t1", "gemma-3-270m", 1, "0"),
    ("qwen05b-t1", "qwen2.5-coder-0.5b-instruct", 1, "0"),
    ("qwen05b-t2", "qwen2.5-coder-0.5b-instruct", 2, "0-1"),
]
REALITY = [("smollm2-t1", (0,)), ("gemma270m-t1", (1,)), ("qwen05b-t1", (1,))]


class Worker:
    """An `ecqa edge serve` child (joint reading), stopped by :meth:`stop`."""

    def __init__(self, wid: str, model: str, threads: int, cores: str, registry: Path, queue: int = 2) -> None:
        env = {**os.environ, "ECQA_SLM_READING": "joint", "ECQA_REGISTRY_TTL_S": "3", "PYTHONUNBUFFERED": "1",
               "ECQA_FLEET_INSECURE": "1", "COLUMNS": "400", "HF_HUB_OFFLINE": "1"}
        self.id = wid
        # Plain HTTP (--insecure): the numbers of this block were measured before the fleet spoke mutual TLS;
        # `make bench-server` measures what TLS adds per request.
        self.proc = subprocess.Popen([ECQA, "edge", "serve", "--insecure", "--id", wid, "--model", model, "--threads",
                                      str(threads), "--cores", cores, "--queue", str(queue), "--registry", str(registry)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     text=True, env=env)
        self.url = ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "listening on" in line:
                self.url = line.split("listening on ", 1)[1].split()[0]
                break
        if not self.url:
            raise RuntimeError(f"worker {wid} did not start (exit {self.proc.wait()})")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout or []], daemon=True).start()

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/v1/health", timeout=5) as r:
            return dict(json.loads(r.read()))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Requests:
    """Real paragraphs and questions of dev-a, cut to a size in prompt tokens."""

    def __init__(self, seed: int = 0) -> None:
        doc = json.loads(DEV_A.read_text())
        self.items = [(p["context"], qa["question"]) for a in doc["data"] for p in a["paragraphs"] for qa in p["qas"][:1]]
        self.rng = random.Random(seed)

    def make(self, size: int) -> tuple[str, list[Document]]:
        context, question = self.rng.choice(self.items)
        want = int(size * CHARS_PER_TOKEN)
        text = context
        while len(text) < want:  # a short paragraph is continued by another one
            text += "\n\n" + self.rng.choice(self.items)[0]
        text = text[:want]
        docs = [Document(id=f"p{i}", content=text[i: i + 880], meta={"title": ""}) for i in range(0, len(text), 880)]
        return question, docs


def post(url: str, question: str, docs: list[Document]) -> float:
    body = json.dumps({"question": question, "documents": documents_to_json(docs)}).encode()
    t0 = time.perf_counter()
    req = urllib.request.Request(f"{url}/v1/read", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        r.read()
    return time.perf_counter() - t0


# --- 1. profiles ------------------------------------------------------------------------------
def profile(out: Path, reps: int) -> list[EdgeProfile]:
    reqs = Requests(1)
    profiles = []
    for name, model, threads, cores in CONFIGS:
        w = Worker(name, model, threads, cores, out / "registry-profile")
        try:
            entry = w.health()
            post(w.url, *reqs.make(50))  # warm: the first read pays for page faults
            xs, ys = [], []
            for _ in range(reps):
                for size in (50, 200, 500):
                    xs.append(size)
                    ys.append(post(w.url, *reqs.make(size)))
        finally:
            w.stop()
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        a = my - slope * mx
        gen_tps = float(entry["gen_tps"])
        p = EdgeProfile(id=name, model=entry["model"], threads=threads, prompt_tps=round(1.0 / max(slope, 1e-6), 1),
                        gen_tps=gen_tps, overhead_ms=round(max(0.0, a - GEN_TOKENS / gen_tps) * 1000.0, 1),
                        concurrency=1, queue=2, advertised_tps=float(entry.get("read_tps", 0.0)))
        profiles.append(p)
        print(f"{name}: {p.prompt_tps} prompt tok/s (fitted; the worker measured {entry['prompt_tps']} prefill, "
              f"{entry.get('read_tps')} per read), "
              f"{gen_tps} gen tok/s, overhead {p.overhead_ms} ms", flush=True)
    (out / "profiles.json").write_text(json.dumps([asdict(p) for p in profiles], indent=2))
    return profiles


# --- 2. contention ----------------------------------------------------------------------------
def contention(out: Path, n: int) -> dict[str, Any]:
    reqs = Requests(2)
    model = "qwen2.5-coder-0.5b-instruct"
    res: dict[str, Any] = {}
    for label, layout in (("alone, 2 threads on 2 cores", [(2, "0-1")]),
                          ("two workers, 2 threads each on the same 2 cores", [(2, "0-1"), (2, "0-1")]),
                          ("alone, 1 thread on core 0", [(1, "0")]),
                          ("two workers, 1 thread each on its own core", [(1, "0"), (1, "1")])):
        workers = [Worker(f"c{i}", model, t, c, out / "registry-contention") for i, (t, c) in enumerate(layout)]
        try:
            for w in workers:
                post(w.url, *reqs.make(50))
            batches = [[reqs.make(300) for _ in range(n)] for _ in workers]
            lat: list[float] = []

            def run(w: Worker, batch: list[tuple[str, list[Document]]]) -> None:
                for q, d in batch:
                    lat.append(post(w.url, q, d) * 1000.0)

            threads = [threading.Thread(target=run, args=(w, b)) for w, b in zip(workers, batches)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            for w in workers:
                w.stop()
        res[label] = {"n": len(lat), "p50": percentile(lat, 50), "p95": percentile(lat, 95), "p99": percentile(lat, 99)}
        print(label, {k: round(v) for k, v in res[label].items()}, flush=True)
    (out / "contention.json").write_text(json.dumps(res, indent=2))
    return res


# --- 3. simulator against reality ---------------------------------------------------------------
def reality(out: Path, minutes: float, mean_load: float, seed: int) -> dict[str, Any]:
    measured = {p.id: p for p in load_profiles(out / "profiles.json")}
    profiles = [replace(measured[name], id=f"r{i}-{name}", cpus=cpus) for i, (name, cpus) in enumerate(REALITY)]
    duration = minutes * 60.0
    # The same shape as the hour, scaled: a burst of 3x the base rate for 1/5 of each period.
    arrivals = bursty_workload(duration, mean_load, profiles, seed, burst_every_s=duration / 5, burst_len_s=duration / 25)
    reqs = Requests(seed)
    payloads = [reqs.make(size) for _, size in arrivals]
    results: dict[str, Any] = {"arrivals": len(arrivals), "minutes": minutes, "mean_load": mean_load,
                               "profiles": [asdict(p) for p in profiles], "policies": {}}
    for policy in POLICIES:
        registry = out / f"registry-{policy}"
        workers = [Worker(p.id, _model_of(p.id), p.threads, ",".join(map(str, p.cpus)), registry) for p in profiles]
        try:
            # The simulator weighs each worker as the dispatcher does: by the speed it advertised this time.
            seen = {w.id: float(w.health().get("read_tps", 0.0)) for w in workers}
            sim_profiles = [replace(p, advertised_tps=seen[p.id]) for p in profiles]
            for w in workers:
                post(w.url, *reqs.make(50))
            dispatcher = Dispatcher(FileRegistry(registry, ttl_s=3.0), policy, seed=seed)
            outcomes: list[tuple[str, float, float]] = []
            lock = threading.Lock()

            def one(i: int) -> None:
                q, docs = payloads[i]
                t0 = time.perf_counter()
                try:
                    d = dispatcher.read(q, docs, timeout_s=600)
                    rec = ("served", (time.perf_counter() - t0), d.timings["dispatch"])
                except EdgeOverflow:
                    rec = ("rejected", (time.perf_counter() - t0), 0.0)
                except Exception as exc:  # counted apart, never silently lost in the pool
                    rec = (f"error: {exc}"[:200], (time.perf_counter() - t0), 0.0)
                with lock:
                    outcomes.append(rec)

            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=64) as pool:
                for i, (t, _) in enumerate(arrivals):
                    delay = start + t - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    pool.submit(one, i)
        finally:
            for w in workers:
                w.stop()
        served = [o for o in outcomes if o[0] == "served"]
        errors = [o[0] for o in outcomes if o[0].startswith("error")]
        sim = simulate(sim_profiles, arrivals, policy, "reject", seed, 0.0, 0.0)
        results["policies"][policy] = {
            "real": {"processed": len(served), "rejected": sum(o[0] == "rejected" for o in outcomes), "errors": errors,
                     "p95_s": percentile([o[1] for o in served], 95)},
            "sim": {"processed": sim.processed, "rejected": sim.rejected, "p95_s": sim.latency_p95_s},
            "advertised_tps": seen,
            "dispatch_ms": [o[2] for o in served],
        }
        r, s = results["policies"][policy]["real"], results["policies"][policy]["sim"]
        print(f"{policy}: real {r['processed']} processed / {r['rejected']} rejected; "
              f"simulated {s['processed']} / {s['rejected']}", flush=True)
    (out / "reality.json").write_text(json.dumps(results, indent=2))
    return results


def _model_of(profile_id: str) -> str:
    name = profile_id.split("-", 1)[1]
    return next(m for n, m, _, _ in CONFIGS if n == name)


def _within(real: int, sim: int) -> str:
    if sim == 0:
        return "—" if real == 0 else "∞"
    return f"{(real - sim) / sim * 100:+.0f}%"


def block(profiles: list[EdgeProfile], cont: dict[str, Any], real: dict[str, Any], command: str, note: str) -> str:
    lines = [START, "", f"One command: `{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
             f"every worker a real `ecqa edge serve` process).", "",
             "**The measured workers** (each alone; read time fitted over 50/200/500-token reads). The simulated "
             "fleet below cycles these four:", "",
             "| worker | model | threads | prompt tok/s per read (fitted) | gen tok/s | overhead ms | advertised C_i |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {p.id} | {p.model} | {p.threads} | {p.prompt_tps:g} | {p.gen_tps:g} | {p.overhead_ms:g} | "
              f"{p.advertised_tps:g} |" for p in profiles]
    if cont:
        base = {2: cont["alone, 2 threads on 2 cores"], 1: cont["alone, 1 thread on core 0"]}
        lines += ["", "**Cores are shared** — Qwen2.5-0.5B reads of 300 prompt tokens, ms:", "",
                  "| layout | reads | p50 | p95 | p99 | p99 vs alone |", "|---|---:|---:|---:|---:|---:|"]
        for label, r in cont.items():
            ref = base[1 if "1 thread" in label else 2]
            lines.append(f"| {label} | {r['n']} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | "
                         f"{r['p99'] / ref['p99']:.2f}x |")
    if real:
        lines += ["", f"**The simulator against reality** — {real['arrivals']} arrivals over {real['minutes']:g} min "
                  f"(bursty, mean load {real['mean_load']:g}), 3 workers ("
                  + ", ".join(f"{p['id']} on CPU {','.join(map(str, p['cpus']))}" for p in real["profiles"])
                  + "); queue 2, overflow = reject:", "",
                  "| policy | processed real | simulated | Δ | rejected real | simulated | Δ | p95 s real | simulated |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        every: list[float] = []
        for pol, r in real["policies"].items():
            a, s = r["real"], r["sim"]
            every += r["dispatch_ms"]
            lines.append(f"| {pol} | {a['processed']} | {s['processed']} | {_within(a['processed'], s['processed'])} | "
                         f"{a['rejected']} | {s['rejected']} | {_within(a['rejected'], s['rejected'])} | "
                         f"{a['p95_s']:.1f} | {s['p95_s']:.1f} |")
        lines += ["", f"**Dispatcher overhead** (registry view, policy, request body; not the worker's read): "
                  f"p50 {percentile(every, 50):.2f} ms, p95 {percentile(every, 95):.2f} ms over {len(every)} requests."]
    if note:
        lines += ["", note]
    lines += ["", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/dispatch"))
    ap.add_argument("--phases", default="profile,contention,reality")
    ap.add_argument("--reps", type=int, default=3, help="reads per size when profiling")
    ap.add_argument("--contention-n", type=int, default=20, help="reads per worker in each contention layout")
    ap.add_argument("--minutes", type=float, default=5.0, help="length of each policy's real run")
    ap.add_argument("--mean-load", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--benchmarks-md", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--command", default="make bench-dispatch")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    phases = set(args.phases.split(","))
    profiles = profile(args.out, args.reps) if "profile" in phases else load_profiles(args.out / "profiles.json")
    cont = contention(args.out, args.contention_n) if "contention" in phases else _load(args.out / "contention.json")
    real = reality(args.out, args.minutes, args.mean_load, args.seed) if "reality" in phases \
        else _load(args.out / "reality.json")
    md = block(profiles, cont, real, args.command, args.note)
    replace_block(args.benchmarks_md, START, END, md, HEADING)
    print(md)
    return 0


def _load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


if __name__ == "__main__":
    sys.exit(main())
