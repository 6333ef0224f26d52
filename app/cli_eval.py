"""`ecqa eval` (every policy on a SQuAD v2 file, report and plots) and `ecqa score` (the official metric)."""

from __future__ import annotations

# Imports inside functions: a command loads only what it runs, so `ecqa --help` and a bad flag's one-line
# error do not wait seconds for haystack, torch and llama.cpp (the UI builds its tabs the same way).

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.console import emit_json, err, fail, out, progress_bar, stop_on_ctrl_c, user_errors
from app.options import AsJson


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("score")(score_command)


def _paths(value: list[Path] | None) -> tuple[Path, ...]:
    return tuple(value or ())


@user_errors
def eval_command(
    data: Annotated[Path, typer.Option("--data", help="A SQuAD v2 file: its paragraphs are indexed, its questions asked.")],
    limit: Annotated[int | None, typer.Option("--limit", help="The first N questions (after --seed shuffles them).")] = None,
    policies: Annotated[str | None, typer.Option("--policies", help="Comma-separated policies (default: all).")] = None,
    network: Annotated[str | None, typer.Option("--network", help="Link profile edge→cloud: lan, 5g, wifi, congested.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default: <eval_dir setting>/<data name>).")] = None,
    extra_corpus: Annotated[list[Path] | None, typer.Option("--extra-corpus", help="More files to index (repeatable).")] = None,
    oracle_context: Annotated[bool, typer.Option("--oracle-context", help="Answer from the gold paragraph; no retrieval.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Shuffle the questions with this seed before --limit.")] = None,
    skip_calibration_split: Annotated[bool, typer.Option(
        "--skip-calibration-split", help="Leave out the questions the packaged routing models were fitted on.")] = False,
    budget_ms: Annotated[float | None, typer.Option("--budget-ms", help="Latency budget Tmax (ms).")] = None,
    cloud_url: Annotated[str | None, typer.Option("--cloud-url", help="Gateway URL; default: an embedded one for the run.")] = None,
    cloud_dir: Annotated[Path | None, typer.Option("--cloud-dir", help="`ecqa cloud init` folder for --cloud-url.")] = None,
    qdrant_path: Annotated[Path | None, typer.Option("--qdrant-path", help="Embedded Qdrant folder for the eval index.")] = None,
    no_sweep: Annotated[bool, typer.Option("--no-sweep", help="Skip the cascade threshold sweep.")] = False,
    live: Annotated[bool, typer.Option("--live", help="Answer each question once per policy through the cascade itself "
                                                      "(policies × slower; no sweep).")] = False,
    as_json: AsJson = False,
) -> None:
    """Evaluate policies on a SQuAD v2 file: official EM/F1, precision/recall, latency, cost; resumable."""

    from eval.harness import EvalConfig, check_config, run_eval
    from pipelines.answer import POLICIES
    from pipelines.settings import load_settings

    stop_on_ctrl_c()
    names = tuple(p.strip() for p in policies.split(",") if p.strip()) if policies is not None else POLICIES
    settings = load_settings(budget_ms=budget_ms, cloud_url=cloud_url, cloud_dir=cloud_dir, qdrant_path=qdrant_path)
    cfg = EvalConfig(data=data, out=out_dir or settings.eval_dir / data.stem, limit=limit, seed=seed, policies=names,
                     network=network, extra_corpus=_paths(extra_corpus), oracle_context=oracle_context,
                     skip_calibration_split=skip_calibration_split, sweep=not no_sweep, live=live)
    questions = check_config(cfg)  # every bad input fails here, before any model loads
    try:
        with progress_bar("[bold]{task.description}", as_json=as_json) as bar:
            tasks: dict[str, Any] = {}
            started: dict[str, tuple[float, int]] = {}

            def progress(step: str, done: int, total: int) -> None:
                if not tasks:
                    err.print(f"evaluating {escape(', '.join(names))} on {len(questions)} questions of "
                              f"{escape(str(data))} → {escape(str(cfg.out))}",
                              highlight=False)
                if step not in tasks:
                    tasks[step] = bar.add_task(step, total=total)
                    started[step] = (time.monotonic(), done)
                bar.update(tasks[step], completed=done, total=total)
                if not err.is_terminal and not as_json and (done == total or done % max(total // 20, 1) == 0):
                    # A log file gets a line every 5% (a live bar needs a terminal).
                    t0, d0 = started[step]
                    rate = (done - d0) / max(time.monotonic() - t0, 1e-9)
                    eta = f"ETA {(total - done) / rate / 60:.1f} min" if rate > 0 and done < total else "done"
                    err.print(f"{step} {done}/{total} · {eta}", highlight=False)

            report = run_eval(cfg, settings, progress=progress)
    except KeyboardInterrupt:
        fail(f"interrupted — finished questions are kept in {cfg.out / 'records.jsonl'}; rerun the same command to "
             "resume", 130)
    if as_json:
        emit_json(report)
        return
    print_report(report, cfg.out)


def print_report(report: dict[str, Any], folder: Path, console: Console = out) -> None:
    """The paper's two tables, narrow enough for an 80-column terminal (on ``console``, stdout's by default)."""
    from rich import box

    pol, base = report["policies"], report["baseline_no_answer"]
    cfg = report["config"]
    cloud_mean = pol.get("cloud", {}).get("latency_ms", {}).get("mean")

    def table(title: str, cols: tuple[str, ...]) -> Table:
        t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True,
                  title_justify="left")
        for col in cols:
            t.add_column(col, justify="left" if col == "configuration" else "right", no_wrap=True)
        return t

    t1 = table(f"Table 1 — latency per question (ms) · {report['n']} questions · link {cfg['network'] or 'direct'}",
               ("configuration", "mean", "p50", "p95", "p99", "vs cloud-only"))
    for name, m in pol.items():
        lat = m["latency_ms"]
        red = "—"
        if cloud_mean and name != "cloud":
            x = 100 * (1 - lat["mean"] / cloud_mean)
            red = f"{x:.0f}% faster" if x >= 0 else f"{-x:.0f}% slower"
        t1.add_row(name, *(f"{lat[k]:.0f}" for k in ("mean", "p50", "p95", "p99")), red)
    t2 = table("Table 2 — official SQuAD v2 metric (0–100)",
               ("configuration", "P", "R", "F1", "EM", "HasAns", "NoAns", "cloud", "abstain"))
    t2.add_row("always no-answer", *(f"{base[k]:.1f}" for k in ("precision", "recall", "f1", "exact", "has_ans_f1",
                                                                 "no_ans_accuracy")), "0%", "100%")
    for name, m in pol.items():
        t2.add_row(name, *(f"{m[k]:.1f}" for k in ("precision", "recall", "f1", "exact", "has_ans_f1", "no_ans_accuracy")),
                   f"{100 * m['cloud_call_rate']:.0f}%", f"{100 * m['abstain_rate']:.0f}%")
    console.print(t1)
    console.print(t2)
    console.print(f"report: {escape(str(folder / 'report.md'))} (+ report.json, predictions-<policy>.json, "
              f"{len(report['files'].get('plots', []))} plots)", highlight=False, soft_wrap=True)


@user_errors
def score_command(
    predictions: Annotated[Path, typer.Argument(help="Predictions in the official format {question_id: answer_text}.")],
    data: Annotated[Path, typer.Option("--data", help="The SQuAD v2 file the predictions answer.")],
    as_json: AsJson = False,
) -> None:
    """Score a predictions file with the official SQuAD v2 metric (missing questions count as no-answer)."""
    from eval.data import load_questions
    from eval.errors import EvalError
    from eval.report import accuracy

    questions = load_questions(data)
    try:
        preds = json.loads(predictions.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"cannot read {predictions}: {getattr(exc, 'strerror', None) or exc} — pass a predictions "
                        "JSON file") from None
    except json.JSONDecodeError as exc:
        raise EvalError(f"{predictions} is not JSON ({exc.msg}, line {exc.lineno}) — pass "
                        "{\"question_id\": \"answer text\", …}") from None
    if not isinstance(preds, dict) or not all(isinstance(v, str) for v in preds.values()):
        raise EvalError(f"{predictions} is not in the official prediction format — pass {{\"question_id\": \"answer "
                        "text\", …}} (\"\" for no answer)")
    m = accuracy(questions, preds)
    known = {q.id for q in questions}
    m.update({"n": len(questions), "predicted": sum(1 for k in preds if k in known),
              "unknown_ids": sum(1 for k in preds if k not in known)})
    if as_json:
        emit_json(m)
        return
    out.print(f"exact {m['exact']:.2f} · f1 {m['f1']:.2f} · precision {m['precision']:.2f} · recall {m['recall']:.2f} · "
              f"HasAns f1 {m['has_ans_f1']:.2f} · NoAns acc {m['no_ans_accuracy']:.2f} "
              f"({m['predicted']}/{m['n']} questions predicted, {m['unknown_ids']} unknown ids)", highlight=False)
