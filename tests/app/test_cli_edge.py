"""`ecqa edge list` and the bad-input paths of `ecqa edge serve` (which fail before any model loads). The
plain-entry tests run an insecure fleet (ECQA_FLEET_INSECURE=1); the signed one is tests/pipelines/test_fleet.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import app
from cli_helpers import one_error_line
from edge.registry import FileRegistry, WorkerEntry

runner = CliRunner()


def ecqa(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


@pytest.fixture(autouse=True)
def insecure_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECQA_FLEET_INSECURE", "1")


def test_list_shows_live_workers_with_their_load(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    reg.put(WorkerEntry(id="edge-a", url="http://127.0.0.1:9001", model="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                        parameters="0.5B", quantization="Q4_K_M", prompt_tps=200.0, gen_tps=40.0, concurrency=1,
                        queue=2, in_flight=2))
    res = ecqa("edge", "list", "--registry", str(tmp_path / "reg"), "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["registry"] == str(tmp_path / "reg")
    (w,) = data["workers"]
    assert (w["id"], w["in_flight"], w["capacity"]) == ("edge-a", 2, 200.0)
    assert w["keys"]["/edge/edge-a/quantization"] == "Q4_K_M"
    res = runner.invoke(app, ["edge", "list", "--registry", str(tmp_path / "reg")],
                        env={"COLUMNS": "250", "ECQA_FLEET_INSECURE": "1"})
    assert res.exit_code == 0 and "edge-a" in res.stdout and "2 / 3" in res.stdout


def test_list_of_an_empty_registry_says_how_to_start_a_worker(tmp_path: Path) -> None:
    res = ecqa("edge", "list", "--registry", str(tmp_path / "none"))
    assert res.exit_code == 0 and "ecqa edge serve" in res.stdout


def test_list_uses_the_settings_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECQA_EDGE_REGISTRY", "file")
    FileRegistry(tmp_path / "xdg" / "ecqa" / "registry").put(WorkerEntry(id="w1", url="http://x", model="m"))
    data = json.loads(ecqa("edge", "list", "--json").stdout)
    assert [w["id"] for w in data["workers"]] == ["w1"]


def test_list_against_a_dead_redis_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert "start redis-server" in one_error_line(ecqa("edge", "list", "--registry", f"redis://127.0.0.1:{port}/0"))


@pytest.mark.parametrize("args, fragment", [
    (["--cores", "0-x"], "not a CPU list"),
    (["--cores", "4096"], "not available here"),
    (["--id", "bad/id"], "pick another --id"),
    (["--registry", "redis://127.0.0.1:notaport/0"], "redis://host:port/db"),
])
def test_serve_bad_input_is_one_line_before_any_model_loads(tmp_path: Path, args: list[str], fragment: str) -> None:
    line = one_error_line(ecqa("edge", "serve", "--registry", str(tmp_path / "reg"), *args))
    assert fragment in line


def test_serve_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_error_line(ecqa("edge", "serve", "--registry", str(tmp_path / "reg"), "--port", str(port)))
    assert "pick another --port" in line


def test_settings_refuse_an_unknown_dispatch_policy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ECQA_DISPATCH_POLICY", "fastest")
    line = one_error_line(ecqa("edge", "list", "--registry", str(tmp_path)))
    assert "dispatch_policy" in line
