"""``ecqa cloud``: create the cloud tier's certificates and key, run the mutual-TLS gateway."""

from __future__ import annotations

# Imports inside functions: a command loads only what it runs, so `ecqa --help` and a bad flag's one-line
# error do not wait seconds for haystack, torch and llama.cpp (the UI builds its tabs the same way).

import signal
from typing import Annotated, Any

import typer

from app.console import emit_json, err, out, print_files, user_errors
from app.options import AsJson, CloudMaterialDir
from pipelines.settings import load_settings

cloud_app = typer.Typer(help="The cloud tier: certificates and keys (init), the mutual-TLS gateway in front of an LLM (serve).",
                        no_args_is_help=True)


@cloud_app.command("init")
@user_errors
def cloud_init(
    directory: CloudMaterialDir = None,
    edge: Annotated[list[str] | None, typer.Option(
        "--edge", help="Edge name to issue a client certificate for (repeatable; default edge-1).")] = None,
    host: Annotated[list[str] | None, typer.Option("--host", help="Extra DNS name or IP of the gateway certificate (repeatable).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing material (old edges are then refused).")] = False,
    as_json: AsJson = False,
) -> None:
    """Create a CA, the gateway certificate, one client certificate per edge and the AES-256 key."""
    from rich.markup import escape

    from cloud.certs import init_material
    from pipelines.cloud_path import cloud_dir_of

    target = cloud_dir_of(load_settings(cloud_dir=directory))
    report = init_material(target, edges=edge or [], hosts=host or [], force=force)
    if as_json:
        emit_json(report.as_dict())
        return
    print_files("cloud material", report.directory, report.files)
    out.print(
        f"edges: [bold]{', '.join(report.edges)}[/] · gateway names: localhost, 127.0.0.1"
        f"{''.join(', ' + h for h in report.hosts)} · key id {report.kid}",
        highlight=False,
    )
    out.print(f"next: [bold]ecqa cloud serve --dir {escape(str(report.directory))}[/]", highlight=False)


@cloud_app.command("serve")
@user_errors
def cloud_serve(
    directory: CloudMaterialDir = None,
    host: Annotated[str | None, typer.Option("--host", help="Address to bind [env ECQA_CLOUD_HOST; default 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option("--port", min=0, max=65535, help="Port, 0 = any free one [env ECQA_CLOUD_PORT; default 8443].")] = None,
    backend_url: Annotated[str | None, typer.Option(
        "--backend-url", help="OpenAI-compatible backend, e.g. vLLM at http://127.0.0.1:8000 [env ECQA_CLOUD_BACKEND_URL]; "
        "default: the embedded backend with the cloud model (ECQA_CLOUD_MODEL_PATH, default qwen2.5-coder-1.5b-instruct).")] = None,
    backend_model: Annotated[str | None, typer.Option(
        "--backend-model", help="Model id to request from --backend-url [env ECQA_CLOUD_BACKEND_MODEL; default: the first it lists].")] = None,
    allow_insecure_key_permissions: Annotated[bool, typer.Option(
        "--allow-insecure-key-permissions", help="Start even if server.key or aes.key is readable by other users "
        "(refused by default, as ssh refuses such a private key).")] = False,
) -> None:
    """Run the HTTPS gateway (TLS 1.3, mutual TLS, AES-GCM envelopes) until Ctrl-C."""
    from cloud.backend import Backend, EmbeddedBackend, OpenAIBackend, check_backend_url
    from cloud.certs import load_server_material
    from cloud.gateway import Gateway
    from pipelines.cloud_path import cloud_dir_of

    s = load_settings(cloud_dir=directory, cloud_host=host, cloud_port=port, cloud_backend_url=backend_url,
                      cloud_backend_model=backend_model)
    material = load_server_material(cloud_dir_of(s), allow_insecure_key_permissions=allow_insecure_key_permissions)
    backend: Backend
    if s.cloud_backend_url:
        check_backend_url(s.cloud_backend_url)
        key = s.cloud_backend_api_key.get_secret_value() if s.cloud_backend_api_key else None
        backend = OpenAIBackend(s.cloud_backend_url, model=s.cloud_backend_model, timeout_s=s.cloud_backend_timeout_s, api_key=key,
                                prompt_family=s.cloud_backend_prompt_family)
    else:
        backend = EmbeddedBackend(model_path=s.cloud_model_path, n_ctx=s.cloud_n_ctx, n_threads=s.cloud_threads,
                                  timeout_s=s.cloud_backend_timeout_s)
    # measure: one made-up answer at start-up, so /healthz tells edges what an answer costs from their first question
    gateway = Gateway(material, backend, host=s.cloud_host, port=s.cloud_port,
                      max_envelope_bytes=s.cloud_max_envelope_bytes, clock_skew_s=s.cloud_clock_skew_s, measure=True)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python then installs no handler.
    previous = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        gateway.bind()  # a busy port fails before the model loads
        if isinstance(backend, EmbeddedBackend):
            err.print(f"[dim]starting the embedded backend ({s.cloud_model_path or 'qwen2.5-coder-1.5b-instruct'})…[/]",
                      highlight=False)
        gateway.warm_up()  # the backend, then one answer timed: before "listening", so no edge asks before it
        where = f"embedded {backend.name} (pid {backend.pid}, {backend.url})" if isinstance(backend, EmbeddedBackend) \
            else f"{s.cloud_backend_url} ({backend.name})"
        out.print(f"cloud gateway listening on [bold]{gateway.url}[/] · backend {where}", highlight=False, soft_wrap=True)
        out.print("[dim]Ctrl-C stops it[/]", highlight=False)
        gateway.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        gateway.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out.print("cloud gateway stopped", highlight=False)
