"""The questions a user asks first, on the default index (`make run`'s: dev-a and the distractor
paragraphs), through the whole cascade with the real models — the edge's Qwen2.5-Coder-0.5B reading by
the packaged calibration's read plan, the real gateway over mutual TLS, the embedded cloud backend's
Qwen2.5-Coder-1.5B — in the CLI (`ecqa ask`) and in the UI's service (what the Ask tab calls).

When did the Normans conquer England? 1066. What is the capital of Mars? The documents do not say: no
answer. (Who was the first ruler of Normandy? Rollo — but both models answer "King Charles III of West
Francia" from the treaty sentence that names both: not reached, see issue 21's note.)

And the latency model predicts what an escalated question costs from the first question on: the first one from
what the gateway measured of itself at start-up, the next ones from the calls measured too."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud_helpers import SharedBackend
from typer.testing import CliRunner

from app.cli import app
from cloud.backend import EmbeddedBackend
from cloud.certs import load_server_material
from cloud.gateway import Gateway

pytestmark = [pytest.mark.slow, pytest.mark.network]
runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
QUESTIONS = [("When did the Normans conquer England?", "1066"), ("What is the capital of Mars?", "")]
FOLLOW_UPS = ["Who was the Norse leader?", "In what country is Normandy located?", "Who was the duke in the battle of Hastings?",
              "When were the Normans in Normandy?", "What is the original meaning of the word Norman?",
              "Who did Rollo sign the treaty of Saint-Clair-sur-Epte with?"]


@pytest.fixture(scope="module")
def default_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("default-index") / "qdrant"
    result = runner.invoke(app, ["index", "build", str(REPO / "data" / "squad-v2-dev-a.json"),
                                 str(REPO / "data" / "squad-v2-extra-paragraphs.json"), "--collection", "squad",
                                 "--qdrant-path", str(folder)])
    assert result.exit_code == 0, result.stderr
    return folder


@pytest.fixture
def cloud(material_dir: Path, embedded_backend: EmbeddedBackend, edge1_dir: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    # The answers are under test, not the 2-core machine's speed: the two models share its cores here.
    monkeypatch.setenv("ECQA_CLOUD_READ_TIMEOUT_S", "120")
    monkeypatch.setenv("ECQA_BUDGET_MS", "120000")
    with Gateway(load_server_material(material_dir), SharedBackend(embedded_backend), port=0, measure=True) as gw:
        monkeypatch.setenv("ECQA_CLOUD_URL", gw.url)
        monkeypatch.setenv("ECQA_CLOUD_DIR", str(edge1_dir))
        yield gw


def _right(answer: str, gold: str) -> bool:
    return gold in answer.lower() if gold else answer == ""


def test_the_first_questions_are_answered_right_in_the_cli(default_index: Path, cloud: Gateway) -> None:
    for question, gold in QUESTIONS:
        result = runner.invoke(app, ["ask", question, "--policy", "cascade", "--collection", "squad",
                                     "--qdrant-path", str(default_index), "--json"])
        assert result.exit_code == 0, result.stderr
        data = json.loads(result.stdout)
        assert _right(data["answer"], gold), (question, data["answer"], data["decision"])
        d = data["decision"]
        assert not d["degraded"], d
        if d["route"] == "cloud":
            # Each `ecqa ask` is a first question: its prediction's cloud term is what the gateway measured at start-up
            # (an answer over fresh passages and the same once read, its reply's decoding taken out: a fixed cost, a
            # cost per new passage character and per generated token), for this question's passages, all new to the
            # cloud — not the default guess (800 ms, which predicted 0.46x of the total) nor the cold answer alone
            # (1.3x). Here: 1.01x, 1.04x and 1.15x in three runs. One answer is one sample: the gateway's own warm
            # answer varies by 1.4-2.1 s between runs on this shared 2-core machine, hence the wider bounds than the
            # session's median below.
            assert d["predicted_fresh_chars"] == sum(len(p["text"]) for p in data["passages"]), d
            assert 0.75 < d["predicted_total_ms"] / d["measured_total_ms"] < 1.3, d


def test_the_first_questions_are_answered_right_in_the_ui(default_index: Path, cloud: Gateway,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from app.ui_service import UiService
    from pipelines.settings import Settings

    monkeypatch.setenv("ECQA_QDRANT_PATH", str(default_index))
    with UiService.open(Settings(collection="squad")) as service:
        for question, gold in QUESTIONS:
            data = service.ask(question, "cascade", use_cache=False).result
            assert _right(data["answer"], gold), (question, data["answer"], data["decision"])
        # Then a session's worth of questions sent to the cloud, some of whose passages it has read already: the
        # latency model's predicted T_total against the measured one, within 20% at the median (0.95: 0.79-0.96
        # in one run; seeded but not fitted to the calls, the read passages' questions came out at 0.69-0.77).
        ratios = []
        for question in FOLLOW_UPS:
            d = service.ask(question, "cloud", use_cache=False).result["decision"]
            assert d["route"] == "cloud" and not d["degraded"], d
            ratios.append(d["predicted_total_ms"] / d["measured_total_ms"])
        assert 0.8 <= statistics.median(ratios) <= 1.2, ratios
