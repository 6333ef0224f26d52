"""`ecqa ui` and `ecqa up` as a user runs them: bad input is one line and exit 2 before anything
starts; `ecqa up` starts the whole stack, serves the UI, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from cli_helpers import one_error_line
from typer.testing import CliRunner
from ui_helpers import free_port

from app.cli import app

runner = CliRunner()
ECQA = str(Path(sys.executable).parent / "ecqa")


@pytest.fixture(autouse=True)
def _signal_handlers() -> Iterator[None]:
    """The commands install Ctrl-C/SIGTERM handlers for their serving loop: keep pytest's own."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_squad: Path) -> Path:
    folder = tmp_path_factory.mktemp("ui-cli") / "qdrant"
    result = runner.invoke(app, ["index", "build", str(tiny_squad), "-c", "docs", "--qdrant-path", str(folder)])
    assert result.exit_code == 0, result.stderr
    return folder


def test_ui_with_a_missing_collection_is_one_line(built: Path) -> None:
    line = one_error_line(runner.invoke(app, ["ui", "-c", "nope", "--qdrant-path", str(built), "--port", str(free_port())]))
    assert "collection 'nope' not found" in line and "ecqa index build" in line


def test_ui_cloud_policy_without_a_gateway_and_unknown_policy(built: Path) -> None:
    base = ["ui", "-c", "docs", "--qdrant-path", str(built), "--port", str(free_port())]
    assert "no gateway is configured" in one_error_line(runner.invoke(app, [*base, "--policy", "cloud"]))
    assert "unknown policy 'smart' — choose one of: edge, cloud" in one_error_line(runner.invoke(app, [*base, "--policy", "smart"]))


def test_ui_on_a_busy_port_is_one_line(built: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_error_line(runner.invoke(app, ["ui", "-c", "docs", "--qdrant-path", str(built), "--port", str(port)]))
    assert f"cannot serve the web UI on 127.0.0.1:{port}" in line and "--port" in line


def test_up_checks_index_policy_and_link_before_starting_anything(built: Path, tmp_path: Path) -> None:
    cloud = tmp_path / "cloud"
    base = ["up", "--qdrant-path", str(built), "--cloud-dir", str(cloud), "--port", str(free_port())]
    assert "collection 'squad' not found" in one_error_line(runner.invoke(app, base))  # make run's default
    assert "unknown policy" in one_error_line(runner.invoke(app, [*base, "-c", "docs", "--policy", "smart"]))
    assert "unknown link profile 'dialup'" in one_error_line(runner.invoke(app, [*base, "-c", "docs", "--network", "dialup"]))
    assert not cloud.exists()  # no certificates made, no gateway started


class Served:
    """An `ecqa` serving command in a subprocess of its own session, its output collected as it comes."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        # Its own session: a signal sent to it reaches it alone, which must stop its children itself.
        self.proc = subprocess.Popen([ECQA, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {}), "COLUMNS": "300"}, start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return " ".join("".join(self.lines).split())

    def wait_for(self, text: str, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.output:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.output
            time.sleep(0.2)

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.slow
def test_ui_serves_the_configured_edge_until_sigterm(built: Path) -> None:
    port = free_port()
    ui = Served("ui", "-c", "docs", "--qdrant-path", str(built), "--port", str(port))
    try:
        url = f"http://127.0.0.1:{port}/"
        ui.wait_for(f"web UI on {url}")
        assert "collection docs (6 passages) · policy edge · edge only (no cloud URL)" in ui.output
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "edgecloud-qa" in page.text
        assert ui.stop(signal.SIGTERM) == 0 and "web UI stopped" in ui.output
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=5)
    finally:
        ui.kill()


@pytest.mark.slow
@pytest.mark.network
def test_up_serves_the_stack_and_ctrl_c_stops_every_process(built: Path, tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    up = Served("up", "-c", "docs", "--qdrant-path", str(built), "--port", str(port),
                env={"XDG_DATA_HOME": str(tmp_path / "xdg")})
    try:
        url = f"http://127.0.0.1:{port}/"
        up.wait_for(f"web UI on {url}")
        startup_s = time.monotonic() - started
        assert "creating certificates in" in up.output  # first run: the cloud material is made
        assert (tmp_path / "xdg" / "ecqa" / "cloud" / "aes.key").is_file()
        assert "collection docs (6 passages) · policy cascade · cloud direct → gateway https://127.0.0.1:" in up.output
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "edgecloud-qa" in page.text

        family = psutil.Process(up.proc.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in family]
        assert any("cloud serve" in c for c in commands) and any("cloud.backend_server" in c for c in commands), commands

        assert up.stop(signal.SIGINT) == 0, up.output  # Ctrl-C, to `ecqa up` alone
        assert "stopped: web UI, edge, cloud gateway" in up.output
        _, alive = psutil.wait_procs(family, timeout=15)
        assert alive == [], [p.cmdline() for p in alive]
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=5)
        print(f"ecqa up: URL printed after {startup_s:.1f} s")
    finally:
        up.kill()
