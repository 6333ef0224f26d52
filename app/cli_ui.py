"""`ecqa ui` (the web UI against the configured edge and cloud) and `ecqa up` (the whole stack on
embedded defaults: cloud gateway, edge and UI — what `make run` starts)."""

from __future__ import annotations

# Imports inside functions: a command loads only what it runs, so `ecqa --help` and a bad flag's one-line
# error do not wait seconds for haystack, torch and llama.cpp (the UI builds its tabs the same way).

import socket
import subprocess
from typing import TYPE_CHECKING, Any

import typer

from app.console import fail, out, stop_on_ctrl_c, user_errors
from app.options import UI_FLAGS, UP_FLAGS, UiHost, UiPort, settings_flags
from pipelines.settings import load_settings

if TYPE_CHECKING:
    from app.ui_service import UiService

def register(app: typer.Typer) -> None:
    app.command("ui")(ui_command)
    app.command("up")(up_command)


def _ready(url: str, extra: str = "") -> None:
    out.print(f"edgecloud-qa web UI on [bold]{url}[/]{extra}", highlight=False, soft_wrap=True)
    out.print("[dim]Ctrl-C stops it[/]", highlight=False)


def _what(service: UiService) -> str:
    info = service.cascade.edge.retriever.info
    cloud = f" · cloud {service.describe_link()}" if service.has_cloud else " · edge only (no cloud URL)"
    return f" · collection {info.collection} ({info.documents} passages) · policy {service.default_policy()}{cloud}"


def _check_port_free(host: str, port: int) -> None:
    """Fail before minutes of start-up if the UI port is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            fail(f"cannot serve the web UI on {host}:{port}: {exc.strerror} — stop what uses it or pass --port with a free port")


@user_errors
@settings_flags(UI_FLAGS)
def ui_command(port: UiPort = 7860, host: UiHost = "127.0.0.1", *, flags: dict[str, Any]) -> None:
    """Serve the web UI against the configured edge (and cloud gateway, when one is set) until Ctrl-C."""
    from app.ui import serve_until_interrupted
    from app.ui_service import UiService

    s = load_settings(**flags)
    _check_port_free(host, port)
    stop_on_ctrl_c()
    try:
        with UiService.open(s) as service:
            serve_until_interrupted(service, host, port, lambda url: _ready(url, _what(service)))
    except KeyboardInterrupt:  # during start-up
        pass
    out.print("web UI stopped", highlight=False)


@user_errors
@settings_flags(UP_FLAGS)
def up_command(port: UiPort = 7860, host: UiHost = "127.0.0.1", *, flags: dict[str, Any]) -> None:
    """Start everything on embedded defaults — cloud gateway and backend (certificates made on first
    run), the edge, the web UI — and stop all of it on Ctrl-C."""
    from app.ui import serve_until_interrupted
    from app.ui_service import UiService
    from pipelines import get_profile, open_store
    from pipelines.answer import check_policy
    from pipelines.cloud_path import cloud_dir_of
    from pipelines.stack import embedded_stack

    s = load_settings(**flags)
    # The mistakes that would otherwise show only after the gateway started: a bad policy or link
    # profile, a missing index, a busy port.
    if s.policy:
        check_policy(s.policy)
    if s.network:
        get_profile(s.network)
    with open_store(s) as store:
        store.info(s.collection)
    _check_port_free(host, port)
    stop_on_ctrl_c()
    material = cloud_dir_of(s)
    first = not (material / "aes.key").exists()
    out.print(f"starting the cloud gateway (embedded qwen2.5-coder-1.5b-instruct){' — creating certificates in ' + str(material) if first else ''}…",
              highlight=False)
    try:
        with embedded_stack(material.parent, cloud_dir=material) as stack:
            edge = s.model_copy(update={"cloud_url": stack.gateway_url, "cloud_dir": stack.cloud_dir})
            out.print(f"cloud gateway on {stack.gateway_url} (pid {stack.pid}); loading the edge models…", highlight=False)
            with UiService.open(edge) as service:
                serve_until_interrupted(service, host, port, lambda url: _ready(url, _what(service)))
    except subprocess.CalledProcessError as exc:
        said = (exc.stderr or "").strip().splitlines()
        fail(f"could not create the cloud material in {material} ({said[-1] if said else exc}) — "
             "check that the folder is writable, or pass --cloud-dir")
    except KeyboardInterrupt:  # during start-up: the stack above has stopped what it started
        pass
    out.print("stopped: web UI, edge, cloud gateway", highlight=False)
