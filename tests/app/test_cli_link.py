"""``ecqa link`` run the way a user runs it: CliRunner in-process, and the console script in a
subprocess for the long-running proxy."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import one_error_line
from typer.testing import CliRunner

from app.cli import app
from netem.measure import EchoServer

runner = CliRunner()
ECQA = str(Path(sys.executable).parent / "ecqa")




@pytest.mark.network
def test_measure_json_reports_values_within_20_percent() -> None:
    result = runner.invoke(app, ["link", "measure", "--profile", "5g", "--json"])
    assert result.exit_code == 0, result.stderr
    r = json.loads(result.stdout)
    assert (r["profile"], r["target_rtt_ms"], r["target_mbit"]) == ("5g", 10.0, 100.0)
    assert 8.0 <= r["rtt_ms"] <= 12.0 and 80.0 <= r["mbit"] <= 120.0
    assert r["rtt_ratio"] == pytest.approx(r["rtt_ms"] / 10.0, abs=1e-3)
    assert r["within_tolerance"] is True and r["pings"] == 20


@pytest.mark.network
def test_measure_prints_a_table() -> None:
    result = runner.invoke(app, ["link", "measure", "-p", "lan"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if " lan " in line)
    cells = [c.strip() for c in row.strip("│┃ ").split("│")]
    assert cells[0] == "lan" and cells[1] == "2" and cells[3] == "1000" and cells[5] == "yes"
    rtt_ms, mbit = float(cells[2]), float(cells[4])
    assert abs(rtt_ms - 2.0) <= 0.4 and abs(mbit - 1000.0) <= 200.0  # within 20% of 2 ms and 1000 Mbit/s
    assert "target RTT ms" in result.stdout and "within 20%?" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["measure", "--profile", "moon"], "unknown link profile 'moon' — choose one of: lan, 5g, wifi, congested"),
        (["proxy", "--profile", "moon", "--target", "127.0.0.1:1"], "unknown link profile 'moon'"),
        (["proxy", "--profile", "5g", "--target", "gateway"], "bad address 'gateway' — give HOST:PORT"),
        (["proxy", "--profile", "5g", "--target", "127.0.0.1:99999"], "bad address '127.0.0.1:99999'"),
        (["proxy", "--profile", "5g", "--target", "127.0.0.1:1", "--listen", "70000"], "bad --listen port 70000"),
    ],
)
def test_bad_input_is_one_red_line_and_exit_2(args: list[str], message: str) -> None:
    assert message in one_error_line(runner.invoke(app, ["link", *args]))


@pytest.mark.network
def test_proxy_on_a_taken_port_is_one_red_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["link", "proxy", "-p", "lan", "--target", "127.0.0.1:1", "--listen", str(port)])
    assert f"cannot listen on 127.0.0.1:{port}" in one_error_line(result)


@pytest.mark.network
def test_proxy_command_forwards_until_ctrl_c() -> None:
    with EchoServer() as echo:
        target = f"{echo.address[0]}:{echo.address[1]}"
        proc = subprocess.Popen([ECQA, "link", "proxy", "--profile", "lan", "--target", target],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            banner = proc.stdout.readline()
            assert banner.startswith("link lan (2 ms RTT, 1000 Mbit/s): listening on 127.0.0.1:")
            assert banner.rstrip().endswith(f"-> {target} — Ctrl-C stops")
            port = int(banner.split("listening on 127.0.0.1:")[1].split()[0])
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"through the emulated link")
                sock.shutdown(socket.SHUT_WR)
                echoed = b""
                while data := sock.recv(1024):
                    echoed += data
            assert echoed == b"through the emulated link"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert out.strip() == "link stopped" and "Traceback" not in err
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
