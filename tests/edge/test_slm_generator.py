from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import ModelError
from edge.slm_generator import SlmGenerator

pytestmark = pytest.mark.slow

PASSAGE = "Zorvath Island is a volcanic island in the Quellan Sea. Its capital is Miret, a harbour town."


def messages(question: str, passage: str = PASSAGE) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Answer the question with a short phrase copied from the passage."},
        {"role": "user", "content": f"Passage 1: {passage}\n\nQuestion: {question}"},
    ]


@pytest.fixture(scope="module")
def generator() -> SlmGenerator:
    gen = SlmGenerator(n_ctx=512, max_tokens=16)
    gen.warm_up()
    return gen


def test_real_gguf_answers_with_logprobs_and_usage(generator: SlmGenerator) -> None:
    out = generator.run(messages=messages("What is the capital of Zorvath Island?"))
    assert "Miret" in out["reply"]
    assert len(out["token_logprobs"]) == out["usage"]["completion_tokens"] > 0
    assert all(lp <= 0.0 for lp in out["token_logprobs"])
    assert out["no_answer_logprob"] < 0.0
    assert out["usage"]["prompt_tokens"] > 30
    t = out["timings"]
    assert t["generate"] == pytest.approx(t["prefill"] + t["decode"], rel=0.05)


def test_prefix_cache_reuses_prompt_and_keeps_greedy_output(generator: SlmGenerator) -> None:
    question = "In which sea is Zorvath Island?"
    first = generator.run(messages=messages(question))
    other = generator.run(messages=messages("What kind of island is Zorvath?"))
    assert other["usage"]["cached_prompt_tokens"] > 20  # the system prompt and passage are shared
    generator._llm.n_tokens = 0  # drop the cache: the same prompt from scratch
    cold = generator.run(messages=messages(question))
    assert cold["usage"]["cached_prompt_tokens"] == 0
    assert cold["reply"] == first["reply"]


def test_prompt_over_context_window_is_a_clear_error(generator: SlmGenerator) -> None:
    with pytest.raises(ModelError, match="ECQA_SLM_N_CTX"):
        generator.run(messages=messages("Why?", passage="word " * 2000))


def test_missing_and_non_gguf_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        SlmGenerator(model_path=str(tmp_path / "missing.gguf")).warm_up()
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a GGUF"):
        SlmGenerator(model_path=str(fake)).warm_up()
