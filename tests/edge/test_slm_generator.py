from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import ModelError
from edge.slm_generator import SlmGenerator
from reading.prompts import Passage

pytestmark = pytest.mark.slow

PASSAGE = Passage("Zorvath Island", "Zorvath Island is a volcanic island in the Quellan Sea. Its capital is Miret, "
                  "a harbour town of about 4,000 people founded by salt traders in 1612.")


@pytest.fixture(scope="module")
def generator() -> SlmGenerator:
    # The joint reading (all passages in one prompt); the per-passage reading is tested below and in
    # tests/reading/test_passage_reading.py.
    gen = SlmGenerator(n_ctx=1024, max_tokens=16, reading="joint")  # the default edge model: Qwen2.5-Coder-0.5B-Instruct
    gen.warm_up()
    return gen


def test_real_gguf_answers_with_logprobs_answerability_and_usage(generator: SlmGenerator) -> None:
    out = generator.run(question="What is the capital of Zorvath Island?", passages=[PASSAGE])
    assert out["reply"].strip() == "Miret"
    assert len(out["token_logprobs"]) == out["usage"]["completion_tokens"] > 0
    assert all(lp <= 0.0 for lp in out["token_logprobs"])
    assert 0.0 <= out["p_answerable"] <= 1.0
    assert out["usage"]["prompt_tokens"] > 30
    t = out["timings"]  # "generate" is the whole reading's wall time; prefill and decode split it
    assert t["prefill"] + t["decode"] <= t["generate"] < t["prefill"] + t["decode"] + 100
    assert out["reading"].passages[0].p_yes == out["p_answerable"] and out["answer"] == "Miret"


def test_answerability_is_higher_when_the_passage_states_the_answer(generator: SlmGenerator) -> None:
    """The 0.5B edge model's p(yes), measured: 0.75 (stated) against 0.55 (not stated)."""
    stated = generator.run(question="What is the capital of Zorvath Island?", passages=[PASSAGE])["p_answerable"]
    not_stated = generator.run(question="Who was the first mayor of Miret?", passages=[PASSAGE])["p_answerable"]
    assert stated > not_stated + 0.1


def test_probe_and_answer_share_one_prefill_and_the_next_question_reuses_the_passage(generator: SlmGenerator) -> None:
    first = generator.run(question="In which sea is Zorvath Island?", passages=[PASSAGE])
    # The answer prompt shares everything up to the question with the probe: only its own suffix
    # (the generation cue) and the probe's suffix are prefilled on top of the prompt.
    assert first["usage"]["prefilled_tokens"] < first["usage"]["prompt_tokens"] + 30
    other = generator.run(question="What kind of island is Zorvath?", passages=[PASSAGE])
    assert other["usage"]["cached_prompt_tokens"] > 40  # system prompt and passage came from the KV cache
    generator.reader._llm.n_tokens = 0  # drop the cache: the same prompts from scratch
    cold = generator.run(question="In which sea is Zorvath Island?", passages=[PASSAGE])
    assert cold["usage"]["cached_prompt_tokens"] == 0
    # The same reply; p(yes) to within what the cache's earlier contents change in the last bits of the sums
    # (here 0.407 after the questions above, 0.389 from scratch: far below the stated/not-stated gap).
    assert (cold["reply"], cold["p_answerable"]) == (first["reply"], pytest.approx(first["p_answerable"], abs=0.05))


def test_prompt_over_context_window_is_a_clear_error(generator: SlmGenerator) -> None:
    with pytest.raises(ModelError, match="ECQA_SLM_N_CTX"):
        generator.run(question="Why?", passages=[Passage("", "word " * 2000)])


def test_missing_and_non_gguf_paths_and_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="neither a model name nor a file"):
        SlmGenerator(model_path=str(tmp_path / "missing.gguf")).warm_up()
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a GGUF"):
        SlmGenerator(model_path=str(fake)).warm_up()


def test_older_models_stay_selectable_by_name() -> None:
    """SmolLM2-135M (a chat template) by its manifest name reads through the same path."""
    gen = SlmGenerator(model_path="smollm2-135m-instruct", n_ctx=512, max_tokens=16)
    out = gen.run(question="What is the capital of Zorvath Island?", passages=[PASSAGE])
    assert gen.model_name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gen.reader.family == "chat"
    assert "Miret" in out["reply"]


def test_the_default_reading_is_per_passage_from_the_store(tmp_path: Path) -> None:
    gen = SlmGenerator(n_ctx=1024, max_tokens=16, kv_dir=tmp_path / "kv")
    other = Passage("Brindlewick Orchestra", "The Brindlewick Orchestra was founded in 1887 by the cellist Ada Fenwright.")
    assert gen.prepare([PASSAGE, other]) == ["miss", "miss"]
    gen.reader._llm.n_tokens = 0
    out = gen.run(question="What is the capital of Zorvath Island?", passages=[other, PASSAGE])
    assert out["reply"].strip() == "Miret" and out["chosen"] == 1 and out["kv"] == ["hit", "hit"]
    assert (out["usage"]["kv_hits"], out["usage"]["kv_misses"]) == (2, 0)
    t = out["timings"]
    parts = t["restore"] + t["prefill"] + t["kv_store"] + t["decode"]
    assert t["restore"] > 0 and parts <= t["generate"] < parts + 100


def test_prepare_without_a_store_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="ECQA_KV_STORE"):
        SlmGenerator(reading="joint", kv_dir="/nonexistent").prepare([PASSAGE])
