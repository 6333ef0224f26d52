"""`ecqa doctor`: which llama.cpp CPU variant runs on this machine, checked by generating a token."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from app.console import emit_json, fail, out, user_errors
from app.options import AsJson
from pipelines.settings import load_settings


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)


@user_errors
def doctor_command(as_json: AsJson = False) -> None:
    """Generate one token with the edge model in a child process; report the CPU variant that ran it."""
    # Imports inside functions: the llama.cpp check loads numpy, which `ecqa --help` need not wait for.
    from pipelines import CheckFailed, doctor_report

    try:
        report = doctor_report(load_settings())
    except CheckFailed as exc:
        fail(str(exc))
        return
    if as_json:
        emit_json(report)
        return
    table = Table(show_header=False, box=None)
    table.add_row("llama-cpp-python", report["llama_cpp_version"])
    table.add_row("CPU variant", f"[bold]{report['cpu_variant']}[/]")
    table.add_row("variants built", ", ".join(report["variants"]) or "— (CPU backend linked in)")
    table.add_row("loaded from", report["backend_dir"] or "—")
    table.add_row("CPU flags", " ".join(report["cpu_flags"]) or "—")
    table.add_row("edge model", Path(report["model"]).name)
    table.add_row("one token", f"{report['token']!r} in {report['first_token_s']:.2f} s (load {report['load_s']:.2f} s)")
    out.print(table)
