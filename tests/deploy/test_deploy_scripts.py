"""What the image runs around `ecqa`: the entry point that lays out the mounted secrets, the health check that shows
the probe certificate; and that every command and ECQA_* setting the compose file and the manifests name exists."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from deploy_helpers import COMPOSE_FILE, DEPLOY, K8S

ENTRYPOINT = DEPLOY / "entrypoint.sh"
HEALTHCHECK = DEPLOY / "healthcheck.sh"


# --- the entry point ----------------------------------------------------------------------------------------------
def _fake_ecqa(bin_dir: Path) -> None:
    """An `ecqa` that prints its arguments and the one setting the entry point may export."""
    bin_dir.mkdir()
    fake = bin_dir / "ecqa"
    fake.write_text('#!/bin/sh\necho "args: $*"\necho "password: ${ECQA_REGISTRY_PASSWORD:-unset}"\n')
    fake.chmod(0o755)


def _k8s_secret_volume(root: Path, files: dict[str, str]) -> None:
    """A Kubernetes secret volume as the kubelet writes it: the data under a timestamped folder, `..data` linking
    to it, and each visible path a link through `..data`; group-readable, as fsGroup makes it."""
    data = root / "..2026_01_01_00_00_00.000000001"
    for rel, content in files.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text(content)
        (data / rel).chmod(0o440)
    (root / "..data").symlink_to(data.name)
    for top in {rel.split("/")[0] for rel in files}:
        (root / top).symlink_to(f"..data/{top}")


def test_entrypoint_lays_out_the_secrets_privately_and_runs_ecqa(tmp_path: Path) -> None:
    secrets, env_dir, cloud = tmp_path / "secrets", tmp_path / "env", tmp_path / "run" / "cloud"
    _k8s_secret_volume(secrets, {"ca.pem": "CA", "workers/edge-worker-0.pem": "CERT", "workers/edge-worker-0.key": "KEY"})
    env_dir.mkdir()
    (env_dir / "ECQA_REGISTRY_PASSWORD").write_text("s3cret")
    (env_dir / "not-a-setting").write_text("ignored")
    _fake_ecqa(tmp_path / "bin")
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "SECRETS_DIR": str(secrets), "SECRETS_ENV_DIR": str(env_dir),
           "ECQA_CLOUD_DIR": str(cloud)}
    res = subprocess.run(["sh", str(ENTRYPOINT), "edge", "serve", "--id", "edge-worker-0"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["args: edge serve --id edge-worker-0", "password: s3cret"]
    files = sorted(str(p.relative_to(cloud)) for p in cloud.rglob("*") if p.is_file())
    assert files == ["ca.pem", "workers/edge-worker-0.key", "workers/edge-worker-0.pem"]  # no ..data copies
    assert (cloud / "workers" / "edge-worker-0.key").read_text() == "KEY"
    for p in cloud.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p


def test_entrypoint_without_secrets_only_runs_ecqa(tmp_path: Path) -> None:
    _fake_ecqa(tmp_path / "bin")
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "SECRETS_DIR": str(tmp_path / "none"),
           "SECRETS_ENV_DIR": str(tmp_path / "none"), "ECQA_CLOUD_DIR": str(tmp_path / "cloud")}
    res = subprocess.run(["sh", str(ENTRYPOINT), "index", "build", "data"], env=env, capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0 and res.stdout.startswith("args: index build data\n")
    assert not (tmp_path / "cloud").exists()


# --- the health check against a real mutual-TLS server --------------------------------------------------------------
@pytest.fixture
def mtls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS server with the gateway's own TLS context (TLS 1.3, a client certificate from the CA required),
    material from `ecqa cloud init`'s code with the `probe` edge; yields (its /healthz URL, the cloud dir)."""
    from cloud.certs import init_material, load_server_material

    material = tmp_path / "cloud"
    init_material(material, edges=["probe"], hosts=[], force=False)
    ctx = load_server_material(material).ssl_context()

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}/healthz", material
    finally:
        server.shutdown()
        server.server_close()


def _healthcheck(url: str, cloud_dir: Path, edge: str = "probe") -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "ECQA_CLOUD_DIR": str(cloud_dir), "HEALTHCHECK_EDGE": edge}
    return subprocess.run(["sh", str(HEALTHCHECK), url], env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.network
def test_healthcheck_passes_with_the_probe_certificate(mtls_server: tuple[str, Path]) -> None:
    url, material = mtls_server
    res = _healthcheck(url, material)
    assert res.returncode == 0, res.stderr


@pytest.mark.network
def test_healthcheck_fails_without_a_client_certificate_or_on_a_bad_path(mtls_server: tuple[str, Path]) -> None:
    url, material = mtls_server
    refused = _healthcheck(url, material, edge="nobody")  # no such certificate: curl cannot show one
    assert refused.returncode != 0
    # a plain TLS client without a certificate is refused at the handshake, as an httpGet probe would be
    ctx = ssl.create_default_context(cafile=str(material / "ca.pem"))
    with pytest.raises(OSError):  # ssl.SSLError "certificate required", or the connection reset (urllib's URLError)
        urllib.request.urlopen(url, context=ctx, timeout=5).read()
    assert _healthcheck(url.replace("/healthz", "/nothing"), material).returncode != 0


# --- what compose and the manifests name exists ----------------------------------------------------------------------
def _k8s_docs() -> list[dict]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc.get("kind") in ("Deployment", "StatefulSet", "Job"):
        return spec["template"]["spec"]["containers"]
    if "template" in spec:  # a strategic-merge patch (overlays/gpu)
        return spec["template"]["spec"].get("containers", [])
    return []


def _ecqa_commands() -> list[list[str]]:
    """The `ecqa` argument lists the project image is started with, in compose and in the manifests."""
    commands = []
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, service in compose["services"].items():
        if "ecqa" in str(service.get("image", "")) and "command" in service:
            commands.append([str(a) for a in service["command"]])
    for doc in _k8s_docs():
        for c in _containers(doc):
            if c.get("image") == "ecqa" and "args" in c:
                commands.append([a.replace("$(POD_NAME)", "edge-worker-0") for a in map(str, c["args"])])
    return commands


def _ecqa_env_names() -> set[str]:
    names: set[str] = set()
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for service in compose["services"].values():
        names |= {k for k in (service.get("environment") or {}) if k.startswith("ECQA_")}
        names |= {s["target"].rsplit("/", 1)[-1] for s in service.get("secrets", []) if "ecqa-env/" in s["target"]}
    for doc in _k8s_docs():
        for c in _containers(doc):
            names |= {e["name"] for e in c.get("env", []) if e["name"].startswith("ECQA_")}
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    for gen in kustomization["secretGenerator"]:
        names |= {f.split("=", 1)[0] for f in gen["files"] if f.startswith("ECQA_")}
    return names


def test_every_ecqa_setting_named_is_a_real_one() -> None:
    from pipelines.settings import Settings

    real = {f"ECQA_{name.upper()}" for name in Settings.model_fields}
    named = _ecqa_env_names()
    assert {"ECQA_QDRANT_URL", "ECQA_EDGE_REGISTRY", "ECQA_CLOUD_URL", "ECQA_REGISTRY_PASSWORD"} <= named
    assert named - real == set(), "not settings of pipelines/settings.py"


def test_every_ecqa_command_line_parses() -> None:
    from typer.testing import CliRunner

    from app.cli import app

    commands = _ecqa_commands()
    assert {tuple(c[:2]) for c in commands} >= {("cloud", "serve"), ("edge", "serve"), ("ui", "--host"),
                                                  ("index", "build")}
    runner = CliRunner()
    for args in commands:
        # --help after the arguments: click parses every option first, so an unknown one fails, then it prints help
        res = runner.invoke(app, [*args, "--help"])
        assert res.exit_code == 0, f"ecqa {' '.join(args)}: {res.output}"
