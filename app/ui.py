"""The Gradio web UI: Ask (answer, provenance, latency per stage), Index and Evaluation tabs.

Every browser session shares one :class:`~app.ui_service.UiService` (the models are loaded once);
events that touch a model or the store run one at a time in the queue slot
:data:`~app.ui_service.MODELS_QUEUE`, and the queue holds at most ``max_queue`` waiting events.
"""

from __future__ import annotations

# Imports inside functions: a command loads only what it runs, so `ecqa --help` and a bad flag's one-line
# error do not wait seconds for haystack, torch and llama.cpp (the UI builds its tabs the same way).
import logging
import os
import time
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

# Before gradio is imported: no telemetry or version check (the UI must work offline).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr

from app import ui_render as render
from app.ui_service import DIRECT, MODELS_QUEUE, UiService, bundled_corpus
from pipelines.errors import USER_ERRORS, PipelineError

logger = logging.getLogger(__name__)

DEFAULT_PORT = 7860
# Waiting events beyond this are refused with "queue full" instead of piling up: at ~1-3 s a
# question on 2 cores, 16 waiting is a minute at most.
MAX_QUEUE = 16
# System fonts only: the page must render without reaching a font CDN.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def strict_text(box: gr.Textbox) -> gr.Textbox:
    """A text box whose value must arrive as text: Gradio turns whatever the API sends into a string (a
    question of 123 became "123"); this one refuses anything else with a message."""
    plain = box.preprocess

    def preprocess(payload: Any) -> str | None:
        if payload is not None and not isinstance(payload, str):
            raise gr.Error(f"{box.label or 'this field'} must be text, not {type(payload).__name__} — send a string")
        return plain(payload)

    box.preprocess = preprocess  # type: ignore[method-assign]
    return box


def build_ui(service: UiService, max_queue: int = MAX_QUEUE) -> gr.Blocks:
    """The Blocks app over ``service`` (not launched); at most ``max_queue`` events wait in its queue."""
    from app.ui_eval import build_eval_tab
    from pipelines import PROFILES

    collection = service.settings.collection
    with gr.Blocks(title="edgecloud-qa", analytics_enabled=False) as demo:
        gr.Markdown(f"## edgecloud-qa\nQuestions over **{collection}**, answered on the edge first; "
                    "the cloud when the policy says so.", elem_id="title")
        with gr.Tab("Ask", id="ask"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    with gr.Row():
                        question = strict_text(gr.Textbox(label="Question", placeholder="Ask about the collection "
                                                          "and press Enter", max_lines=1, scale=5, elem_id="question",
                                                          autofocus=True))
                        ask = gr.Button("Ask", variant="primary", scale=1, min_width=90, elem_id="ask")
                    card = gr.HTML(elem_id="answer-card")
                    gr.Markdown("#### Latency breakdown")
                    chart = gr.HTML('<div class="ecqa-muted">ask a question</div>', elem_id="latency-chart")
                    gr.Markdown("#### Provenance: retrieved passages")
                    passages = gr.HTML(elem_id="passages")
                    gr.Markdown("#### Sent to the cloud")
                    sent = gr.HTML(elem_id="sent")
                with gr.Column(scale=1, min_width=260):
                    policy = gr.Dropdown(service.policies(), value=service.default_policy(), label="policy",
                                         elem_id="policy")
                    th = service.threshold(service.default_policy())
                    threshold = gr.Slider(0.0, 1.0, value=th if th is not None else 0.5, step=0.01,
                                          interactive=th is not None, label="escalation threshold",
                                          info="calibrated value; cascade, latency and learned only",
                                          elem_id="threshold")
                    budget = gr.Slider(100, max(30000, service.settings.budget_ms), value=service.settings.budget_ms,
                                       step=100, label="Tmax: latency budget (ms)", elem_id="budget")
                    top_k = gr.Slider(1, max(10, service.settings.top_k), value=service.settings.top_k, step=1,
                                      label="top-k passages", elem_id="top-k")
                    cache = gr.Checkbox(value=service.cascade.cache is not None, label="answer cache",
                                        info="serve repeated and near-duplicate questions (same policy, threshold, Tmax)",
                                        interactive=service.cascade.cache is not None, elem_id="use-cache")
                    network = gr.Dropdown([DIRECT, *PROFILES], value=service.network, label="network profile",
                                          info="emulated edge→cloud link, shared by all sessions",
                                          interactive=service.has_cloud, elem_id="network")
                    link = gr.HTML(f'<div class="ecqa-muted">{escape(service.describe_link())}</div>',
                                   elem_id="link")
                    if service.has_workers:  # edge workers behind the dispatcher: their live load
                        gr.Markdown("#### Edge workers")
                        workers = gr.HTML(render.workers_html(service.workers()), elem_id="workers")
                        gr.Timer(2.0).tick(lambda: render.workers_html(service.workers()), None, workers,
                                           show_progress="hidden")
            gr.Markdown("#### This session's questions")
            history = gr.HTML(render.history_table([]), elem_id="history")
            session = gr.State([])

        with gr.Tab("Index", id="index"):
            gr.Markdown(f"Add documents to **{collection}** (`{service.store.where}`). A build is atomic: "
                        "until it completes — or if a file is bad — the current version keeps answering.")
            files = gr.File(file_count="multiple", file_types=[".json", ".jsonl", ".txt", ".md"],
                            label="upload: SQuAD v2 .json, .jsonl (text, title, id), .txt, .md", elem_id="index-files")
            with gr.Row():
                bundled = gr.Checkbox(label="add the bundled SQuAD 2.0 sample (data/)", elem_id="index-bundled")
                recreate = gr.Checkbox(label="replace the collection instead of adding to it", elem_id="index-recreate")
            build = gr.Button("Build index", variant="primary", elem_id="index-build")
            built = gr.HTML(elem_id="index-message")
            gr.Markdown("#### Collection")
            stats = gr.HTML(elem_id="index-stats")

        with gr.Tab("Evaluation", id="evaluation"):
            build_eval_tab(service)

        def answer(q: str, pol: str, thr: float, tmax: float, k: float, cached: bool,
                   rows: list[list[Any]]) -> tuple[Any, ...]:
            try:
                a = service.ask(q or "", pol, threshold=thr if service.threshold(pol) is not None else None,
                                budget_ms=tmax, top_k=k, use_cache=cached)
            except USER_ERRORS as exc:
                return render.error_card(str(exc)), "", "", "", gr.skip(), gr.skip()
            except Exception as exc:  # the page shows one line; the traceback goes to the server log
                logger.exception("answering failed")
                return render.error_card(f"answering failed ({type(exc).__name__}: {exc}) — see the server log"), \
                    "", "", "", gr.skip(), gr.skip()
            logger.info("answered in %.1f ms (cascade %.1f ms)", a.ui_ms, a.result["timings_ms"]["total"])
            rows = [render.history_row(a), *rows]
            return (render.answer_card(a), render.latency_chart(a), render.passages_html(a), render.sent_html(a),
                    render.history_table(rows), rows)

        outputs = [card, chart, passages, sent, history, session]
        inputs = [question, policy, threshold, budget, top_k, cache, session]
        gr.on([ask.click, question.submit], answer, inputs, outputs, api_name="ask", concurrency_id=MODELS_QUEUE,
              concurrency_limit=1)

        def on_policy(pol: str) -> Any:
            t = service.threshold(pol)
            return gr.update(value=t, interactive=True) if t is not None else gr.update(interactive=False)

        policy.change(on_policy, policy, threshold, queue=False)

        def on_network(name: str) -> str:
            try:
                return f'<div class="ecqa-muted">{escape(service.set_network(name))}</div>'
            except USER_ERRORS as exc:
                return render.error_card(str(exc))

        network.change(on_network, network, link, concurrency_id=MODELS_QUEUE, concurrency_limit=1)

        def on_build(uploaded: list[str] | None, add_bundled: bool, replace: bool,
                     progress: gr.Progress = gr.Progress()) -> tuple[str, str]:  # noqa: B008 (Gradio finds the tracker by its default)
            def step(done: int, total: int) -> None:
                if total:
                    progress((done, total), desc="embedding", unit="passages")

            try:
                paths = [Path(f) for f in uploaded or []] + (bundled_corpus() if add_bundled else [])
                report = service.build_index(paths, recreate=replace, progress=step)
            except USER_ERRORS as exc:
                return render.error_card(str(exc)), _stats()
            except Exception as exc:  # one line on the page; the traceback goes to the server log
                logger.exception("index build failed")
                return render.error_card(f"the build failed ({type(exc).__name__}: {exc}) — see the server log; "
                                         "the collection is unchanged"), _stats()
            return render.build_message(report), _stats()

        def _stats() -> str:
            try:
                return render.stats_html(service.stats())
            except USER_ERRORS as exc:
                return render.error_card(str(exc))

        build.click(on_build, [files, bundled, recreate], [built, stats], concurrency_id=MODELS_QUEUE,
                    concurrency_limit=1)
        demo.load(_stats, None, stats, concurrency_id=MODELS_QUEUE, concurrency_limit=1)
    demo.queue(max_size=max_queue, default_concurrency_limit=1)
    return demo


def launch(service: UiService, host: str = "127.0.0.1", port: int = DEFAULT_PORT, max_queue: int = MAX_QUEUE) -> gr.Blocks:
    """Serve the UI in background threads; :returns: the running app (``.local_url``, ``.close()``).

    :raises PipelineError: the port is taken.
    """
    demo = build_ui(service, max_queue)
    try:
        demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, share=False,
                    inbrowser=False, ssr_mode=False, show_error=False, footer_links=[], max_file_size="100mb",
                    theme=THEME, css=render.CSS)
    except OSError as exc:
        demo.close()
        raise PipelineError(f"cannot serve the UI on {host}:{port} ({exc.__class__.__name__}: port taken?) — "
                            "stop what uses it or pass --port with a free port") from None
    return demo


def serve_until_interrupted(service: UiService, host: str, port: int, ready: Callable[[str], None]) -> None:
    """Serve until Ctrl-C or SIGTERM (the caller installs :func:`app.console.stop_on_ctrl_c`)."""
    demo = launch(service, host, port)
    try:
        ready(demo.local_url or f"http://{host}:{port}/")
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()

