"""`ecqa cloud init` and `ecqa cloud serve` run the way a user runs them: CliRunner in-process
for init and bad input, the installed console script in a subprocess for a serving gateway."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cloud_helpers import FAKE_P_YES, EdgeClient, FakeOpenAI, question_payload
from haystack import Document
from typer.testing import CliRunner

from app.cli import app
from cloud.certs import init_material, load_server_material
from cloud.cloud_answerer import CloudAnswerer

runner = CliRunner()
ECQA = str(Path(sys.executable).parent / "ecqa")


def ecqa(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def one_error_line(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert " — " in lines[0]  # says how to fix it
    return lines[0]


def test_init_writes_material_and_prints_next_step(tmp_path: Path) -> None:
    d = tmp_path / "cloud"
    result = ecqa("cloud", "init", "--dir", str(d), "--edge", "shop-1", "--edge", "shop-2", "--host", "gw.example.com")
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "aes.key │ 600 (private)" in text and "edges/shop-2.key │ 600 (private)" in text
    assert "edges: shop-1, shop-2" in text and "gw.example.com" in text
    assert f"next: ecqa cloud serve --dir {d}" in text
    assert stat.S_IMODE((d / "edges" / "shop-1.key").stat().st_mode) == 0o600


def test_init_json_refuse_overwrite_and_force(tmp_path: Path) -> None:
    d = tmp_path / "cloud"
    first = json.loads(ecqa("cloud", "init", "--dir", str(d), "--json").stdout)
    assert first["edges"] == ["edge-1"] and {"path": "aes.key", "mode": "0o600"} in first["files"]
    before = (d / "aes.key").read_bytes()
    line = one_error_line(ecqa("cloud", "init", "--dir", str(d)))
    assert "already holds cloud material" in line and "pass --force" in line
    assert (d / "aes.key").read_bytes() == before
    forced = json.loads(ecqa("cloud", "init", "--dir", str(d), "--force", "--json").stdout)
    assert forced["kid"] != first["kid"] and (d / "aes.key").read_bytes() != before


def test_init_uses_ecqa_cloud_dir_then_the_xdg_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECQA_CLOUD_DIR", str(tmp_path / "from-env"))
    assert ecqa("cloud", "init", "--json").exit_code == 0 and (tmp_path / "from-env" / "aes.key").is_file()
    monkeypatch.delenv("ECQA_CLOUD_DIR")
    assert ecqa("cloud", "init", "--json").exit_code == 0
    assert (Path(os.environ["XDG_DATA_HOME"]) / "ecqa" / "cloud" / "aes.key").is_file()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--edge", "no spaces"], "invalid edge name 'no spaces'"),
        (["--edge", "a", "--edge", "a"], "edge name 'a' is given twice"),
        (["--host", "bad host"], "invalid --host 'bad host'"),
    ],
)
def test_init_bad_input(tmp_path: Path, args: list[str], fragment: str) -> None:
    assert fragment in one_error_line(ecqa("cloud", "init", "--dir", str(tmp_path / "c"), *args))
    assert not (tmp_path / "c").exists()


def test_serve_bad_input(tmp_path: Path, material_dir: Path, fake_backend: FakeOpenAI) -> None:
    line = one_error_line(ecqa("cloud", "serve", "--dir", str(tmp_path / "none")))
    assert f"cloud directory {tmp_path / 'none'} does not exist — run `ecqa cloud init --dir {tmp_path / 'none'}`" in line
    line = one_error_line(ecqa("cloud", "serve", "--dir", str(material_dir), "--backend-url", "ftp://x"))
    assert "is not an http(s) URL" in line
    with socket.socket() as s:  # a free port with nothing on it
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    line = one_error_line(ecqa("cloud", "serve", "--dir", str(material_dir), "--port", "0",
                               "--backend-url", f"http://127.0.0.1:{dead}"))
    assert "does not answer" in line and "vllm serve MODEL --port 8000" in line
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        line = one_error_line(ecqa("cloud", "serve", "--dir", str(material_dir), "--port", str(port),
                                   "--backend-url", fake_backend.url))
        assert f"port {port} on 127.0.0.1 is in use — pick another with --port" in line
    bad_port = ecqa("cloud", "serve", "--dir", str(material_dir), "--port", "70000")
    assert bad_port.exit_code == 2 and "less than or equal to 65535" in " ".join(bad_port.stderr.split())


@pytest.mark.parametrize("rel", ["aes.key", "server.key"])
def test_serve_refuses_a_key_others_can_read(tmp_path: Path, fake_backend: FakeOpenAI, rel: str) -> None:
    """Defect #12.5: a world-readable aes.key only warned and the gateway started; refused like ssh
    refuses such a private key, unless --allow-insecure-key-permissions."""
    d = tmp_path / "cloud"
    init_material(d)
    (d / rel).chmod(0o644)
    # A subprocess with a deadline: a gateway that starts anyway serves until stopped.
    proc = subprocess.run([ECQA, "cloud", "serve", "--dir", str(d), "--port", "0", "--backend-url", fake_backend.url],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "300"})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    line = lines[0]
    assert f"{d / rel} is accessible by other users (mode 644)" in line and f"chmod 600 {d / rel}" in line
    assert "--allow-insecure-key-permissions" in line and "listening" not in proc.stdout


def test_insecure_key_permissions_can_be_allowed_explicitly(tmp_path: Path) -> None:
    d = tmp_path / "cloud"
    init_material(d)
    (d / "aes.key").chmod(0o644)
    material = load_server_material(d, allow_insecure_key_permissions=True)
    assert list(material.keyring) == [json.loads((d / "aes.key").read_text())["kid"]]


class _Serve(subprocess.Popen[str]):
    """`ecqa cloud serve` with its stdout read line by line in a thread, so that nothing it prints
    is lost between waiting for the listening line and stopping it."""

    lines: list[str]
    errors: list[str]
    readers: list[threading.Thread]


def _start_serve(args: list[str], timeout_s: float = 60.0) -> tuple[_Serve, str]:
    """Start `ecqa cloud serve` and return it with the line where it says where it listens."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
    proc = _Serve([ECQA, "cloud", "serve", "--port", "0", *args], stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
    proc.lines, proc.errors = [], []
    proc.readers = [threading.Thread(target=lambda f=f, into=into: into.extend(iter(f.readline, "")), daemon=True)
                    for f, into in ((proc.stdout, proc.lines), (proc.stderr, proc.errors))]
    for reader in proc.readers:
        reader.start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in list(proc.lines):
            if "listening on" in line:
                return proc, line
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=10)
    for reader in proc.readers:
        reader.join(timeout=5)
    raise AssertionError(f"serve did not start: {''.join(proc.lines)} {''.join(proc.errors)}")


def _stop(proc: _Serve, sig: int) -> tuple[int, str]:
    """Send ``sig`` to a gateway that must still be serving; its exit code and what it printed after listening."""
    assert proc.poll() is None, f"the gateway stopped on its own: {''.join(proc.lines)}"
    proc.send_signal(sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    for reader in proc.readers:
        reader.join(timeout=5)
    return proc.returncode, "".join(proc.lines).split("listening on", 1)[-1] + "".join(proc.errors)


@pytest.mark.network
def test_serve_answers_and_stops_on_ctrl_c(material_dir: Path, edge1_dir: Path, fake_backend: FakeOpenAI) -> None:
    proc, line = _start_serve(["--dir", str(material_dir), "--backend-url", fake_backend.url])
    try:
        assert "cloud gateway listening on https://127.0.0.1:" in line and f"backend {fake_backend.url} (fake-llm)" in line
        # Before it listened, the gateway timed one made-up answer (three fresh passages, the default cloud plan),
        # twice: with the passages new to it, and once read.
        assert (len(fake_backend.probe_calls), len(fake_backend.answer_calls)) == (6, 2)
        fake_backend.calls.clear()
        url = line.split("listening on ")[1].split()[0]
        cloud = CloudAnswerer(url=url, cloud_dir=str(edge1_dir))
        assert cloud.health()["answer_ms"]["measured"] > 0
        out = cloud.run(question="What is the capital?", documents=[Document(content="The capital is Miret.")])
        cloud.close()
        assert out["answer"] == "Miret" and out["p_answerable"] == pytest.approx(FAKE_P_YES)
        assert len(fake_backend.probe_calls) == 1 and len(fake_backend.answer_calls) == 1
    finally:
        code, rest = _stop(proc, signal.SIGINT)
    assert code == 0 and "cloud gateway stopped" in rest


@pytest.mark.network
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_an_envelope_captured_before_a_restart_is_still_a_replay(tmp_path: Path, fake_backend: FakeOpenAI,
                                                                 stop: int) -> None:
    """Defect #12.3: the nonce cache lived only in memory, so an envelope captured before a restart was
    accepted again within its ±30 s window. Real gateway processes, killed even without a goodbye."""
    d = tmp_path / "cloud"
    init_material(d)
    proc, line = _start_serve(["--dir", str(d), "--backend-url", fake_backend.url])
    fake_backend.calls.clear()  # the gateway's start-up measurement
    url = line.split("listening on ")[1].split()[0]
    edge = EdgeClient(d, url)
    try:
        captured = edge.seal(question_payload()).to_bytes()
        assert edge.post(captured).status_code == 200 and len(fake_backend.answer_calls) == 1
    finally:
        edge.close()
        _stop(proc, stop)
    proc, line = _start_serve(["--dir", str(d), "--backend-url", fake_backend.url])
    fake_backend.calls.clear()  # its start-up measurement again
    url = line.split("listening on ")[1].split()[0]
    edge = EdgeClient(d, url)
    try:
        replayed = edge.post(captured)
        fresh = edge.post(edge.seal(question_payload()).to_bytes())
    finally:
        edge.close()
        _stop(proc, signal.SIGTERM)
    assert replayed.status_code == 409 and replayed.json()["error"]["reason"] == "replay"
    assert fresh.status_code == 200
    assert len(fake_backend.answer_calls) == 1  # the fresh one: the replay never reached the backend
    assert stat.S_IMODE((d / "replay-window.log").stat().st_mode) == 0o600


@pytest.mark.slow
@pytest.mark.network
def test_serve_with_embedded_backend_stops_its_child(material_dir: Path) -> None:
    proc, line = _start_serve(["--dir", str(material_dir)], timeout_s=120)
    try:
        assert "backend embedded qwen2.5-coder-1.5b-instruct (pid " in line  # the default cloud model
        child = int(line.split("(pid ")[1].split(",")[0])
        assert os.path.exists(f"/proc/{child}")
    finally:
        code, rest = _stop(proc, signal.SIGTERM)
    assert code == 0 and "cloud gateway stopped" in rest
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{child}")
