"""The prompts both tiers send: rendered by the model's own chat template, probe and answer sharing a prefix."""

from __future__ import annotations

import math

import pytest

from reading.errors import ReadingError
from reading.models import model_path
from reading.prompts import (
    BASE_PROBE,
    PROBE_QUESTION,
    SYSTEM,
    Passage,
    answer_messages,
    base_answer_prompt,
    base_probe_prompt,
    p_yes,
    probe_messages,
)
from reading.reader import LlamaReader

PASSAGES = [Passage("Zorvath  Island", "Zorvath Island is a volcanic island.\nIts capital is Miret."),
            Passage("", "The Kelvane glacier feeds the Tarrow River.")]
Q = "What is the capital of\nZorvath Island?"


def test_messages_put_passages_first_then_the_question_on_one_line_each() -> None:
    system, user = answer_messages(Q, PASSAGES)
    assert system == {"role": "system", "content": SYSTEM}
    assert user["content"] == ("Passage 1 (Zorvath Island): Zorvath Island is a volcanic island. Its capital is Miret.\n\n"
                               "Passage 2: The Kelvane glacier feeds the Tarrow River.\n\n"
                               "Question: What is the capital of Zorvath Island?")


def test_the_probe_is_the_answer_prompt_plus_the_yes_no_question() -> None:
    answer, probe = answer_messages(Q, PASSAGES), probe_messages(Q, PASSAGES)
    assert probe[0] == answer[0]
    assert probe[1]["content"] == answer[1]["content"] + "\n\n" + PROBE_QUESTION


def test_base_prompts_share_their_few_shot_prefix_and_end_with_their_cue() -> None:
    answer, probe = base_answer_prompt(Q, PASSAGES), base_probe_prompt(Q, PASSAGES)
    assert answer.endswith("Question: What is the capital of Zorvath Island?\nAnswer:")
    assert probe.endswith(f"Question: What is the capital of Zorvath Island?\n{BASE_PROBE}")
    assert "Passage: (no passage)" in base_answer_prompt(Q, [])


@pytest.mark.parametrize(("tops", "expected"), [
    ({"Yes": math.log(0.6), "No": math.log(0.2), "The": math.log(0.2)}, 0.75),
    ({" yes": math.log(0.3), "Yes": math.log(0.3), "no": math.log(0.2)}, 0.75),  # variants add up
    ({"The": -0.1}, 0.5),  # no evidence either way
    ({}, 0.5),
    (None, 0.5),
    ({"NO": 0.0, "yes": float("-inf")}, 0.0),
])
def test_p_yes_reads_yes_against_no(tops: dict[str, float] | None, expected: float) -> None:
    assert p_yes(tops) == pytest.approx(expected)


@pytest.mark.slow
def test_chat_prompts_are_rendered_by_the_models_own_template() -> None:
    """Qwen's GGUF carries its chat template; the rendered prompt is that template's, and the probe
    and the answer share every token through the end of the question."""
    reader = LlamaReader(str(model_path("qwen2.5-coder-0.5b-instruct")), n_ctx=512)
    reader.warm_up()
    assert reader.family == "chat"
    answer = reader.render(answer_messages(Q, PASSAGES))
    assert answer.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nPassage 1 (Zorvath Island):")
    assert answer.endswith("Question: What is the capital of Zorvath Island?<|im_end|>\n<|im_start|>assistant\n")
    a, p = reader.tokenize(answer), reader.tokenize(reader.render(probe_messages(Q, PASSAGES)))
    shared = next(i for i, (x, y) in enumerate(zip(a, p)) if x != y)
    # ("?" merges with what follows it, so the shared tokens end at the last word of the question)
    assert reader._llm.detokenize(a[:shared]).decode().endswith("Zorvath Island")
    assert len(a) - shared < 8  # the answer's own suffix: end of turn and the assistant cue


@pytest.mark.slow
def test_a_base_model_has_no_template_and_reads_completion_style() -> None:
    reader = LlamaReader(str(model_path("gemma-3-270m")), n_ctx=1024)
    reader.warm_up()
    assert reader.family == "base"
    with pytest.raises(ReadingError, match="no chat template"):
        reader.render(answer_messages(Q, PASSAGES))
    out = reader.read("What is the capital of Zorvath Island?", PASSAGES, 8)
    assert "Miret" in out.reply and "\n" not in out.reply
    assert 0.0 <= out.p_answerable <= 1.0


def test_an_unknown_prompt_family_is_refused() -> None:
    with pytest.raises(ReadingError, match="unknown prompt family"):
        LlamaReader("x.gguf", family="chatml")
