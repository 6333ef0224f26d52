"""The prompts both tiers send: rendered by the model's own chat template, probe and answer sharing a prefix."""

from __future__ import annotations

import math

import pytest

from reading.errors import ReadingError
from reading.models import model_path
from reading.prompts import (
    ANSWER_TASK,
    BASE_PROBE,
    NO_ANSWER_WORD,
    PROBE_TASK,
    SYSTEM,
    Passage,
    Task,
    answer_messages,
    base_answer_prompt,
    base_probe_prompt,
    base_prompt,
    messages,
    no_answer_logit,
    p_yes,
    probe_messages,
    verify,
)
from reading.reader import LlamaReader

PASSAGES = [Passage("Zorvath  Island", "Zorvath Island is a volcanic island.\nIts capital is Miret."),
            Passage("", "The Kelvane glacier feeds the Tarrow River.")]
Q = "What is the capital of\nZorvath Island?"


def test_one_passage_then_the_question_then_the_task_on_one_line_each() -> None:
    system, user = answer_messages(Q, PASSAGES[:1])
    assert system == {"role": "system", "content": SYSTEM}
    assert user["content"] == ("Passage (Zorvath Island): Zorvath Island is a volcanic island. Its capital is Miret.\n\n"
                               "Question: What is the capital of Zorvath Island?\n\n" + ANSWER_TASK)


def test_the_joint_reading_numbers_its_passages_and_asks_about_the_passages() -> None:
    user = answer_messages(Q, PASSAGES)[1]["content"]
    assert user.startswith("Passage 1 (Zorvath Island): Zorvath Island is a volcanic island. Its capital is Miret.\n\n"
                           "Passage 2: The Kelvane glacier feeds the Tarrow River.\n\nQuestion: ")
    assert user.endswith("Answer the question with a short phrase copied from the passages.")


def test_the_probe_asks_one_thing_under_a_neutral_system_prompt() -> None:
    """Finding 2: the probe inherited the answer prompt's instruction ("if the passages do not contain the
    answer, reply: unanswerable") and then asked "reply yes or no" — two conflicting instructions."""
    probe = probe_messages(Q, PASSAGES[:1])
    text = " ".join(m["content"] for m in probe)
    assert NO_ANSWER_WORD not in text and "short phrase" not in text
    assert NO_ANSWER_WORD not in SYSTEM and "answer" not in SYSTEM.lower()
    assert probe[1]["content"].endswith("\n\n" + PROBE_TASK)
    assert text.count("Reply") == 1


def test_every_task_shares_the_prompt_up_to_the_question() -> None:
    prompts = [messages(Q, PASSAGES[:1], t)[1]["content"] for t in (Task("answer"), Task("probe"), verify("Miret"))]
    cut = prompts[0].index("Question: ")
    assert len({p[:cut] for p in prompts}) == 1
    assert len({p[: p.index("\n\n", cut)] for p in prompts}) == 1  # ... and the question itself
    assert prompts[2].endswith('Does the passage state that "Miret" answers the question? Reply yes or no.')


def test_a_verify_task_names_its_answer_and_only_it_does() -> None:
    with pytest.raises(ValueError):
        Task("verify")
    with pytest.raises(ValueError):
        Task("probe", "Miret")
    with pytest.raises(ValueError):
        Task("summarize")


def test_base_prompts_share_their_few_shot_prefix_and_end_with_their_cue() -> None:
    answer, probe = base_answer_prompt(Q, PASSAGES), base_probe_prompt(Q, PASSAGES)
    assert answer.endswith("Question: What is the capital of Zorvath Island?\nAnswer:")
    assert probe.endswith(f"Question: What is the capital of Zorvath Island?\n{BASE_PROBE}")
    check = base_prompt(Q, PASSAGES, verify("Miret"))
    assert check.endswith('Question: What is the capital of Zorvath Island?\nDo the passages say that "Miret" answers '
                          "the question (yes or no)?")
    assert 'say that "Brazil" answers the question (yes or no)? no' in check  # the shots show both replies
    assert "Passage: (no passage)" in base_answer_prompt(Q, [])
    # every task's prompt is the same up to its last question: one stored prefix per passage
    cuts = [p[: p.rindex("Question: ")] for p in (answer, probe, check)]
    assert cuts[0] == cuts[1] == cuts[2] and cuts[0].endswith("Passage: The Kelvane glacier feeds the Tarrow River.\n")


@pytest.mark.parametrize(("tops", "expected"), [
    ({"un": math.log(0.5), "Rol": math.log(0.5)}, 0.0),
    ({"un": math.log(0.2), "Un": math.log(0.2), "Rol": math.log(0.6)}, math.log(0.4 / 0.6)),  # variants add up
    ({"Rol": math.log(0.9), "The": math.log(0.05)}, math.log(0.05 / 0.95)),  # absent: at most the lowest listed
    ({"u": math.log(0.5), "Rol": math.log(0.5)}, 0.0),  # one letter is no evidence; the lowest listed is
    ({}, 0.0),
])
def test_the_no_answer_log_odds_of_an_answers_first_step(tops: dict[str, float], expected: float) -> None:
    assert no_answer_logit(tops) == pytest.approx(expected, abs=1e-9)


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
    answer = reader.render(answer_messages(Q, PASSAGES[:1]))
    assert answer.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nPassage (Zorvath Island):")
    assert answer.endswith(f"{ANSWER_TASK}<|im_end|>\n<|im_start|>assistant\n")
    a, p = reader.tokenize(answer), reader.tokenize(reader.render(probe_messages(Q, PASSAGES[:1])))
    shared = next(i for i, (x, y) in enumerate(zip(a, p)) if x != y)
    assert reader._llm.detokenize(a[:shared]).decode().endswith("Zorvath Island?\n\n")
    pp = reader.passage_prompt(Q, PASSAGES[0], Task("probe"))
    assert pp.prefix + pp.suffix == reader.render(probe_messages(Q, PASSAGES[:1]))
    assert pp.suffix.startswith("Question: What is the capital of Zorvath Island?")


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
    each = reader.read_each("What is the capital of Zorvath Island?", PASSAGES, 8)
    assert each.passages.chosen in (0, 1) and len(each.passages.passages) == 2


def test_an_unknown_prompt_family_is_refused() -> None:
    with pytest.raises(ReadingError, match="unknown prompt family"):
        LlamaReader("x.gguf", family="chatml")
