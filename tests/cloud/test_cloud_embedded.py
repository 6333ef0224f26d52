"""The real embedded backend: gemma-3-270m Q4_K_M in a child process behind the real gateway."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from cloud_helpers import SharedBackend
from haystack import Document

from cloud.backend import EmbeddedBackend
from cloud.certs import load_server_material
from cloud.cloud_answerer import CloudAnswerer
from cloud.gateway import Gateway
from cloud.models import GEMMA_NAME, default_cloud_model_path
from cloud.prompting import build_prompt
from cloud.wire import Passage

pytestmark = [pytest.mark.slow, pytest.mark.network]

PASSAGE = (
    "The Brindlewick Orchestra was founded in 1887 by the cellist Amara Velt. It performs every winter in the "
    "Copperdome concert hall."
)
PROMPT = build_prompt("Who founded the Brindlewick Orchestra?", [Passage("Brindlewick Orchestra", PASSAGE)])


def test_model_is_assembled_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = default_cloud_model_path()
    assert path == tmp_path / "ecqa" / "models" / f"{GEMMA_NAME}.gguf"
    assert path.read_bytes()[:4] == b"GGUF" and path.stat().st_size > 200_000_000
    stamp = path.with_name(path.name + ".sha256")
    assert len(stamp.read_text().strip()) == 64
    mtime = path.stat().st_mtime_ns
    assert default_cloud_model_path() == path and path.stat().st_mtime_ns == mtime  # not re-assembled
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]


def test_completion_with_token_logprobs(embedded_backend: EmbeddedBackend) -> None:
    comp = embedded_backend.complete(PROMPT, 8, ("\n",))
    assert comp.text.strip() == "Amara Velt"
    assert comp.model == GEMMA_NAME and comp.finish_reason == "stop"
    assert 0 < comp.completion_tokens == len(comp.token_logprobs) <= 8
    assert all(lp <= 0.0 and math.isfinite(lp) for lp in comp.token_logprobs)
    assert 150 < comp.prompt_tokens < 400  # instruction + 3 examples + the passage
    assert comp.timings_ms["prefill"] > 0 and comp.timings_ms["decode"] > 0
    # Greedy: the same prompt gives the same tokens (and the prefix cache does not change them).
    again = embedded_backend.complete(PROMPT, 8, ("\n",))
    assert again.text == comp.text and again.token_logprobs == pytest.approx(comp.token_logprobs, abs=1e-3)
    assert again.cached_prompt_tokens == again.prompt_tokens - 1  # all but the last prompt token reused


def test_round_trip_through_the_gateway(embedded_backend: EmbeddedBackend, material_dir: Path, edge1_dir: Path) -> None:
    docs = [Document(id="b", content=PASSAGE, meta={"title": "Brindlewick Orchestra"})]
    with Gateway(load_server_material(material_dir), SharedBackend(embedded_backend), port=0) as gw:
        cloud = CloudAnswerer(url=gw.url, cloud_dir=str(edge1_dir))
        out = cloud.run(question="Who founded the Brindlewick Orchestra?", documents=docs)
        cloud.close()
        metrics = gw.metrics.render()
    assert "Amara Velt" in out["answer"]
    start, end = out["passages"][0]["answer_span"]
    assert "Amara Velt" in docs[0].content[start:end]
    assert 0.3 < out["confidence"] <= 1.0
    assert out["model"] == GEMMA_NAME and out["usage"]["prompt_tokens"] > 150  # few-shot examples + passage
    t = out["timings"]
    assert t["cloud"] >= t["generate"] >= t["prefill"] + t["decode"] and t["decode"] > 0
    assert "ecqa_gateway_backend_latency_seconds_count 1" in metrics


def test_child_process_stops_with_close() -> None:
    backend = EmbeddedBackend(n_ctx=512)
    backend.warm_up()
    pid = backend.pid
    assert pid is not None and os.path.exists(f"/proc/{pid}")
    backend.close()
    assert not os.path.exists(f"/proc/{pid}") and backend.pid is None
    backend.close()  # idempotent

