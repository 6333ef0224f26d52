"""The real embedded backend: the default cloud model, Qwen2.5-Coder-1.5B-Instruct Q4_K_M, in a
child process behind the real gateway (both endpoints, the prefix cache, the answerability
probe); and gemma-3-270m, a base model, through /v1/completions."""

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
from cloud.errors import BackendContextError, BackendError
from cloud.gateway import Gateway
from reading.model_manifest import DEFAULT_CLOUD_MODEL
from reading.models import model_path, spec_for_path
from reading.prompts import BASE_STOP, Passage, answer_messages, base_answer_prompt, p_yes, probe_messages

pytestmark = [pytest.mark.slow, pytest.mark.network]

QWEN = "qwen2.5-coder-1.5b-instruct"
QUESTION = "Who founded the Brindlewick Orchestra?"
PASSAGE = (
    "The Brindlewick Orchestra was founded in 1887 by the cellist Amara Velt. It performs every winter in the "
    "Copperdome concert hall."
)
PASSAGES = [Passage("Brindlewick Orchestra", PASSAGE)]
ZORVATH = (
    "Zorvath Island is a volcanic island in the Quellan Sea. Its capital is Miret, a harbour town of about 4,000 "
    "people founded by salt traders in 1612."
)


def cloud_answerer(gateway: Gateway, edge1_dir: Path) -> CloudAnswerer:
    # The model, not the timeout, is under test: the 2-core test machine may be busy (prefill ~25 tok/s then).
    return CloudAnswerer(url=gateway.url, cloud_dir=str(edge1_dir), read_timeout_s=120.0)


def test_default_cloud_model_is_the_verified_qwen_chat_model(embedded_backend: EmbeddedBackend) -> None:
    assert DEFAULT_CLOUD_MODEL == QWEN
    path = model_path(QWEN)  # pulled and verified against the manifest
    assert path.name == "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" and path.read_bytes()[:4] == b"GGUF"
    spec = spec_for_path(path)
    assert spec is not None and (spec.name, spec.prompt_family) == (QWEN, "chat")
    # The child serves it under its manifest name, and says it reads chat prompts.
    assert (embedded_backend.name, embedded_backend.prompt_family) == (QWEN, "chat")


def test_chat_completion_with_token_logprobs_and_the_prefix_cache(embedded_backend: EmbeddedBackend) -> None:
    messages = answer_messages(QUESTION, PASSAGES)
    comp = embedded_backend.chat(messages, 12)
    assert "Amara Velt" in comp.text and len(comp.text) < 40  # a short phrase, as the system prompt asks
    assert comp.model == QWEN and comp.finish_reason == "stop"
    assert 0 < comp.completion_tokens == len(comp.token_logprobs) <= 12
    assert all(lp <= 0.0 and math.isfinite(lp) for lp in comp.token_logprobs)
    assert 70 < comp.prompt_tokens < 130  # the chat template, the system prompt, the passage, the question (93)
    assert comp.timings_ms["prefill"] > 0 and comp.timings_ms["decode"] > 0
    assert comp.top_logprobs == ()  # not asked for
    # Greedy: the same messages give the same tokens; the system prompt and the passage (everything before
    # "Question: ") come from the backend's passage cache, the question and the task are prefilled after them.
    again = embedded_backend.chat(messages, 12)
    assert again.text == comp.text and again.token_logprobs == pytest.approx(comp.token_logprobs, abs=1e-6)
    assert 40 < again.cached_prompt_tokens < again.prompt_tokens - 10
    # The probe reads the same passage: the same cached prefix, then its question and task.
    probe = embedded_backend.chat(probe_messages(QUESTION, PASSAGES), 1, (), 20)
    assert probe.cached_prompt_tokens == again.cached_prompt_tokens < probe.prompt_tokens
    # …and its first token comes with its top alternatives, best first; the chosen one is the best.
    assert probe.completion_tokens == 1 and len(probe.top_logprobs) == 1
    top = probe.top_logprobs[0]
    assert 10 <= len(top) <= 20 and all(lp <= 0.0 for lp in top.values())
    assert list(top.values()) == sorted(top.values(), reverse=True)
    assert probe.token_logprobs[0] == pytest.approx(max(top.values()), abs=1e-6)
    assert probe.text.strip().lower() == "yes" and p_yes(top) > 0.9


def test_round_trip_through_the_gateway(embedded_backend: EmbeddedBackend, material_dir: Path, edge1_dir: Path) -> None:
    docs = [Document(id="b", content=PASSAGE, meta={"title": "Brindlewick Orchestra"})]
    with Gateway(load_server_material(material_dir), SharedBackend(embedded_backend), port=0) as gw:
        cloud = cloud_answerer(gw, edge1_dir)
        out = cloud.run(question=QUESTION, documents=docs)
        cloud.close()
        metrics = gw.metrics.render()
    assert "Amara Velt" in out["answer"]
    start, end = out["passages"][0]["answer_span"]
    assert "Amara Velt" in docs[0].content[start:end]
    assert 0.3 < out["confidence"] <= 1.0 and out["p_answerable"] > 0.8
    # Three prompts of the one passage (~80 tokens each: probe, answer, check); the passage was read by the test
    # above, so only each step's question and task are prefilled. The probe's, the answer's and the check's tokens.
    usage = out["usage"]
    assert out["model"] == QWEN and usage["prompt_tokens"] + usage["cached_prompt_tokens"] > 3 * 70
    assert 3 * 10 < usage["prompt_tokens"] < usage["cached_prompt_tokens"] and usage["completion_tokens"] >= 3
    t = out["timings"]
    assert t["cloud"] >= t["generate"] >= t["prefill"] + t["decode"] and t["decode"] > 0
    assert "ecqa_gateway_backend_latency_seconds_count 1\n" in metrics  # one observation: the whole reading


def test_answerability_of_controlled_passages(embedded_backend: EmbeddedBackend, material_dir: Path,
                                              edge1_dir: Path) -> None:
    """The probe tells a question the passage answers from one it does not; measured with this
    model: 0.97 vs 0.36-0.38. (The second question's answer itself may well be a confident span such
    as "4,000" — which is why the cascade gates cloud answers on p(answerable).)"""
    docs = [Document(id="z", content=ZORVATH, meta={"title": "Zorvath Island"})]
    with Gateway(load_server_material(material_dir), SharedBackend(embedded_backend), port=0) as gw:
        cloud = cloud_answerer(gw, edge1_dir)
        stated = cloud.run(question="What is the capital of Zorvath Island?", documents=docs)
        not_stated = cloud.run(question="What is the population of the Quellan Sea?", documents=docs)
        cloud.close()
    assert stated["answer"] == "Miret"
    assert stated["p_answerable"] >= 0.8
    assert not_stated["p_answerable"] < 0.5 and not_stated["p_answerable"] < stated["p_answerable"]


def test_base_model_gemma_through_completions_and_its_child_stops_with_close() -> None:
    backend = EmbeddedBackend(model_path="gemma-3-270m", n_ctx=1024)  # selectable by manifest name
    backend.warm_up()
    pid = backend.pid
    try:
        assert pid is not None and os.path.exists(f"/proc/{pid}")
        assert (backend.name, backend.prompt_family) == ("gemma-3-270m", "base")
        comp = backend.complete(base_answer_prompt(QUESTION, PASSAGES), 8, BASE_STOP, top_logprobs=5)
        assert comp.text.strip() == "Amara Velt" and comp.finish_reason == "stop" and comp.model == "gemma-3-270m"
        assert 0 < comp.completion_tokens == len(comp.token_logprobs) <= 8
        assert all(lp <= 0.0 and math.isfinite(lp) for lp in comp.token_logprobs)
        assert 150 < comp.prompt_tokens < 400  # the instruction, 3 few-shot examples, the passage
        assert len(comp.top_logprobs) >= comp.completion_tokens and all(len(t) == 5 for t in comp.top_logprobs)
        assert comp.token_logprobs[0] == pytest.approx(max(comp.top_logprobs[0].values()), abs=1e-6)
        # No chat template: the chat endpoint refuses, so the gateway must send it completion prompts.
        with pytest.raises(BackendError, match="HTTP 400 to /v1/chat/completions"):
            backend.chat(answer_messages(QUESTION, PASSAGES), 4)
    finally:
        backend.close()
    assert not os.path.exists(f"/proc/{pid}") and backend.pid is None
    backend.close()  # idempotent



def test_the_embedded_backend_answers_only_the_gateway(embedded_backend: EmbeddedBackend) -> None:
    """Defect #12.4: a local process without the token is refused (401); the token is in neither the
    child's argv nor its environment."""
    import httpx

    assert embedded_backend.url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=embedded_backend.url, trust_env=False, timeout=10) as http:
        assert http.get("/v1/models").status_code == 401
        for path, body in (("/v1/completions", {"prompt": "Question: who?", "max_tokens": 4, "temperature": 0}),
                           ("/v1/chat/completions", {"messages": [{"role": "user", "content": "who?"}], "max_tokens": 4})):
            assert http.post(path, json=body).status_code == 401
    token = embedded_backend._client.api_key  # type: ignore[union-attr]
    assert token and len(token) >= 32
    proc = Path(f"/proc/{embedded_backend.pid}")
    assert token.encode() not in (proc / "cmdline").read_bytes() and token.encode() not in (proc / "environ").read_bytes()
    reply = embedded_backend.chat(answer_messages(QUESTION, PASSAGES), 8)  # the gateway's client still works
    assert "Amara Velt" in reply.text


def test_a_prompt_over_the_embedded_context_is_typed_with_its_numbers(embedded_backend: EmbeddedBackend) -> None:
    """Issue 23: the embedded server says "prompt over the context" by its error type and numbers (as llama.cpp's
    server does), and the client maps it by that type — not by the wording of a message."""
    long = [{"role": "user", "content": "Rollo was a Viking leader. " * 1200}]
    with pytest.raises(BackendContextError) as exc:
        embedded_backend.chat(long, 8)
    assert exc.value.context_tokens == 2048 and exc.value.prompt_tokens > 2048 - 8
