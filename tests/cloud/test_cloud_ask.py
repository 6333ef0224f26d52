"""`ecqa ask … --policy cloud` end to end: a real index, retrieval on the edge, the real gateway
over mutual TLS; with the fake backend (checks the contract) and the real gemma (slow)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from cli_helpers import one_error_line
from cloud_helpers import FakeOpenAI, SharedBackend
from typer.testing import CliRunner

from app.cli import app
from cloud.backend import EmbeddedBackend
from cloud.certs import load_server_material
from cloud.gateway import Gateway
from pipelines.calibration import DEFAULT_CALIBRATION

pytestmark = pytest.mark.network
runner = CliRunner()
QUESTION = "What is the capital of Zorvath Island?"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory, unseen_squad: Path) -> Path:
    folder = tmp_path_factory.mktemp("cloud-ask") / "qdrant"
    result = runner.invoke(app, ["index", "build", str(unseen_squad), "--qdrant-path", str(folder)])
    assert result.exit_code == 0, result.stderr
    return folder


def ask(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["ask", QUESTION, "--policy", "cloud", *args])


def test_ask_cloud_json_contract(index_dir: Path, gateway: Gateway, edge1_dir: Path, fake_backend: FakeOpenAI) -> None:
    result = ask("--qdrant-path", str(index_dir), "--cloud-url", gateway.url, "--cloud-dir", str(edge1_dir), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"answer", "tier", "confidence", "passages", "timings_ms", "usage", "bytes_up", "bytes_down"} <= set(data)
    assert (data["tier"], data["answer"], data["question"]) == ("cloud", "Miret", QUESTION)
    assert data["models"]["cloud"] == "fake-llm"
    assert data["usage"] == {"cloud_prompt_tokens": 321, "cloud_completion_tokens": 2}  # no edge generation
    assert data["bytes_up"] > 300 and data["bytes_down"] > 200
    t = data["timings_ms"]
    assert {"embed", "retrieve", "seal", "network", "cloud", "cloud_generate", "open", "total"} <= set(t)
    assert "generate" not in t  # policy cloud: the edge SLM did not run
    assert data["decision"]["route"] == "cloud" and not data["decision"]["degraded"]
    assert data["decision"]["predicted_total_ms"] > t["embed"]  # retrieval + transfer + RTT + cloud
    assert t["total"] >= t["embed"] + t["retrieve"] + t["cloud"]
    # Retrieval ran on the edge: the Zorvath passage is first, carries the span, and went up to the cloud.
    top = data["passages"][0]
    assert top["title"] == "Zorvath Island" and top["text"][top["answer_span"][0]:top["answer_span"][1]] == "Miret"
    assert len(data["passages"]) == 3 and len(fake_backend.calls) == 1
    assert "Its capital is Miret, a harbour town" in fake_backend.calls[0]["prompt"]


def test_ask_cloud_from_environment(
    index_dir: Path, gateway: Gateway, edge1_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECQA_CLOUD_URL", gateway.url)
    monkeypatch.setenv("ECQA_CLOUD_DIR", str(edge1_dir))
    result = ask("--qdrant-path", str(index_dir))
    assert result.exit_code == 0, result.stderr
    assert "Miret" in result.stdout and "cloud · confidence" in result.stdout




def test_ask_cloud_errors(index_dir: Path, edge1_dir: Path, tmp_path: Path) -> None:
    line = one_error_line(ask("--qdrant-path", str(index_dir)))
    assert "no gateway is configured — pass --cloud-url URL" in line
    line = one_error_line(ask("--qdrant-path", str(index_dir), "--cloud-url", "https://127.0.0.1:9", "--cloud-dir",
                              str(tmp_path / "nothing")))
    assert f"cloud directory {tmp_path / 'nothing'} does not exist — run `ecqa cloud init --dir" in line
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    # A gateway that is down is not a user error: the edge answers, flagged degraded, with the reason.
    result = ask("--qdrant-path", str(index_dir), "--cloud-url", f"https://127.0.0.1:{dead}", "--cloud-dir",
                 str(edge1_dir), "--json")
    assert result.exit_code == 0, result.stderr
    decision = json.loads(result.stdout)["decision"]
    assert decision["degraded"] and decision["route"] == "edge"
    assert "cannot connect to the cloud gateway" in decision["reason"] and "after 3 attempts" in decision["reason"]
    line = one_error_line(runner.invoke(app, ["ask", QUESTION, "--policy", "sky"]))
    assert "unknown policy 'sky' — choose one of: edge, cloud" in line


@pytest.mark.slow
def test_ask_cloud_with_the_real_model(
    index_dir: Path, embedded_backend: EmbeddedBackend, material_dir: Path, edge1_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The round trip is under test, not the calibrated confidence floor: keep every grounded answer.
    cal = json.loads(DEFAULT_CALIBRATION.read_text())
    cal["thresholds"]["cloud_min_confidence"] = 0.0
    (tmp_path / "cal.json").write_text(json.dumps(cal))
    monkeypatch.setenv("ECQA_CALIBRATION_PATH", str(tmp_path / "cal.json"))
    with Gateway(load_server_material(material_dir), SharedBackend(embedded_backend), port=0) as gw:
        result = ask("--qdrant-path", str(index_dir), "--cloud-url", gw.url, "--cloud-dir", str(edge1_dir), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["tier"], data["answer"], data["models"]["cloud"]) == ("cloud", "Miret", "gemma-3-270m-q4_k_m")
    assert 0.3 < data["confidence"] <= 1.0 and data["usage"]["cloud_prompt_tokens"] > 200
    assert data["timings_ms"]["cloud_generate"] > 10
