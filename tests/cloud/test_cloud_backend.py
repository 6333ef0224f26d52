"""The OpenAI-compatible backend client, the embedded server's request checks, the prompt and
the reply parsing (no model loaded: the real model is in test_cloud_embedded.py)."""

from __future__ import annotations

import math

import pytest
from cloud_helpers import FAKE_MODEL, FakeOpenAI

from cloud.backend import OpenAIBackend, _answer_logprobs, check_backend_url
from cloud.backend_server import BadRequest, parse_completion_request
from cloud.errors import BackendError, CloudModelError
from cloud.models import model_cache_dir, resolve_model_path
from cloud.prompting import (
    EXAMPLES,
    NO_ANSWER_WORD,
    build_prompt,
    clean_reply,
    find_span,
    parse_reply,
)
from cloud.wire import Passage


@pytest.mark.network
def test_client_sends_greedy_requests_and_parses_logprobs(fake_backend: FakeOpenAI) -> None:
    fake_backend.logprobs = [-0.5, -1.5]
    backend = OpenAIBackend(fake_backend.url + "/v1/")  # base URL given with /v1: accepted
    comp = backend.complete("Passage: x\nQuestion: y\nAnswer:", 7, ("\n",))
    assert backend.name == FAKE_MODEL  # resolved from /v1/models
    assert (comp.text, comp.token_logprobs, comp.prompt_tokens, comp.completion_tokens) == (" Miret", (-0.5, -1.5), 321, 2)
    assert (comp.finish_reason, comp.model) == ("stop", FAKE_MODEL)
    call = fake_backend.calls[0]
    assert call == {"model": FAKE_MODEL, "prompt": "Passage: x\nQuestion: y\nAnswer:", "max_tokens": 7, "temperature": 0.0,
                    "stop": ["\n"], "logprobs": 1, "repeat_penalty": 1.0, "repetition_penalty": 1.0}
    backend.close()


@pytest.mark.network
def test_client_errors_say_what_to_do(fake_backend: FakeOpenAI) -> None:
    with pytest.raises(BackendError, match=r"does not serve model 'other' \(it serves: fake-llm\) — fix --backend-model"):
        OpenAIBackend(fake_backend.url, model="other").warm_up()
    fake_backend.status = 503
    backend = OpenAIBackend(fake_backend.url)
    with pytest.raises(BackendError, match="backend answered HTTP 503 — check the backend's own log") as info:
        backend.complete("secret prompt", 4, ("\n",))
    assert "secret" not in str(info.value)  # the backend's message quotes the prompt; the error does not
    backend.close()
    fake_backend.stop()
    with pytest.raises(BackendError, match=r"does not answer \(ConnectError\) — start it \(e.g. `vllm serve MODEL --port 8000`\)"):
        OpenAIBackend(fake_backend.url).warm_up()


def test_backend_url_check() -> None:
    assert check_backend_url("http://gpu-box:8000/v1/") == "http://gpu-box:8000"
    assert check_backend_url(" https://vllm.internal ") == "https://vllm.internal"
    for bad in ("ftp://x", "localhost:8000", "http://"):
        with pytest.raises(BackendError, match="is not an http\\(s\\) URL"):
            check_backend_url(bad)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"prompt": "p", "temperature": 0.7}, "decodes greedily — send temperature 0"),
        ({"prompt": "p", "repeat_penalty": 1.1}, "send repeat_penalty 1.0"),
        ({"prompt": "p", "repetition_penalty": 1.2}, "send repetition_penalty 1.0"),
        ({"prompt": "p", "stream": True}, "'stream' is not supported"),
        ({"prompt": "p", "n": 2}, "'n' must be 1"),
        ({"prompt": ""}, "'prompt' must be one non-empty string"),
        ({"prompt": ["a", "b"]}, "'prompt' must be one non-empty string"),
        ({"prompt": "p", "max_tokens": 0}, "'max_tokens' must be an integer"),
        ({"prompt": "p", "stop": [""]}, "'stop' must be"),
        ({"prompt": "p", "logprobs": 5}, "'logprobs' must be 0 or 1"),
    ],
)
def test_embedded_server_refuses_what_it_does_not_do(body: dict, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment):
        parse_completion_request(body, n_ctx=2048)


def test_embedded_server_accepts_the_gateway_request() -> None:
    body = {"model": "m", "prompt": ["the prompt"], "max_tokens": 24, "temperature": 0, "stop": "\n", "logprobs": 1,
            "repeat_penalty": 1.0, "repetition_penalty": 1.0}
    assert parse_completion_request(body, n_ctx=2048) == ("the prompt", 24, ["\n"], 1)


def test_prompt_is_few_shot_completion_ending_with_the_question() -> None:
    prompt = build_prompt("Who  founded\nit?", [Passage("T", "Amara Velt founded\nthe orchestra."), Passage("", "Other.")])
    assert prompt.startswith("Answer each question with a short phrase copied from its passages.")
    assert prompt.count("\nAnswer:") == len(EXAMPLES) + 1 and f"Answer: {NO_ANSWER_WORD}\n" in prompt
    assert prompt.endswith("Passage: Amara Velt founded the orchestra.\nPassage: Other.\nQuestion: Who founded it?\nAnswer:")
    # The instruction and examples are a fixed prefix (KV/prefix caches reuse it).
    assert build_prompt("x?", []).split("Passage: (no passage)")[0] == prompt.split("Passage: Amara")[0]


def test_reply_parsing_answer_no_answer_confidence_spans() -> None:
    passages = [Passage("", "It performs in the Copperdome concert hall."), Passage("", "Founded by Amara Velt.")]
    answer, conf, spans = parse_reply(' "Amara Velt."', [-0.1, -0.3], passages)
    assert (answer, spans) == ("Amara Velt", (None, (11, 21)))
    assert conf == pytest.approx(math.exp(-0.2), abs=1e-4)
    answer, conf, spans = parse_reply(" the Copperdome concert hall", [-0.2], passages)
    assert spans == ((15, 42), None)
    answer, conf, spans = parse_reply(" Paris", [-0.2], passages)  # not in any passage: halved
    assert answer == "Paris" and conf == pytest.approx(0.5 * math.exp(-0.2), abs=1e-4) and spans == (None, None)
    for reply in (" unanswerable", " Unanswerable.", "", " The passage does not say"):
        answer, conf, spans = parse_reply(reply, [-0.05], passages)
        assert answer == "" and spans == (None, None)
    assert parse_reply(" x", [], passages)[1] == 0.0
    assert clean_reply("Answer: 1066.") == "1066." and clean_reply(" U.S.") == "U.S."
    assert find_span("an apple", "She ate apple pie") == (8, 13) and find_span("", "x") is None


def test_model_path_resolution(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CloudModelError, match="does not exist — set ECQA_CLOUD_MODEL_PATH"):
        resolve_model_path(str(tmp_path / "nope.gguf"))
    (tmp_path / "x.gguf").write_bytes(b"NOTGGUF")
    with pytest.raises(CloudModelError, match="is not a GGUF file"):
        resolve_model_path(str(tmp_path / "x.gguf"))
    (tmp_path / "y.gguf").write_bytes(b"GGUF....")
    assert resolve_model_path(str(tmp_path / "y.gguf")) == tmp_path / "y.gguf"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert model_cache_dir() == tmp_path / "cache" / "ecqa" / "models"


def test_logprobs_cover_the_answer_tokens_only() -> None:
    # vLLM's shape: the stop token ("\n") is cut from the text but still has a logprob.
    vllm = {"tokens": [" Am", "ara", " Velt", "\n"], "token_logprobs": [-1.0, -0.01, -0.06, -0.7]}
    assert _answer_logprobs(" Amara Velt", vllm) == [-1.0, -0.01, -0.06]
    assert _answer_logprobs("", {"tokens": ["\n"], "token_logprobs": [-0.2]}) == []
    # No token list (llama.cpp-style servers that already exclude the stop token): all kept, None/inf dropped.
    assert _answer_logprobs(" x", {"token_logprobs": [-0.5, None, float("-inf"), -0.25]}) == [-0.5, -0.25]
