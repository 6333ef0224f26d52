"""`ecqa ask --policy cloud` with personal data in the question and the passage: a real index, the real edge, the
real gateway over mutual TLS; its backend is the fake that records every request it receives (a process boundary;
the real Qwen round trip is tested in test_cloud_ask.py). None of the values reach it; the answer has them back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cloud_helpers import FakeOpenAI, prompt_text
from typer.testing import CliRunner

from app.cli import app
from cloud.gateway import Gateway

pytestmark = [pytest.mark.network, pytest.mark.slow]
runner = CliRunner()

PASSAGE = ("Jane Roe paid the Brindlewick invoice with card 4111 1111 1111 1111 in March. Her e-mail is "
           "jane.roe@example.org and her phone +44 20 7946 0958. Marcus Whitfield approved it from 10.0.0.7, "
           "with the IBAN GB82 WEST 1234 5698 7654 32 on file.")
QUESTION = "Who paid the Brindlewick invoice, Jane Roe (jane.roe@example.org, +44 20 7946 0958) with card 4111 1111 1111 1111?"
VALUES = ("Jane", "Roe", "jane.roe", "7946", "4111", "Marcus", "Whitfield", "10.0.0.7", "GB82", "5698")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pii")
    (root / "invoices.txt").write_text(PASSAGE + "\n")
    folder = root / "qdrant"
    assert runner.invoke(app, ["index", "build", str(root / "invoices.txt"), "--qdrant-path", str(folder)]).exit_code == 0
    return folder


def _ask(index_dir: Path, gateway: Gateway, edge1_dir: Path, *extra: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["ask", QUESTION, "--policy", "cloud", "--qdrant-path", str(index_dir), "--cloud-url",
                                 gateway.url, "--cloud-dir", str(edge1_dir), "--json", "--budget-ms", "120000", *extra])
    return result.exit_code, result.stdout, result.stderr


def test_no_value_reaches_the_backend_and_the_answer_has_the_name_back(index_dir: Path, gateway: Gateway,
                                                                       edge1_dir: Path, fake_backend: FakeOpenAI) -> None:
    fake_backend.text = " <PERSON_1>"  # the cloud answers with the placeholder it was sent
    code, stdout, stderr = _ask(index_dir, gateway, edge1_dir)
    assert code == 0, stderr
    data = json.loads(stdout)
    received = "\n".join(prompt_text(c) for c in fake_backend.calls)
    assert fake_backend.calls and "<PERSON_1>" in received and "<CARD_1>" in received
    for value in VALUES:
        assert value not in received, value
        assert value not in json.dumps(data["sent"])  # what the JSON says was sent is what was sent
    assert (data["tier"], data["answer"], data["restored"]) == ("cloud", "Jane Roe", True)
    assert data["redactions"] == {"name": 2, "email": 1, "phone": 1, "card": 1, "ip": 1, "iban": 1}
    assert data["pii_undetected"] == ["place", "organization"] and data["pii"] == "redact"
    assert data["passages"][0]["answer_span"] is not None  # the restored answer is found in the original passage
    t = data["timings_ms"]
    assert 0 < t["redact"] <= t["seal"]  # the redaction is timed, with the seal (stage seal_open)
    metrics = gateway.metrics.render()  # counted by kind, never by value
    assert 'ecqa_gateway_redacted_requests_total{kind="any"} 1' in metrics
    assert 'ecqa_gateway_redacted_requests_total{kind="card"} 1' in metrics and "4111" not in metrics


def test_block_refuses_with_exit_2_and_sends_nothing(index_dir: Path, gateway: Gateway, edge1_dir: Path,
                                                     fake_backend: FakeOpenAI) -> None:
    code, stdout, stderr = _ask(index_dir, gateway, edge1_dir, "--pii", "block")
    assert code == 2 and stdout == "" and fake_backend.calls == []
    line = stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "1 name, 1 email, 1 phone number, 1 card" in line and "not sent to the cloud" in line
    assert not any(v in line for v in VALUES)


def test_off_sends_everything_as_it_is(index_dir: Path, gateway: Gateway, edge1_dir: Path,
                                       fake_backend: FakeOpenAI) -> None:
    code, stdout, stderr = _ask(index_dir, gateway, edge1_dir, "--pii", "off")
    assert code == 0, stderr
    data = json.loads(stdout)
    assert "jane.roe@example.org" in "\n".join(prompt_text(c) for c in fake_backend.calls)
    assert data["redactions"] == {} and data["restored"] is False and data["pii"] == "off"


def test_a_bad_pii_mode_is_one_line(index_dir: Path, gateway: Gateway, edge1_dir: Path) -> None:
    code, _, stderr = _ask(index_dir, gateway, edge1_dir, "--pii", "maybe")
    assert code == 2 and "pii" in stderr and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
