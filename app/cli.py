"""The ``ecqa`` command line: index building, asking, settings. No business logic here."""

from __future__ import annotations

# Imports inside functions: a command loads only what it runs, so `ecqa --help` and a bad flag's one-line
# error do not wait seconds for haystack, torch and llama.cpp (the UI builds its tabs the same way).
import io
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer
from rich.markup import escape
from rich.progress import TextColumn
from rich.table import Table

from app.cli_cloud import cloud_app
from app.cli_doctor import register as register_doctor
from app.cli_edge import edge_app
from app.cli_eval import register as register_eval
from app.cli_link import link_app
from app.cli_models import models_app
from app.cli_ui import register as register_ui
from app.console import emit_json, err, out, print_error, progress_bar, user_errors
from app.options import (
    SHELL_FLAGS,
    AsJson,
    BudgetMs,
    CloudDir,
    CloudUrl,
    Collection,
    Network,
    Pii,
    Policy,
    QdrantPath,
    QdrantUrl,
    StoreKind,
    settings_flags,
)
from pipelines.errors import USER_ERRORS, ConfigError
from pipelines.settings import Settings, load_settings

app = typer.Typer(help="edgecloud-qa: answer questions over your documents, edge first.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
index_app = typer.Typer(help="Build and inspect Qdrant indexes.", no_args_is_help=True)
config_app = typer.Typer(help="Show the effective settings.", no_args_is_help=True)
app.add_typer(index_app, name="index")
app.add_typer(config_app, name="config")
app.add_typer(link_app, name="link")
app.add_typer(cloud_app, name="cloud")
app.add_typer(models_app, name="models")
app.add_typer(edge_app, name="edge")
register_eval(app)
register_ui(app)
register_doctor(app)

def settings_from(**flags: Any) -> Settings:
    return load_settings(**flags)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file [env ECQA_CONFIG].")] = None,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if config is not None:
        os.environ["ECQA_CONFIG"] = str(config)


# --- index ----------------------------------------------------------------------------------
@index_app.command("build")
@user_errors
def index_build(
    paths: Annotated[list[Path], typer.Argument(help="SQuAD v2 .json, .jsonl (text, title, id), .txt/.md files or folders.")],
    collection: Collection = None,
    recreate: Annotated[bool, typer.Option("--recreate", help="Replace the collection instead of adding to it.")] = False,
    embedder_model: Annotated[str | None, typer.Option("--embedder-model", help="sentence-transformers model dir [env ECQA_EMBEDDER_MODEL].")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Passages per encode() call.")] = None,
    qdrant_path: QdrantPath = None,
    qdrant_url: QdrantUrl = None,
    store_kind: StoreKind = None,
    snapshot: Annotated[Path | None, typer.Option("--snapshot", help="Also write the collection as a Qdrant Edge shard "
                                                  "snapshot to this file, for `ecqa index pull` on other devices.")] = None,
    kv: Annotated[bool, typer.Option("--kv", help="Also store the edge model's KV state of each passage (the edge then "
                                     "prefills only the question) [ECQA_KV_DIR, ECQA_KV_TYPE].")] = False,
    as_json: AsJson = False,
) -> None:
    """Index documents into a collection (atomic: the old version serves until the new one is complete)."""

    from pipelines import open_store
    from pipelines.index import embedder_for, index_files, load_files, prepare_kv_states, snapshot_index

    s = settings_from(collection=collection, embedder_model=embedder_model, embed_batch_size=batch_size,
                      qdrant_path=qdrant_path, qdrant_url=qdrant_url, store=store_kind)
    if snapshot is not None and (snapshot.is_dir() or not snapshot.parent.is_dir()):
        raise ConfigError(f"--snapshot {snapshot} is a folder or lies in a folder that does not exist — give a file path "
                          "in an existing folder, e.g. --snapshot squad.snapshot")
    if kv:
        if s.slm_reading != "each" or not s.kv_store:
            raise ConfigError("--kv needs the per-passage reading and the passage KV store — unset ECQA_SLM_READING "
                              "and ECQA_KV_STORE (or set them to 'each' and true)")
    embedder = embedder_for(s)  # checks the model dir before reading any input
    loaded = load_files(s, paths)  # a bad file is one line before any progress bar shows
    with open_store(s) as store, progress_bar("[bold]embedding", TextColumn("{task.fields[rate]}"), as_json=as_json) as bar:
        task = bar.add_task("embed", total=None, rate="")
        start: list[float] = []

        def progress(done: int, total: int) -> None:
            if not start:
                start.append(time.perf_counter())
            elapsed = time.perf_counter() - start[0]
            rate = f"{done / elapsed:.0f} passages/s" if elapsed > 0 and done else ""
            bar.update(task, completed=done, total=total, rate=rate)

        indexed = index_files(s, store, loaded, embedder=embedder, recreate=recreate, progress=progress)
        snapped = snapshot_index(store, s.collection, snapshot) if snapshot is not None else None
    report = indexed.report
    kv_report = None
    if kv:
        with progress_bar("[bold]KV states", as_json=as_json) as bar:
            kv_task = bar.add_task("kv", total=len(indexed.passages))
            kv_report = prepare_kv_states(s, indexed.passages, lambda done, total: bar.update(kv_task, completed=done))
        if kv_report["errors"]:
            err.print(f"warning: {kv_report['errors']} KV states could not be written to {kv_report['dir']} — the edge "
                      "will prefill those passages")
    if as_json:
        emit_json(report.as_dict() | ({"kv": kv_report} if kv_report else {})
                  | ({"snapshot": {"path": snapped["snapshot"], "bytes": snapped["bytes"]}} if snapped else {}))
        return
    if snapped:
        out.print(f"snapshot written to {escape(snapped['snapshot'])} ({snapped['bytes'] / 1e6:.1f} MB) — "
                  f"`ecqa index pull {escape(snapped['snapshot'])}` on an edge")
    if kv_report:
        out.print(f"KV states: {kv_report['computed']} computed, {kv_report['already_stored']} already stored, "
                  f"{kv_report['bytes'] / 1e6:.0f} MB in {kv_report['dir']} ({kv_report['seconds']:.1f} s)")
    if report.added == 0:
        out.print(f"collection [bold]{escape(report.collection)}[/] already holds all {report.already_indexed} passages — nothing added")
        return
    out.print(
        f"indexed [bold]{report.documents}[/] passages into [bold]{report.collection}[/] "
        f"({report.added} new, {report.already_indexed} already indexed, {report.duplicates} duplicates skipped) "
        f"in {report.seconds:.1f} s — {report.passages_per_s:.0f} passages/s"
    )


@index_app.command("pull")
@user_errors
def index_pull(
    snapshot: Annotated[Path, typer.Argument(help="A snapshot made by `ecqa index build … --snapshot FILE`.")],
    collection: Collection = None,
    qdrant_path: QdrantPath = None,
    qdrant_url: QdrantUrl = None,
    store_kind: StoreKind = None,
    kv: Annotated[bool, typer.Option("--kv", help="Also store the edge model's KV state of each passage.")] = False,
    as_json: AsJson = False,
) -> None:
    """Make a snapshot the collection (atomic: the old version serves until the new one is loaded)."""
    from pipelines import open_store
    from pipelines.index import prepare_kv_states, pull_index, stored_passages

    s = settings_from(collection=collection, qdrant_path=qdrant_path, qdrant_url=qdrant_url, store=store_kind)
    with open_store(s) as store:
        pulled = pull_index(store, snapshot, s.collection)
        passages = stored_passages(store, s.collection) if kv else []
    if kv:
        with progress_bar("[bold]KV states", as_json=as_json) as bar:
            kv_task = bar.add_task("kv", total=len(passages))
            pulled["kv"] = prepare_kv_states(s, passages, lambda done, total: bar.update(kv_task, completed=done))
    if as_json:
        emit_json(pulled)
        return
    out.print(f"collection [bold]{escape(pulled['collection'])}[/] now serves {pulled['documents']} passages from "
              f"{escape(str(snapshot))} (built {escape(str(pulled['built_at']))} with {escape(str(pulled['model']))})")


@index_app.command("list")
@user_errors
def index_list(qdrant_path: QdrantPath = None, qdrant_url: QdrantUrl = None, store_kind: StoreKind = None,
               as_json: AsJson = False) -> None:
    """List collections with their size and model."""
    from pipelines import open_store

    s = settings_from(qdrant_path=qdrant_path, qdrant_url=qdrant_url, store=store_kind)
    with open_store(s) as store:
        infos = store.list_collections()
    if as_json:
        emit_json([i.as_dict() for i in infos])
        return
    if not infos:
        out.print("no collections yet — run `ecqa index build FILE`")
        return
    table = Table("collection", "documents", "dim", "model", "built at")
    for i in infos:
        table.add_row(i.collection, str(i.documents), str(i.dimension), i.model, i.built_at)
    out.print(table)


@index_app.command("stats")
@user_errors
def index_stats(collection: Collection = None, qdrant_path: QdrantPath = None, qdrant_url: QdrantUrl = None,
                store_kind: StoreKind = None, as_json: AsJson = False) -> None:
    """Show one collection's size, model, build time and sources."""
    from pipelines import open_store

    s = settings_from(collection=collection, qdrant_path=qdrant_path, qdrant_url=qdrant_url, store=store_kind)
    with open_store(s) as store:
        info = store.info(s.collection)
    data = info.as_dict()
    if as_json:
        emit_json(data)
        return
    table = Table("field", "value", show_header=False)
    for key in ("collection", "backing_collection", "documents", "dimension", "model", "built_at", "hybrid", "embed_titles"):
        table.add_row(key, str(data[key]))
    for src in data["sources"]:
        table.add_row("source", f"{src.get('path')} ({src.get('format')}, {src.get('passages')} passages)")
    out.print(table)


@index_app.command("drop")
@user_errors
def index_drop(name: Annotated[str, typer.Argument(help="Collection to delete.")],
               qdrant_path: QdrantPath = None, qdrant_url: QdrantUrl = None, store_kind: StoreKind = None) -> None:
    """Delete a collection and all its versions."""
    from pipelines import open_store

    s = settings_from(qdrant_path=qdrant_path, qdrant_url=qdrant_url, store=store_kind)
    with open_store(s) as store:
        store.drop(name)
    out.print(f"dropped collection [bold]{escape(name)}[/]")


# --- asking ---------------------------------------------------------------------------------
def _print_result(result: Any) -> None:
    from pipelines import privacy_line

    answer = escape(result.answer) if result.answer else "[italic](no answer in the collection)[/]"
    out.print(f"[bold]{answer}[/]")  # escaped above: answers and titles come from documents and models
    t = result.timings_ms
    stages = ", ".join(f"{k} {t[k]:.0f}" for k in ("embed", "retrieve", "generate", "cloud_network", "cloud_server") if k in t)
    out.print(f"[dim]{result.tier} · confidence {result.confidence:.2f} · {t['total']:.0f} ms ({stages})[/]", highlight=False)
    if result.decision:
        flag = " · degraded" if result.decision.get("degraded") else ""
        out.print(f"[dim]why: {escape(result.decision['reason'])}{flag}[/]", highlight=False)
    if result.sent:
        out.print(f"[dim]sent to the cloud: {escape(privacy_line(result.redactions, result.restored, result.pii_undetected, result.pii))}[/]",
                  highlight=False)
    for i, p in enumerate(result.passages, 1):
        mark = " ◀ answer" if p.get("answer_span") else ""
        out.print(f"[dim]  [{i}] {escape(str(p['title']))} (score {p['score']:.3f}){mark}[/]", highlight=False)


# ask's own --top-k and --threshold stand among the settings flags, where its --help has always listed them.
ASK_FLAGS = {"collection": Collection, "policy": Policy,
             "top_k": Annotated[int | None, typer.Option("--top-k", help="Passages retrieved [env ECQA_TOP_K].")],
             "threshold": Annotated[float | None, typer.Option("--threshold",
                                                               help="Override the policy's calibrated threshold.")],
             "budget_ms": BudgetMs, "network": Network, "qdrant_path": QdrantPath, "qdrant_url": QdrantUrl,
             "cloud_url": CloudUrl, "cloud_dir": CloudDir, "pii": Pii}


@app.command("ask")
@user_errors
@settings_flags(ASK_FLAGS)
def ask(question: Annotated[str, typer.Argument(help="The question.")], threshold: float | None, flags: dict[str, Any],
        as_json: AsJson = False) -> None:
    """Answer a question from a collection: on the edge, in the cloud, or as the policy decides."""
    from pipelines import Ask, build_cascade, effective_policy, open_store

    s = settings_from(**flags)
    checked = Ask.check(question, effective_policy(s), threshold, have_cloud=s.cloud_url is not None)  # before anything loads
    with open_store(s) as store, build_cascade(s, store) as cascade:
        result = cascade.answer(checked)
    if as_json:
        emit_json(result.to_json())
    else:
        _print_result(result)


@app.command("shell")
@user_errors
@settings_flags(SHELL_FLAGS)
def shell(flags: dict[str, Any]) -> None:
    """Ask questions interactively with the models kept loaded (empty line or Ctrl-D quits)."""
    from pipelines import build_cascade, check_configured_policy, open_store

    s = settings_from(**flags)
    name = check_configured_policy(s)  # before anything loads
    with open_store(s) as store, build_cascade(s, store) as cascade:
        edge = cascade.warm_up(name).edge  # the models the policy needs, before the first question
        info = edge.retriever.info
        cloud = f" · cloud {s.cloud_url}" + (f" over {s.network}" if s.network else "") if s.cloud_url else ""
        out.print(f"edgecloud-qa · collection [bold]{escape(info.collection)}[/] ({info.documents} passages) · "
                  f"edge model {edge.models().get('slm', 'none')} · policy {name}{cloud}", highlight=False)
        out.print("[dim]type a question and press Enter; an empty line or Ctrl-D quits[/]")
        if isinstance(sys.stdin, io.TextIOWrapper):
            # Bytes that are not UTF-8 must not end the session: they reach check_question as surrogate
            # escapes, which it replaces with U+FFFD.
            sys.stdin.reconfigure(errors="surrogateescape")
        while True:
            try:
                question = input("question> ") if sys.stdin.isatty() else sys.stdin.readline()
            except EOFError:
                break
            if not question.strip():
                break
            shell_line(cascade, name, question)


def shell_line(cascade: Any, policy: str, line: str) -> None:
    """One line typed into `ecqa shell`: its answer, or a user error as one red line (the session goes on).

    :param cascade: the shell's cascade (models loaded); ``line`` may hold surrogate escapes (stdin).
    """
    from pipelines.answer import answer_question

    try:
        _print_result(answer_question(cascade, line, policy=policy))
    except USER_ERRORS as exc:
        print_error(str(exc))


# --- config ---------------------------------------------------------------------------------
@config_app.command("show")
@user_errors
def config_show(as_json: AsJson = False) -> None:
    """Print the effective settings (file + env + defaults), secrets redacted."""
    s = load_settings()
    data = s.redacted()
    if as_json:
        emit_json(data)
        return
    table = Table("setting", "value", "env var", "description")
    for name, field in Settings.model_fields.items():
        table.add_row(name, str(data[name]), f"ECQA_{name.upper()}", field.description or "")
    out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
