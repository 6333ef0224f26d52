"""The UI's Evaluation tab: run a small `ecqa eval` in the UI process, then show its tables and plots.

It uses only ``service.settings``, ``service.store`` and ``service.cascade`` of the UI's service
object, and runs in the same queue slot as the other model calls (``concurrency_id="models"``):
llama.cpp models are not safe to call from two threads.
"""

from __future__ import annotations

# Imports inside functions: a command loads only what it runs, so `ecqa --help` and a bad flag's one-line
# error do not wait seconds for haystack, torch and llama.cpp (the UI builds its tabs the same way).

import math
import re
import shutil
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


def uploads_dir(service: Any) -> Path:
    """Where files uploaded in the tab are kept: with the bundled data folder, the only places it reads."""
    return Path(service.settings.eval_dir) / "uploads"


class EvalFileError(ValueError):
    """A path the tab will not read; one message whatever the reason, so that it says nothing about the
    server's other files (whether they exist, or can be read)."""


def eval_file(service: Any, path: Any) -> Path:
    """The SQuAD v2 file a request names, if it is a regular file in the bundled data folder or the
    uploads folder.

    :raises EvalFileError: anything else — outside those folders, missing, not a file, not text.
    """
    roots = [BUNDLED.parent.resolve(), uploads_dir(service).resolve()]
    message = (f"cannot use this file — choose a SQuAD v2 .json file from {BUNDLED.parent} or upload one with "
               "the button")
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise EvalFileError(message)
    try:
        resolved = Path(path.strip()).expanduser().resolve()
        inside = any(resolved.is_relative_to(r) for r in roots)
        if not inside or not resolved.is_file():
            raise EvalFileError(message)
    except (OSError, RuntimeError, ValueError):
        raise EvalFileError(message) from None
    return resolved


def question_count(count: Any) -> int:
    """The number of questions a request asks for: a whole number from 1 to MAX_UI_QUESTIONS, not rounded.

    :raises EvalFileError: anything else (1.5, "10", True, NaN).
    """
    whole = isinstance(count, (int, float)) and not isinstance(count, bool) and math.isfinite(count) \
        and float(count).is_integer()
    if not whole or not 1 <= count <= MAX_UI_QUESTIONS:
        raise EvalFileError(f"choose a whole number of questions from 1 to {MAX_UI_QUESTIONS}")
    return int(count)


def keep_upload(service: Any, uploaded: Any) -> str:
    """Copy an uploaded file into the uploads folder; its path there (what the data box then shows)."""
    src = Path(uploaded if isinstance(uploaded, str) else getattr(uploaded, "name", ""))
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", src.name)[-100:].lstrip(".") or "upload.json"
    folder = uploads_dir(service)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, folder / name)
    return str(folder / name)


def run_eval_request(service: Any, path: Any, count: Any, chosen: Any, progress: Any = None) -> tuple[str, Any, Any]:
    """One "Run evaluation" click: (status, tables, plots), or a message and ``None`` twice when refused.
    A refused run leaves nothing behind."""
    from eval.harness import EvalConfig, run_eval
    from pipelines.errors import USER_ERRORS

    if not isinstance(chosen, list) or not chosen or not all(isinstance(p, str) and p in POLICIES for p in chosen):
        return "⚠️ choose at least one policy", None, None
    try:
        n = question_count(count)
        data = eval_file(service, path)
    except EvalFileError as exc:
        return f"⚠️ {exc}", None, None
    cloud = getattr(service.cascade, "cloud", None)
    if cloud is None and any(p != "edge" for p in chosen):
        return ("⚠️ no cloud is configured in this UI — choose only the edge policy, or start the UI with "
                "`make run` / `--cloud-url`"), None, None
    folder = reports_dir(service)
    profile = service.settings.network  # the link the UI's cloud client goes through now
    cfg = EvalConfig(data=data, out=folder / f"{data.stem}-{profile or 'direct'}", limit=n, policies=tuple(chosen),
                     network=profile)
    existed = cfg.out.exists()
    try:
        with service.lock:  # the Ask tab's models and store: one caller at a time
            report = run_eval(cfg, service.settings, progress=progress, store=service.store, cloud=cloud,
                              edge=service.cascade.edge)  # the models the Ask tab already loaded
    except USER_ERRORS as exc:
        if not existed:  # made by this refused run alone
            shutil.rmtree(cfg.out, ignore_errors=True)
        return f"⚠️ {exc}", None, None
    # The newest report is what the tab shows on open.
    _link_latest(cfg.out, folder)
    return (f"✅ {report['n']} questions evaluated — report in `{cfg.out}`",
            _report_markdown(report, cfg.out), _plots(report, cfg.out))


def build_eval_tab(service: Any) -> None:
    """The tab's components and events, created inside the caller's ``gr.Tab``."""
    from app.ui import strict_text

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
        data = strict_text(gr.Textbox(value=str(BUNDLED), label=f"SQuAD v2 file (in {BUNDLED.parent}, or uploaded)",
                                      elem_id="eval-data", scale=3))
        upload = gr.UploadButton("Upload a SQuAD v2 file", file_types=[".json"], elem_id="eval-upload", scale=1)
        n = gr.Number(value=10, minimum=1, maximum=MAX_UI_QUESTIONS, label="questions", elem_id="eval-n", scale=1)
    with gr.Row():
        policies = gr.CheckboxGroup(list(POLICIES), value=["edge", "cloud", "cascade"], label="policies "
                                    "(the cloud is reached over the Ask tab's link profile)", elem_id="eval-policies")
    run = gr.Button("Run evaluation", variant="primary", elem_id="eval-run")
    status = gr.Markdown("", elem_id="eval-status")
    tables = gr.Markdown(latest_tables, elem_id="eval-report")  # a callable: evaluated on every page load
    gallery = gr.Gallery(latest_plots, label="plots", columns=2, height="auto", object_fit="contain",
                         elem_id="eval-plots")

    def run_eval_ui(path: Any, count: Any, chosen: Any,
                    progress: gr.Progress = gr.Progress()) -> tuple[str, Any, Any]:
        def step(name: str, done: int, total: int) -> None:
            progress((done, total), desc=name, unit="questions" if name == "answering" else "passages")

        status_text, tables_md, plots = run_eval_request(service, path, count, chosen, step)
        return status_text, (gr.skip() if tables_md is None else tables_md), (gr.skip() if plots is None else plots)

    def upload_ui(uploaded: Any) -> str:
        return keep_upload(service, uploaded)

    upload.upload(upload_ui, upload, data, queue=False)
    run.click(run_eval_ui, [data, n, policies], [status, tables, gallery],
              concurrency_id=service.models_queue, concurrency_limit=1)


def _link_latest(run_dir: Path, folder: Path) -> None:
    """Copy the newest run's report files to ``folder`` so that the tab opens on them."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for f in run_dir.iterdir():
        if f.suffix in (".json", ".md", ".png") and not f.name.startswith(("predictions-", "run.")):
            shutil.copy2(f, folder / f.name)
