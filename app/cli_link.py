"""``ecqa link``: measure the emulated edge–cloud link profiles, or run the link as a proxy."""

from __future__ import annotations

# Imports inside functions: a command loads only what it runs, so `ecqa --help` and a bad flag's one-line
# error do not wait seconds for haystack, torch and llama.cpp (the UI builds its tabs the same way).

import time
from typing import Annotated, Any

import typer

from app.console import emit_json, err, fail, out, stop_on_ctrl_c, user_errors
from app.options import AsJson

link_app = typer.Typer(help="Emulated edge–cloud link: measure its profiles, or put it in front of a gateway.",
                       no_args_is_help=True)





@link_app.command("measure")
@user_errors
def link_measure(
    profile: Annotated[str, typer.Option("--profile", "-p", help="Profile name (lan, 5g, wifi, congested) or 'all'.")] = "all",
    as_json: AsJson = False,
) -> None:
    """Measure RTT and bandwidth of each profile through the proxy on 127.0.0.1."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from netem.measure import TOLERANCE, measure_link
    from netem.profiles import select_profiles

    profiles = select_profiles(profile)
    results: list[dict[str, Any]] = []
    with Progress(TextColumn("[bold]measuring[/] {task.fields[name]}"), BarColumn(), MofNCompleteColumn(),
                  console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task("measure", total=len(profiles), name="")
        for prof in profiles:
            bar.update(task, name=prof.name)
            results.append(measure_link(prof))
            bar.advance(task)
    if as_json:
        emit_json(results if profile == "all" else results[0])
        return
    table = Table("profile", "target RTT ms", "measured RTT ms", "target Mbit/s", "measured Mbit/s",
                  f"within {TOLERANCE:.0%}?", title="emulated edge–cloud link (userspace proxy on 127.0.0.1)")
    for r in results:
        table.add_row(r["profile"], f"{r['target_rtt_ms']:g}", f"{r['rtt_ms']:.2f}", f"{r['target_mbit']:g}",
                      f"{r['mbit']:.1f}", "[green]yes[/]" if r["within_tolerance"] else "[red]no[/]")
    out.print(table)


@link_app.command("proxy")
@user_errors
def link_proxy(
    profile: Annotated[str, typer.Option("--profile", "-p", help="Profile name: lan, 5g, wifi, congested.")],
    target: Annotated[str, typer.Option("--target", help="HOST:PORT to forward to, e.g. the cloud gateway.")],
    listen: Annotated[int, typer.Option("--listen", help="Port on 127.0.0.1 to listen on; 0 picks a free one.")] = 0,
) -> None:
    """Forward 127.0.0.1:PORT to HOST:PORT over an emulated link until Ctrl-C."""
    from netem.link import LinkEmulator, parse_hostport
    from netem.profiles import get_profile

    prof = get_profile(profile)
    host, port = parse_hostport(target)
    if not 0 <= listen < 65536:
        fail(f"bad --listen port {listen} — give 0 (a free port) or 1–65535")
    stop_on_ctrl_c()
    with LinkEmulator(prof, (host, port), listen_port=listen) as link:
        lhost, lport = link.address
        # Plain echo, flushed: scripts wait for this line to learn the port.
        typer.echo(f"link {prof.name} ({prof.rtt_ms:g} ms RTT, {prof.bandwidth_mbit:g} Mbit/s): "
                   f"listening on {lhost}:{lport} -> {host}:{port} — Ctrl-C stops")
        try:
            while True:  # sleep() is always interrupted by Ctrl-C / SIGINT; a bare Event.wait() may not be
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    typer.echo("link stopped")
