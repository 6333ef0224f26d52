"""The OpenAI-compatible backend client, the embedded server's request checks, the prompt and
the reply parsing (no model loaded: the real model is in test_cloud_embedded.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from cloud_helpers import CHAT_PATH, COMPLETIONS_PATH, FAKE_MODEL, FakeOpenAI

import cloud.gateway
import cloud.prompting
import cloud.wire
import reading.passages
import reading.prompts
from cloud.backend import (
    EmbeddedBackend,
    OpenAIBackend,
    _answer_logprobs,
    check_backend_url,
)
from cloud.backend_server import (
    BadRequest,
    parse_chat_request,
    parse_completion_request,
)
from cloud.errors import BackendError, CloudModelError
from reading.prompts import Passage

GREEDY = {"temperature": 0.0, "repeat_penalty": 1.0, "repetition_penalty": 1.0}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Question: y"}]


@pytest.mark.network
def test_completions_client_sends_greedy_requests_and_parses_logprobs(fake_backend: FakeOpenAI) -> None:
    fake_backend.logprobs = [-0.5, -1.5]
    backend = OpenAIBackend(fake_backend.url + "/v1/", prompt_family="base")  # base URL given with /v1: accepted
    assert backend.prompt_family == "base"
    backend.warm_up()
    comp = backend.complete("Passage: x\nQuestion: y\nAnswer:", 7, ("\n",))
    assert backend.name == FAKE_MODEL  # resolved from /v1/models
    assert (comp.text, comp.token_logprobs, comp.prompt_tokens, comp.completion_tokens) == (" Miret", (-0.5, -1.5), 321, 2)
    assert (comp.finish_reason, comp.model, comp.top_logprobs) == ("stop", FAKE_MODEL, ())
    assert fake_backend.paths == [COMPLETIONS_PATH]
    assert fake_backend.calls[0] == {"model": FAKE_MODEL, "prompt": "Passage: x\nQuestion: y\nAnswer:", "max_tokens": 7,
                                     "stop": ["\n"], "logprobs": 1, **GREEDY}
    # Top alternatives: `logprobs` is their number in the completions API.
    fake_backend.p_yes = 0.75
    probe = backend.complete("Is it stated (yes or no)?", 1, (), top_logprobs=20)
    assert fake_backend.calls[1]["logprobs"] == 20 and fake_backend.calls[1]["max_tokens"] == 1
    assert probe.top_logprobs == (fake_backend.probe_top(),)
    assert probe.top_logprobs[0]["Yes"] == pytest.approx(math.log(0.9 * 0.75))
    assert (probe.prompt_tokens, probe.cached_prompt_tokens) == (333, 320)
    backend.close()


@pytest.mark.network
def test_chat_client_sends_messages_and_parses_chat_logprobs(fake_backend: FakeOpenAI) -> None:
    fake_backend.text, fake_backend.logprobs = " Amara Velt", [-0.25, -0.5, -0.125]
    backend = OpenAIBackend(fake_backend.url)
    assert backend.prompt_family == "chat"  # the default: an instruct model behind vLLM
    backend.warm_up()
    assert backend.name == FAKE_MODEL
    comp = backend.chat(MESSAGES, 9)
    assert (comp.text, comp.token_logprobs, comp.prompt_tokens, comp.completion_tokens) == (
        " Amara Velt", (-0.25, -0.5, -0.125), 321, 3)
    assert (comp.finish_reason, comp.model, comp.top_logprobs) == ("stop", FAKE_MODEL, ())
    assert fake_backend.paths == [CHAT_PATH]
    # Chat logprobs are a flag; no top_logprobs field unless alternatives are asked for.
    assert fake_backend.calls[0] == {"model": FAKE_MODEL, "messages": MESSAGES, "max_tokens": 9, "stop": [],
                                     "logprobs": True, **GREEDY}
    fake_backend.p_yes = 0.3
    probe = backend.chat(MESSAGES, 1, (), top_logprobs=20)
    assert {k: fake_backend.calls[1][k] for k in ("logprobs", "top_logprobs", "max_tokens")} == (
        {"logprobs": True, "top_logprobs": 20, "max_tokens": 1})
    assert probe.text == "Yes" and probe.token_logprobs == pytest.approx((math.log(0.9 * 0.3),))
    assert probe.top_logprobs == (fake_backend.probe_top(),) and set(probe.top_logprobs[0]) == {"Yes", "No", " The"}
    assert reading.prompts.p_yes(probe.top_logprobs[0]) == pytest.approx(0.3)
    backend.close()


@pytest.mark.network
@pytest.mark.parametrize("endpoint", ["chat", "complete"])
def test_first_request_names_the_model_resolved_from_the_server(fake_backend: FakeOpenAI, endpoint: str) -> None:
    # No explicit warm_up(): the first request connects, resolves the model id and must send it.
    backend = OpenAIBackend(fake_backend.url)
    if endpoint == "chat":
        backend.chat(MESSAGES, 4)
    else:
        backend.complete("p", 4, ())
    assert [c["model"] for c in fake_backend.calls] == [FAKE_MODEL]
    backend.close()


@pytest.mark.network
def test_client_errors_say_what_to_do(fake_backend: FakeOpenAI) -> None:
    with pytest.raises(BackendError, match=r"does not serve model 'other' \(it serves: fake-llm\) — fix --backend-model"):
        OpenAIBackend(fake_backend.url, model="other").warm_up()
    fake_backend.status = 503
    backend = OpenAIBackend(fake_backend.url)
    with pytest.raises(BackendError, match="backend answered HTTP 503 to /v1/completions — check the backend's own log") as info:
        backend.complete("secret prompt", 4, ("\n",))
    assert "secret" not in str(info.value)  # the backend's message quotes the prompt; the error does not
    with pytest.raises(BackendError, match="backend answered HTTP 503 to /v1/chat/completions — check") as info:
        backend.chat([{"role": "user", "content": "secret question"}], 4)
    assert "secret" not in str(info.value)
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
        ({"prompt": "p", "max_tokens": 2049}, "'max_tokens' must be an integer from 1 to 2048"),
        ({"prompt": "p", "stop": [""]}, "'stop' must be"),
        ({"prompt": "p", "logprobs": 21}, "'logprobs' must be an integer from 0 to 20"),
        ({"prompt": "p", "logprobs": -1}, "'logprobs' must be an integer from 0 to 20"),
        ({"prompt": "p", "logprobs": True}, "'logprobs' must be an integer from 0 to 20"),
        ({"prompt": "p", "logprobs": "5"}, "'logprobs' must be an integer from 0 to 20"),
    ],
)
def test_embedded_server_refuses_what_it_does_not_do(body: dict, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment):
        parse_completion_request(body, n_ctx=2048)


def test_embedded_server_accepts_the_gateway_completion_requests() -> None:
    body = {"model": "m", "prompt": ["the prompt"], "max_tokens": 24, "temperature": 0, "stop": "\n", "logprobs": 1,
            "repeat_penalty": 1.0, "repetition_penalty": 1.0}
    assert parse_completion_request(body, n_ctx=2048) == ("the prompt", 24, ["\n"], 1)
    # The probe asks for the top 20 alternatives; 0 = the chosen token only; absent = no logprobs.
    assert parse_completion_request({**body, "logprobs": 20, "max_tokens": 1}, n_ctx=2048)[1:] == (1, ["\n"], 20)
    assert parse_completion_request({**body, "logprobs": 0}, n_ctx=2048)[3] == 0
    assert parse_completion_request({"prompt": "p"}, n_ctx=2048) == ("p", 16, [], None)


CHAT = {"messages": MESSAGES, "max_tokens": 8, "temperature": 0}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({**CHAT, "messages": []}, "'messages' must be a non-empty list"),
        ({**CHAT, "messages": "hello"}, "'messages' must be a non-empty list"),
        ({**CHAT, "messages": [{"role": "tool", "content": "x"}]}, "'messages' must be .*role: system\\|user\\|assistant"),
        ({**CHAT, "messages": [{"role": "user", "content": ["x"]}]}, "content: string"),
        ({**CHAT, "messages": [{"role": "user"}]}, "'messages' must be"),
        ({**CHAT, "messages": ["user: x"]}, "'messages' must be"),
        ({"max_tokens": 8}, "'messages' must be"),
        ({**CHAT, "logprobs": 1}, "'logprobs' must be true or false"),
        ({**CHAT, "logprobs": "true"}, "'logprobs' must be true or false"),
        ({**CHAT, "top_logprobs": 5}, "'top_logprobs' needs 'logprobs': true"),
        ({**CHAT, "logprobs": False, "top_logprobs": 5}, "'top_logprobs' needs 'logprobs': true"),
        ({**CHAT, "logprobs": True, "top_logprobs": 21}, "'top_logprobs' must be an integer from 0 to 20"),
        ({**CHAT, "logprobs": True, "top_logprobs": -1}, "'top_logprobs' must be an integer from 0 to 20"),
        ({**CHAT, "logprobs": True, "top_logprobs": 2.5}, "'top_logprobs' must be an integer from 0 to 20"),
        ({**CHAT, "temperature": 0.2}, "decodes greedily"),
        ({**CHAT, "max_tokens": 0}, "'max_tokens' must be an integer"),
        ({**CHAT, "stream": True}, "'stream' is not supported"),
        ([MESSAGES], "the body must be a JSON object"),
    ],
)
def test_embedded_server_refuses_bad_chat_requests(body: object, fragment: str) -> None:
    with pytest.raises(BadRequest, match=fragment):
        parse_chat_request(body, n_ctx=2048)


def test_embedded_server_accepts_the_gateway_chat_requests() -> None:
    # The answer and the probe as OpenAIBackend.chat sends them (extra keys such as "model" are ignored).
    answer = {**CHAT, "model": "m", "stop": [], "logprobs": True, "repeat_penalty": 1.0, "repetition_penalty": 1.0}
    assert parse_chat_request(answer, n_ctx=2048) == (MESSAGES, 8, [], True, 0)
    probe = {**answer, "max_tokens": 1, "top_logprobs": 20}
    assert parse_chat_request(probe, n_ctx=2048) == (MESSAGES, 1, [], True, 20)
    # Without logprobs; extra message keys (e.g. "name") are dropped.
    named = [{"role": "user", "content": "q", "name": "edge"}]
    assert parse_chat_request({"messages": named}, n_ctx=2048) == ([{"role": "user", "content": "q"}], 16, [], False, 0)


def test_the_gateway_prompts_are_the_shared_reading_ones() -> None:
    # One copy of the prompts and of the reading for both tiers (tests/reading/).
    assert cloud.prompting.messages is reading.prompts.messages and cloud.prompting.base_prompt is reading.prompts.base_prompt
    assert cloud.prompting.read_each is reading.passages.read_each and cloud.gateway.read_with is cloud.prompting.read_with
    assert cloud.wire.Passage is reading.prompts.Passage  # one passage type: the wire carries reading's


def test_embedded_backend_model_errors_name_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolved before any child process starts; reading's errors become the cloud's CloudModelError."""
    monkeypatch.setenv("ECQA_MODELS_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(CloudModelError, match="cloud model: model qwen2.5-coder-1.5b-instruct is not pulled — run "
                                              "`ecqa models pull qwen2.5-coder-1.5b-instruct`"):
        EmbeddedBackend().warm_up()  # '' = the default cloud model
    with pytest.raises(CloudModelError, match="model gemma-3-270m is not pulled — run `ecqa models pull gemma-3-270m`"):
        EmbeddedBackend(model_path="gemma-3-270m").warm_up()
    with pytest.raises(CloudModelError, match="is neither a model name nor a file — give the path of a GGUF file"):
        EmbeddedBackend(model_path=str(tmp_path / "nope.gguf")).warm_up()
    (tmp_path / "x.gguf").write_bytes(b"NOTGGUF")
    backend = EmbeddedBackend(model_path=str(tmp_path / "x.gguf"))
    with pytest.raises(CloudModelError, match="cloud model: .*x.gguf is not a GGUF file — convert it"):
        backend.warm_up()
    assert backend.pid is None  # no child was started


def test_logprobs_cover_the_answer_tokens_only() -> None:
    # vLLM's shape: the stop token ("\n") is cut from the text but still has a logprob.
    vllm = {"tokens": [" Am", "ara", " Velt", "\n"], "token_logprobs": [-1.0, -0.01, -0.06, -0.7]}
    assert _answer_logprobs(" Amara Velt", vllm) == [-1.0, -0.01, -0.06]
    assert _answer_logprobs("", {"tokens": ["\n"], "token_logprobs": [-0.2]}) == []
    # No token list (llama.cpp-style servers that already exclude the stop token): all kept, None/inf dropped.
    assert _answer_logprobs(" x", {"token_logprobs": [-0.5, None, float("-inf"), -0.25]}) == [-0.5, -0.25]


@pytest.mark.network
def test_embedded_server_refuses_requests_without_its_token() -> None:
    """Defect #12.4: the embedded backend was plain HTTP on 127.0.0.1 with no auth, so any local process
    could use the model past the gateway's mutual TLS. The real server class (refused requests never
    reach a model, so none is loaded)."""

    import httpx

    from cloud.backend_server import BackendServer

    server = BackendServer("127.0.0.1", 0, reader=None, model_name="m", token="s3cret-token")  # type: ignore[arg-type]
    server.start()
    try:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=5) as http:
            body = {"prompt": "hi", "max_tokens": 1, "temperature": 0}
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
                for resp in (http.get("/v1/models", headers=headers), http.post("/v1/completions", json=body, headers=headers)):
                    assert resp.status_code == 401, (headers, resp.text)
                    assert "bearer token is required" in resp.json()["error"]["message"]
            ok = http.get("/v1/models", headers={"Authorization": "Bearer s3cret-token"})
            assert ok.status_code == 200 and ok.json()["data"][0]["id"] == "m"
    finally:
        server.shutdown()
        server.server_close()


def test_the_backend_server_refuses_oversized_and_stalled_bodies_whole() -> None:
    """On uvicorn (issue 22): a body over the limit is refused at once and the connection closed unread (the
    rest is never parsed as a request); a body that stalls is answered 408 and closed within the timeout; a
    connection that sends nothing is closed too. No request reaches a model, so none is loaded."""
    import socket
    import time

    from cloud.backend_server import MAX_BODY_BYTES, BackendServer

    server = BackendServer("127.0.0.1", 0, reader=None, model_name="m", timeout_s=1.0).start()  # type: ignore[arg-type]
    address = server.server_address
    try:
        with socket.create_connection(address, timeout=10) as s:
            s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
                      + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            replies = b""
            while chunk := s.recv(65536):
                replies += chunk
        assert replies.startswith(b"HTTP/1.1 413") and replies.count(b"HTTP/1.1") == 1
        with socket.create_connection(address, timeout=10) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro")
            t0 = time.monotonic()
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 5
        with socket.create_connection(address, timeout=10) as s:
            t0 = time.monotonic()
            assert s.recv(1) == b"" and time.monotonic() - t0 < 5  # silent: closed by the server
    finally:
        server.shutdown()
        server.server_close()


def test_each_passage_is_cut_at_its_end_to_fit_the_prompt_limit() -> None:
    """Each passage is read on its own, so each one's prompt must fit; every passage keeps its place."""
    from cloud.prompting import (
        MIN_PASSAGE_CHARS,
        fit_passages,
        prompt_char_limit,
        prompt_chars,
    )

    passages = [Passage(f"t{i}", f"{i} " + "word " * (100 + 100 * i)) for i in range(4)]
    whole = prompt_chars("Q?", passages)
    assert whole == prompt_chars("Q?", passages[-1:])  # the longest passage's prompt
    assert fit_passages("Q?", passages, whole) == tuple(passages)  # fits: unchanged
    limit = prompt_chars("Q?", passages[1:2])
    cut = fit_passages("Q?", passages, limit)
    assert len(cut) == 4 and prompt_chars("Q?", cut) <= limit
    assert cut[:2] == tuple(passages[:2]) and all(p.text == passages[i].text[: len(p.text)] for i, p in enumerate(cut))
    tiny = fit_passages("Q?", passages, 10)  # not even the fixed prompt fits: the gateway refuses it in one line
    assert [len(p.text) for p in tiny] == [MIN_PASSAGE_CHARS] * 4
    assert prompt_char_limit(4096, 64) == 12096 and prompt_char_limit(10, 64) == 0
