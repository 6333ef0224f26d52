"""`ecqa eval`: every policy on the same SQuAD v2 questions, accuracy and latency side by side.

    questions ─► index (content-hash collection, reused) ─► per question, live and timed:
                 edge run (retrieve + SLM) and cloud run (sealed call over the link)
                 appended to DIR/records.jsonl (a rerun skips finished questions)
              ─► each policy's real ``decide`` routes every record (eval/replay.py)
              ─► DIR/predictions-<policy>.json (official format), report.json, report.md, PNGs

Running each question once per tier instead of once per policy keeps an N-question evaluation of
five policies at the cost of one edge run and one cloud call per question; what a policy answers
and how long it takes are those of the route its ``decide`` picks on the same measured runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.data import load_questions
from eval.errors import EvalError
from eval.plots import write_plots
from eval.records import failed, read_records, run_records
from eval.replay import Routed, Values, record_edge_signals, route_records
from eval.report import (
    SCHEMA,
    accuracy,
    f1_interval,
    markdown,
    policy_metrics,
    retrieval_recall,
    write_predictions,
)
from eval.resources import ResourceSampler, read_samples, summarize_samples
from eval.squad_metrics import Question, score_question
from pipelines import DocumentStore, IndexStore, get_profile, open_store, prompts_fingerprint
from pipelines.answer import (
    POLICIES,
    answer_cache_from,
    build_cascade,
    check_policy,
    latency_model_for,
)
from pipelines.calibration import Calibration, in_calibration_split
from pipelines.cascade import CloudClient
from pipelines.cloud_path import open_cloud_link
from pipelines.edge_pipeline import EdgeQA
from pipelines.index import document_id, index_files
from pipelines.policies import Signals, policy_class
from pipelines.settings import Settings, default_data_dir
from pipelines.stack import embedded_stack
from pipelines.stages import split_stages

# step name, done, total
Progress = Callable[[str, int, int], None]
SWEEP_STEPS = 20


def sweep_thresholds(shares: Sequence[float], steps: int = SWEEP_STEPS) -> list[float]:
    """Escalation thresholds that escalate about all, (steps-1)/steps, …, none of the questions
    (quantiles of the escalation score): an even grid would see nothing where the scores bunch up."""
    xs = sorted(shares)
    out = {0.0, 1.0 + 1e-9}
    for k in range(1, steps):
        out.add(xs[min(len(xs) - 1, max(0, round(k * len(xs) / steps) - 1))] + 1e-9)
    return sorted(out)


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run.

    :param data: any SQuAD v2 file; its paragraphs are indexed and its questions asked.
    :param out: the report folder (records, predictions, report.json/md, plots).
    :param limit: the first N questions (after ``seed`` shuffles them), or all.
    :param policies: the routing policies to compare.
    :param network: link profile between edge and cloud (lan, 5g, wifi, congested), or direct.
    :param extra_corpus: more files indexed next to ``data`` (distractor paragraphs).
    :param oracle_context: answer from the gold paragraph instead of retrieving.
    :param skip_calibration_split: leave out questions of the calibration split (the packaged
        routing models were fitted on dev-a's; evaluating on them would flatter the policies).
    :param live: answer every question once per policy through :meth:`Cascade.answer` itself (the
        product path end to end: cache, breaker, deadline), instead of one edge run and one cloud
        call per question routed by each policy; N × policies answers, no threshold sweep.
    """

    data: Path
    out: Path
    limit: int | None = None
    seed: int | None = None
    policies: tuple[str, ...] = POLICIES
    network: str | None = None
    extra_corpus: tuple[Path, ...] = ()
    oracle_context: bool = False
    skip_calibration_split: bool = False
    sweep: bool = True
    live: bool = False
    files: dict[str, Any] = field(default_factory=dict)


def check_config(cfg: EvalConfig) -> list[Question]:
    """Every check that needs no model: policies, link profile, output folder, the data itself.

    :returns: the questions to ask.
    :raises EvalError, PipelineError, EdgeError, InputFileError, InputFormatError: with a fix.
    """
    if not cfg.policies:
        raise EvalError(f"no policy given — pass --policies with some of: {', '.join(POLICIES)}")
    for p in cfg.policies:
        check_policy(p)
    if cfg.network:
        get_profile(cfg.network)
    if cfg.live and cfg.oracle_context:
        raise EvalError("--live answers through the cascade, which retrieves its own passages — drop --oracle-context "
                        "or --live")
    if cfg.limit is not None and cfg.limit < 1:
        raise EvalError(f"--limit {cfg.limit} asks for no question — pass a positive number or leave it out")
    check_out_dir(cfg.out)
    for extra in cfg.extra_corpus:
        if not extra.is_file():
            raise EvalError(f"extra corpus {extra} does not exist — pass a SQuAD v2 .json, .jsonl, .txt or .md file")
    questions = load_questions(cfg.data, None, cfg.seed)
    if cfg.skip_calibration_split:
        questions = [q for q in questions if not in_calibration_split(q.id)]
    questions = questions[: cfg.limit] if cfg.limit else questions
    if not questions:
        raise EvalError(f"{cfg.data}: no question left outside the calibration split — drop --skip-calibration-split")
    return questions


def check_out_dir(out: Path) -> None:
    """:raises EvalError: the folder cannot be created or written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise EvalError(f"cannot write the report to {out}: {exc.strerror or exc} — pass a writable --out folder") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(cfg: EvalConfig, settings: Settings, cloud: str) -> dict[str, Any]:
    """What the records of an output folder depend on; a rerun must match it to resume."""
    return {
        "data_sha256": _sha256(cfg.data),
        "extra_sha256": [_sha256(p) for p in cfg.extra_corpus],
        "oracle_context": cfg.oracle_context,
        "network": cfg.network,
        "top_k": settings.top_k,
        "embedder_model": settings.embedder_model,
        "hybrid": settings.hybrid,
        "slm_model_path": settings.slm_model_path,
        "cloud_model_path": settings.cloud_model_path,
        "passage_chars": settings.passage_chars,
        "max_tokens": [settings.slm_max_tokens, settings.cloud_max_tokens],
        "slm_reading": [settings.slm_reading, settings.kv_type],
        "prompts_sha256": prompts_fingerprint(),
        "cloud": cloud,
        "pii": settings.pii,  # what the cloud read: the passages as they are, or redacted
    }


def check_resumable(out: Path, fp: dict[str, Any]) -> None:
    """:raises EvalError: ``out`` holds records of a run with other data or settings."""
    run_file = out / "run.json"
    if run_file.exists():
        try:
            old = json.loads(run_file.read_text())
        except json.JSONDecodeError:
            old = None
        if old != fp:
            diff = sorted(k for k in fp if not isinstance(old, dict) or old.get(k) != fp[k])
            raise EvalError(f"{out} holds an evaluation of other data or settings ({', '.join(diff) or 'unreadable run.json'}) "
                            "— pass another --out folder, or delete that one to start over")
    run_file.write_text(json.dumps(fp, indent=1))


def collection_name(fp: dict[str, Any], settings: Settings) -> str:
    """A collection keyed by the content of the indexed files (their hashes in the run's fingerprint
    ``fp``) and the embedder: reused while they are unchanged."""
    h = hashlib.sha256()
    for digest in (fp["data_sha256"], *fp["extra_sha256"]):
        h.update(digest.encode())
    h.update(f"{settings.embedder_model}|{settings.embed_titles}|{settings.hybrid}".encode())
    return f"eval-{h.hexdigest()[:12]}"


def ensure_index(cfg: EvalConfig, settings: Settings, store: IndexStore, fp: dict[str, Any],
                 progress: Progress | None) -> str:
    """Index the data's paragraphs (and the extra corpus) unless that collection already exists."""
    name = collection_name(fp, settings)
    if store.exists(name):
        return name
    index_files(settings, store, [cfg.data, *cfg.extra_corpus], collection=name,
                progress=(lambda d, t: progress("indexing", d, t)) if progress else None)
    return name


@contextlib.contextmanager
def cloud_for(cfg: EvalConfig, settings: Settings, given: CloudClient | None) -> Iterator[tuple[CloudClient, str, int | None]]:
    """The cloud client of the run: the caller's, the configured gateway (through the emulated
    link), or an embedded gateway started for the run. Yields (client, what it is, gateway pid)."""

    if given is not None:
        yield given, "given", None
        return
    if settings.cloud_url:
        with contextlib.closing(open_cloud_link(settings.model_copy(update={"network": cfg.network}))) as link:
            yield link.client, settings.cloud_url, None
        return

    with embedded_stack(default_data_dir(), network=cfg.network) as stack:  # the stack emulates the link itself
        s = settings.model_copy(update={"cloud_url": stack.cloud_url, "cloud_dir": stack.cloud_dir, "network": None})
        with contextlib.closing(open_cloud_link(s)) as link:
            yield link.client, "embedded", stack.pid


def route_all(records: Sequence[dict[str, Any]], policies: Sequence[str], settings: Settings, cal: Calibration,
              network: str | None) -> dict[str, list[Routed]]:
    """Each policy's routes over the records, with a fresh answer cache and latency model per policy."""
    values = cached_values(records, cal)
    return {name: route_records(records, cal.policy(name), cal, settings.budget_ms, latency_model_for(network),
                                answer_cache_from(settings), values)
            for name in policies}


def cached_values(records: Sequence[dict[str, Any]], cal: Calibration) -> Values:
    """Each record's edge values, computed once for every policy and threshold of a report."""
    by_id = {r["id"]: cal.edge_values(record_edge_signals(r)) for r in records}
    return lambda r: by_id[r["id"]]


def sweep(records: Sequence[dict[str, Any]], questions: Sequence[Question], settings: Settings, cal: Calibration,
          network: str | None) -> list[dict[str, float]]:
    """The cascade at escalation thresholds from :func:`sweep_thresholds`: the edge↔cloud trade-off from
    "the cloud reads all" (0) to "the edge decides all" (above 1), F1 against latency and cloud calls. The
    edge answers or abstains by its calibrated threshold wherever it keeps a question."""

    values = cached_values(records, cal)
    shares = [Signals(v[0].answer, v[0].abstain, v[1], 0.0, 0.0).escalate_score for v in map(values, records)]
    rows = []
    for t in sweep_thresholds(shares):
        routed = route_records(records, cal.policy("cascade", threshold=t), cal, settings.budget_ms,
                               latency_model_for(network), values=values)
        m = accuracy(questions, {r.id: r.answer for r in routed})
        rows.append({"threshold": t, "f1": m["f1"], "latency_mean_ms": sum(r.latency_ms for r in routed) / len(routed),
                     "cloud_call_rate": sum(r.cloud_called for r in routed) / len(routed)})
    return rows


def run_eval(cfg: EvalConfig, settings: Settings, progress: Progress | None = None, store: IndexStore | None = None,
             cloud: CloudClient | None = None, edge: EdgeQA | None = None) -> dict[str, Any]:
    """Run (or resume) an evaluation and write its report; return report.json's content.

    :param store: an open store to index into (the UI passes its own); else one is opened from the settings.
    :param cloud: a cloud client to use (the UI passes its own); else the configured gateway, else an
        embedded one started for the run.
    :param edge: edge models already loaded (the UI's), reused over the evaluation's collection of ``store``.
    :raises EvalError and the other user errors: bad data, policy, profile or output folder.
    """
    questions = check_config(cfg)
    needs_cloud = any(policy_class(p).uses_cloud for p in cfg.policies)
    cloud_what = "given" if cloud is not None else (settings.cloud_url or "embedded")
    fp = fingerprint(cfg, settings, cloud_what)
    check_resumable(cfg.out, fp)
    records_path = cfg.out / "records.jsonl"
    with contextlib.ExitStack() as stack:
        if store is None and not cfg.oracle_context:

            store = stack.enter_context(open_store(settings))
        collection = ensure_index(cfg, settings, store, fp, progress) if store is not None and not cfg.oracle_context else ""
        s = settings.model_copy(update={"collection": collection or settings.collection})
        if cfg.live:
            done = {n: read_records(live_path(cfg.out, n)) for n in cfg.policies}
            todo = [q for q in questions if any(q.id not in done[n] for n in cfg.policies)]
        else:
            done = read_records(records_path)
            todo = [q for q in questions if q.id not in done
                    or (needs_cloud and ("cloud" not in done[q.id] or failed(done[q.id])))]
        if todo:
            if edge is not None:
                edge_qa = edge.for_collection(s.collection)
            else:
                edge_qa = EdgeQA(s, store if store is not None else DocumentStore())
            client, cloud_pid = None, None
            if needs_cloud:
                client, _, cloud_pid = stack.enter_context(cloud_for(cfg, s, cloud))
            pids = {"edge": os.getpid(), **({"cloud": cloud_pid} if cloud_pid else {})}
            with ResourceSampler(pids, cfg.out / "resources.jsonl"):
                if cfg.live:
                    run_live(cfg, s, questions, edge_qa, client, progress)
                    return write_report(cfg, s, questions)
                first = len(questions) - len(todo)
                run_records(todo, edge_qa, client, records_path, cloud_timeout_s=settings.cloud_read_timeout_s,
                            progress=(lambda d, t: progress("answering", first + d, len(questions))) if progress else None,
                            oracle_context=cfg.oracle_context)
        elif progress:
            progress("answering", len(questions), len(questions))
    return write_report(cfg, s, questions)


def live_path(out: Path, policy: str) -> Path:
    return out / f"live-{policy}.jsonl"


def run_live(cfg: EvalConfig, settings: Settings, questions: Sequence[Question], edge: EdgeQA,
             client: CloudClient | None, progress: Progress | None) -> None:
    """Every question through :meth:`Cascade.answer` once per policy, each policy with its own cache,
    latency model and breaker; a row is appended to DIR/live-<policy>.jsonl as soon as it is answered."""
    total, count = len(questions) * len(cfg.policies), 0
    linked = settings.model_copy(update={"network": cfg.network})  # the latency model's priors
    for name in cfg.policies:
        path = live_path(cfg.out, name)
        done = read_records(path)
        count += sum(1 for q in questions if q.id in done)
        cascade = build_cascade(linked, edge.store, edge=edge, cloud=client)
        with path.open("a") as fh:
            for q in questions:
                if q.id in done:
                    continue
                fh.write(json.dumps(live_row(q, cascade.answer(q.question, policy=name))) + "\n")
                fh.flush()
                count += 1
                if progress:
                    progress("answering", count, total)


def live_row(q: Question, r: Any) -> dict[str, Any]:
    """One live answer (an AskResult) as a routed row, with stages that add up to its total time."""
    t, d = r.timings_ms, r.decision or {}
    route = d.get("route", r.tier)
    stages = split_stages(t, route)
    ids = [p.get("id") for p in r.passages]
    gold = document_id(q.title, q.context)
    return {"id": q.id, "route": route, "answer": r.answer, "f1": score_question(q, r.answer)["f1"],
            "latency_ms": t["total"], "cloud_called": route == "cloud" or bool(d.get("degraded")),
            "stages": stages, "cloud_tokens": {"prompt": r.usage.get("cloud_prompt_tokens", 0),
                                               "completion": r.usage.get("cloud_completion_tokens", 0)},
            "degraded": bool(d.get("degraded")), "gold_rank": ids.index(gold) + 1 if gold in ids else None,
            "has_answer": q.has_answer}


def _live_routes(cfg: EvalConfig, questions: Sequence[Question]) -> tuple[dict[str, list[Routed]], list[dict[str, Any]]]:
    fields = Routed.__dataclass_fields__
    routed: dict[str, list[Routed]] = {}
    rows_by_policy = {n: read_records(live_path(cfg.out, n)) for n in cfg.policies}
    for name, rows in rows_by_policy.items():
        routed[name] = [Routed(**{k: v for k, v in rows[q.id].items() if k in fields}) for q in questions]
    first = rows_by_policy[cfg.policies[0]]
    return routed, [first[q.id] for q in questions]  # gold ranks: retrieval is the same for every policy


def write_report(cfg: EvalConfig, settings: Settings, questions: list[Question]) -> dict[str, Any]:
    """Route (or read the live answers), score and write every output file."""
    cal = Calibration.load(settings.calibration_path)
    if cfg.live:
        routed, records = _live_routes(cfg, questions)
    else:
        records_by_id = read_records(cfg.out / "records.jsonl")
        records = []
        for q in questions:
            r = dict(records_by_id[q.id])
            r.setdefault("cloud", {"error": "not run: no policy escalates", "total_ms": 0.0})
            records.append(r)
        routed = route_all(records, cfg.policies, settings, cal, cfg.network)
    for name, rows in routed.items():
        write_predictions(cfg.out, name, rows)
    policies = {name: policy_metrics(questions, rows, settings.cloud_price_prompt_per_1k,
                                     settings.cloud_price_completion_per_1k) for name, rows in routed.items()}
    cloud_mean = policies.get("cloud", {}).get("latency_ms", {}).get("mean")
    for name, m in policies.items():
        m["latency_reduction_vs_cloud_pct"] = (100 * (1 - m["latency_ms"]["mean"] / cloud_mean)
                                               if cloud_mean and name != "cloud" else None)
    samples = read_samples(cfg.out / "resources.jsonl")
    has = sum(q.has_answer for q in questions)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "n": len(questions),
        "data": {"path": str(cfg.data), "has_ans": has, "no_ans": len(questions) - has,
                 "extra_corpus": [str(p) for p in cfg.extra_corpus]},
        "config": {"policies": list(cfg.policies), "network": cfg.network, "oracle_context": cfg.oracle_context,
                   "limit": cfg.limit, "seed": cfg.seed, "skip_calibration_split": cfg.skip_calibration_split,
                   "top_k": settings.top_k, "budget_ms": settings.budget_ms, "collection": settings.collection,
                   "mode": "live" if cfg.live else "shared"},
        "baseline_no_answer": {**accuracy(questions, {}), "f1_ci95": f1_interval([float(not q.has_answer) for q in questions])},
        "policies": policies,
        "retrieval": {"recall_at": {} if cfg.oracle_context else retrieval_recall(records, settings.top_k)},
        "cloud_errors": (max(sum(r.degraded for r in rows) for rows in routed.values()) if cfg.live else
                         sum(1 for r in records if "error" in r["cloud"] and r["cloud"]["error"] != "not run: no policy escalates")),
        "prices_per_1k": {"prompt": settings.cloud_price_prompt_per_1k, "completion": settings.cloud_price_completion_per_1k},
        "resources": summarize_samples(samples, ["edge", "cloud"]),
        "sweep": (sweep(records, questions, settings, cal, cfg.network)
                  if cfg.sweep and not cfg.live and any(policy_class(p).uses_cloud for p in cfg.policies) else []),
        "files": {"predictions": {n: f"predictions-{n}.json" for n in routed},
                  "records": [live_path(cfg.out, n).name for n in routed] if cfg.live else "records.jsonl"},
    }

    report["files"]["plots"] = write_plots(report, samples, cfg.out)
    (cfg.out / "report.json").write_text(json.dumps(report, indent=1))
    (cfg.out / "report.md").write_text(markdown(report))
    return report
