"""``ecqa edge``: run an edge worker (serve) and show the workers' registry (list)."""

from __future__ import annotations

# Imports inside functions: a command loads only what it runs, so `ecqa --help` and a bad flag's one-line
# error do not wait seconds for haystack, torch and llama.cpp (the UI builds its tabs the same way).

import socket
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from app.console import emit_json, err, out, print_files, stop_on_ctrl_c, user_errors
from app.options import AsJson, WorkerRegistry

edge_app = typer.Typer(help="Edge workers: certificates (init), serve the edge model behind the dispatcher (serve), show the "
                       "registry (list).", no_args_is_help=True)


@edge_app.command("init")
@user_errors
def edge_init(
    worker: Annotated[list[str] | None, typer.Option("--worker", help="Worker id to issue a certificate for "
                                                     "(repeatable; the id `ecqa edge serve --id` uses).")] = None,
    host: Annotated[list[str] | None, typer.Option("--host", help="DNS name or IP the dispatcher reaches the workers "
                                                   "at, besides localhost and 127.0.0.1 (repeatable).")] = None,
    directory: Annotated[Path | None, typer.Option("--dir", help="Directory with the project's CA (`ecqa cloud init`) "
                                                   "[env ECQA_CLOUD_DIR; default <user data dir>/ecqa/cloud].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a worker's existing certificate.")] = False,
    as_json: AsJson = False,
) -> None:
    """Issue edge workers' certificates from the project's CA: they serve mutual TLS and sign their registry entries."""
    from pipelines.fleet import issue_worker_certificates
    from pipelines.settings import load_settings

    report = issue_worker_certificates(load_settings(cloud_dir=directory), worker or [], host or [], force)
    if as_json:
        emit_json(report.as_dict())
        return
    print_files("worker certificates", report.directory, report.files)
    out.print(f"workers: [bold]{', '.join(report.workers)}[/] · valid for localhost, 127.0.0.1"
              f"{''.join(', ' + h for h in report.hosts)} · start each with `ecqa edge serve --id ID`; copy ca.pem and "
              "workers/ID.* to its host", highlight=False)


@edge_app.command("serve")
@user_errors
def edge_serve(
    worker_id: Annotated[str | None, typer.Option("--id", help="Registry id [default edge-<hostname>-<port>].")] = None,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1, 0 = any free one.")] = 0,
    host: Annotated[str, typer.Option("--host", help="Address to bind (and to advertise).")] = "127.0.0.1",
    advertise: Annotated[str | None, typer.Option("--advertise", help="Host name or address the dispatcher reaches "
                                                  "this worker at [default: --host; this machine's host name when "
                                                  "--host binds every address (0.0.0.0 or ::)].")] = None,
    registry: WorkerRegistry = None,
    model: Annotated[str | None, typer.Option("--model", help="Edge model: a manifest name or a GGUF path "
                                              "[env ECQA_SLM_MODEL_PATH; default qwen2.5-coder-0.5b-instruct].")] = None,
    cores: Annotated[str | None, typer.Option("--cores", help="CPUs it runs on, e.g. 0 or 0-1 [default: all it may use]; "
                                              "its threads follow them.")] = None,
    threads: Annotated[int, typer.Option("--threads", min=0, max=256, help="Threads per model instance, 0 = cores / "
                                         "concurrency.")] = 0,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, max=16, help="Requests read at once "
                                                    "[env ECQA_WORKER_CONCURRENCY; default 1].")] = None,
    queue: Annotated[int | None, typer.Option("--queue", min=0, max=1000, help="Requests admitted beyond that, "
                                              "waiting [env ECQA_WORKER_QUEUE; default 2].")] = None,
    directory: Annotated[Path | None, typer.Option("--dir", help="Directory with the fleet's CA and this worker's "
                                                   "certificate (`ecqa edge init`) [env ECQA_CLOUD_DIR].")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Plain HTTP and an unsigned registry entry, on a loopback "
                                           "address only (dispatchers need ECQA_FLEET_INSECURE=1) [env "
                                           "ECQA_FLEET_INSECURE].")] = False,
) -> None:
    """Run an edge worker until Ctrl-C: it loads its model, measures its speed, then serves (mutual TLS) and
    heartbeats its signed entry."""
    from pipelines.errors import PipelineError
    from pipelines.fleet import worker_fleet
    from pipelines.settings import load_settings
    from pipelines.workers import build_worker, check_worker_id, make_server, parse_cores, registry_for

    if worker_id is not None:
        check_worker_id(worker_id)
    s = load_settings(edge_registry=registry, slm_model_path=model, worker_concurrency=concurrency, worker_queue=queue,
                      cloud_dir=directory, **({"fleet_insecure": True} if insecure else {}))
    cpus = parse_cores(cores)
    shown = advertised_host(host, advertise)
    tls = None
    if s.fleet_insecure:
        if not _loopback(host) or not _loopback(shown):
            raise PipelineError(f"an insecure worker serves plain HTTP, so only on a loopback address (not {host}) — "
                                "drop --insecure and issue it a certificate with `ecqa edge init --worker ID`")
        reg = registry_for(s)
    else:
        material, seal = worker_fleet(s, worker_id or "", shown)
        worker_id, tls = material.name, material.ssl_context()
        reg = registry_for(s, seal)
    stop_on_ctrl_c()
    server = None
    worker = None
    try:
        probe = socket.socket()  # a busy port fails before the model loads
        try:
            probe.bind((host, port))
        except OSError as exc:
            from pipelines.errors import PipelineError

            raise PipelineError(f"cannot listen on {host}:{port}: {exc.strerror or exc} — pick another --port") from None
        finally:
            probe.close()
        err.print(f"[dim]loading {s.slm_model_path or 'qwen2.5-coder-0.5b-instruct'} on CPUs {cores or 'all'} and "
                  "measuring its speed…[/]", highlight=False)
        worker = build_worker(s, worker_id or "pending", cpus, s.worker_concurrency, s.worker_queue, reg, threads)
        server = make_server(worker, host, port, ssl_context=tls)
        url = f"{'https' if tls else 'http'}://{shown}:{server.server_address[1]}"
        wid = worker_id or f"edge-{socket.gethostname()[:40]}-{server.server_address[1]}"
        worker.entry = replace(worker.entry, id=wid, url=url)
        worker.start_heartbeat()
        e = worker.entry
        out.print(f"edge worker [bold]{wid}[/] listening on [bold]{url}[/] · {e.model} · {e.threads} threads on CPUs "
                  f"{e.cores} · {e.prompt_tps:.0f} prompt tok/s, {e.gen_tps:.1f} gen tok/s, {e.read_tps:.0f} tok/s per read · concurrency "
                  f"{e.concurrency}, queue {e.queue} · registry {reg.describe()}", highlight=False, soft_wrap=True)
        out.print("[dim]Ctrl-C stops it[/]", highlight=False)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            worker.stop()
        if server is not None:
            server.server_close()
    out.print("edge worker stopped", highlight=False)


def _loopback(host: str) -> bool:
    import ipaddress

    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def advertised_host(host: str, advertise: str | None) -> str:
    """The host part of the URL a worker advertises: never an unspecified address nobody can reach."""
    name = advertise or (socket.gethostname() if host in ("0.0.0.0", "::", "") else host)
    return f"[{name}]" if ":" in name and not name.startswith("[") else name


@edge_app.command("list")
@user_errors
def edge_list(registry: WorkerRegistry = None, as_json: AsJson = False) -> None:
    """Show the live workers of the registry: model, speed, limits and load (W_i, R_i = W_i / C_i)."""
    from rich.table import Table

    from pipelines.fleet import dispatcher_fleet
    from pipelines.settings import load_settings
    from pipelines.workers import registry_for

    s = load_settings(edge_registry=registry)
    reg = registry_for(s, dispatcher_fleet(s, need_client=False).seal)
    entries = reg.entries()
    if as_json:
        emit_json({"registry": reg.describe(), "workers": [{**e.to_json(), "capacity": round(e.capacity, 1),
                                                            "keys": e.keys()} for e in entries]})
        return
    if not entries:
        out.print(f"no live edge worker in {reg.describe()} — start one with `ecqa edge serve`", highlight=False)
        return
    table = Table("id", "url", "model", "params", "quant", "threads", "cores", "prompt tok/s", "gen tok/s", "read tok/s",
                  "W_i / limit", "R_i", "served", "refused", title=f"edge workers in {reg.describe()}")
    for e in entries:
        table.add_row(e.id, e.url, e.model, e.parameters, e.quantization, str(e.threads), e.cores, f"{e.prompt_tps:.0f}",
                      f"{e.gen_tps:.1f}", f"{e.read_tps:.0f}", f"{e.in_flight} / {e.limit}", f"{e.in_flight / e.capacity:.4f}", str(e.served),
                      str(e.rejected))
    out.print(table)
