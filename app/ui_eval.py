"""The UI's Evaluation tab: run a small `ecqa eval` in the UI process, then show its tables and plots.

It uses only ``service.settings``, ``service.store`` and ``service.cascade`` of the UI's service
object, and runs in the same queue slot as the other model calls (``concurrency_id="models"``):
llama.cpp models are not safe to call from two threads.
"""

from __future__ import annotations

# Imports inside functions: a command loads only what it runs, so `ecqa --help` and a bad flag's one-line
# error do not wait seconds for haystack, torch and llama.cpp (the UI builds its tabs the same way).

import re
from pathlib import Path
from typing import Any

import gradio as gr

from eval.report import load_report
from pipelines.answer import POLICIES

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "squad-v2-dev-a.json"
MAX_UI_QUESTIONS = 200  # beyond this, use `ecqa eval` (minutes of CPU per 100 questions)


def _report_markdown(report: dict[str, Any] | None, folder: Path) -> str:
    if report is None:
        return f"No saved report in `{folder}` yet — run an evaluation above."
    text = (folder / "report.md").read_text() if (folder / "report.md").exists() else ""
    return re.sub(r"\n## Plots\n.*?(?=\n## |\nHow it was measured|\Z)", "\n", text, flags=re.S)  # plots shown below


def _plots(report: dict[str, Any] | None, folder: Path) -> list[str]:
    if report is None:
        return []
    return [str(folder / p) for p in report.get("files", {}).get("plots", []) if (folder / p).exists()]


def reports_dir(service: Any) -> Path:
    """Where the tab keeps its runs (one folder per data file and link) and the latest report."""
    return Path(service.settings.eval_dir) / "ui"


def build_eval_tab(service: Any) -> None:
    """The tab's components and events, created inside the caller's ``gr.Tab``."""
    def latest_tables() -> str:
        folder = reports_dir(service)
        return _report_markdown(load_report(folder), folder)

    def latest_plots() -> list[str]:
        folder = reports_dir(service)
        return _plots(load_report(folder), folder)

    gr.Markdown("Run every chosen policy on the same SQuAD v2 questions: official EM/F1, precision/recall, "
                "latency per stage and cloud calls, next to the always-no-answer baseline. Larger runs: "
                "`ecqa eval --data FILE` (resumable).")
    with gr.Row():
        data = gr.Textbox(value=str(BUNDLED), label="SQuAD v2 file (path on the server)", elem_id="eval-data", scale=3)
        n = gr.Number(value=10, minimum=1, maximum=MAX_UI_QUESTIONS, precision=0, label="questions",
                      elem_id="eval-n", scale=1)
    with gr.Row():
        policies = gr.CheckboxGroup(list(POLICIES), value=["edge", "cloud", "cascade"], label="policies "
                                    "(the cloud is reached over the Ask tab's link profile)", elem_id="eval-policies")
    run = gr.Button("Run evaluation", variant="primary", elem_id="eval-run")
    status = gr.Markdown("", elem_id="eval-status")
    tables = gr.Markdown(latest_tables, elem_id="eval-report")  # a callable: evaluated on every page load
    gallery = gr.Gallery(latest_plots, label="plots", columns=2, height="auto", object_fit="contain",
                         elem_id="eval-plots")

    def run_eval_ui(path: str, count: float | None, chosen: list[str],
                    progress: gr.Progress = gr.Progress()) -> tuple[str, str, list[str]]:
        from eval.harness import EvalConfig, run_eval
        from pipelines.errors import USER_ERRORS

        if not chosen:
            return "⚠️ choose at least one policy", gr.skip(), gr.skip()
        if count is None or not 1 <= int(count) <= MAX_UI_QUESTIONS:
            return f"⚠️ choose between 1 and {MAX_UI_QUESTIONS} questions", gr.skip(), gr.skip()
        folder = reports_dir(service)
        profile = service.settings.network  # the link the UI's cloud client goes through now
        cfg = EvalConfig(data=Path(path.strip()), out=folder / f"{Path(path.strip()).stem}-{profile or 'direct'}",
                         limit=int(count), policies=tuple(chosen), network=profile)
        cloud = getattr(service.cascade, "cloud", None)
        if cloud is None and any(p != "edge" for p in chosen):
            return ("⚠️ no cloud is configured in this UI — choose only the edge policy, or start the UI with "
                    "`make run` / `--cloud-url`"), gr.skip(), gr.skip()

        def step(name: str, done: int, total: int) -> None:
            progress((done, total), desc=name, unit="questions" if name == "answering" else "passages")

        try:
            with service.lock:  # the Ask tab's models and store: one caller at a time
                report = run_eval(cfg, service.settings, progress=step, store=service.store, cloud=cloud,
                                  edge=service.cascade.edge)  # the models the Ask tab already loaded
        except USER_ERRORS as exc:
            return f"⚠️ {exc}", gr.skip(), gr.skip()
        # The newest report is what the tab shows on open.
        _link_latest(cfg.out, folder)
        return (f"✅ {report['n']} questions evaluated — report in `{cfg.out}`",
                _report_markdown(report, cfg.out), _plots(report, cfg.out))

    run.click(run_eval_ui, [data, n, policies], [status, tables, gallery],
              concurrency_id=service.models_queue, concurrency_limit=1)


def _link_latest(run_dir: Path, folder: Path) -> None:
    """Copy the newest run's report files to ``folder`` so that the tab opens on them."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for f in run_dir.iterdir():
        if f.suffix in (".json", ".md", ".png") and not f.name.startswith(("predictions-", "run.")):
            shutil.copy2(f, folder / f.name)
