"""Per-passage reading with the real edge model (Qwen2.5-Coder-0.5B-Instruct GGUF): the same answers
with and without the passage KV store, states restored instead of prefilled, and invalidation."""

from __future__ import annotations

from pathlib import Path

import pytest

from reading.kv_store import PassageStateStore
from reading.models import model_path
from reading.prompts import Passage
from reading.reader import LlamaReader

pytestmark = pytest.mark.slow

PASSAGES = [
    Passage("Zorvath Island", "Zorvath Island is a volcanic island in the Quellan Sea. Its capital is Miret, "
            "a harbour town of about 4,000 people founded by salt traders in 1612."),
    Passage("Brindlewick Orchestra", "The Brindlewick Orchestra was founded in 1887 by the cellist Ada Fenwright. "
            "It plays in the Copperhall, a concert hall that seats 1,900 listeners."),
    Passage("Normans", "The Normans were the people who in the 10th and 11th centuries gave their name to "
            "Normandy, a region in France. They were descended from Norse raiders and pirates from Denmark, "
            "Iceland and Norway."),
]
QUESTIONS = [
    ("What is the capital of Zorvath Island?", "Miret"),
    ("Who founded the Brindlewick Orchestra?", "Ada Fenwright"),
    ("In what country is Normandy located?", "France"),
]


@pytest.fixture(scope="module", params=["f16", "q8_0"])
def reader(request: pytest.FixtureRequest) -> LlamaReader:
    r = LlamaReader(str(model_path("qwen2.5-coder-0.5b-instruct")), n_ctx=1024, kv_type=request.param)
    r.warm_up()
    return r


def _cold(reader: LlamaReader) -> None:
    reader._llm.n_tokens = 0  # nothing of an earlier prompt stays in the cache


def test_each_passage_is_read_on_its_own_and_the_answer_comes_from_the_one_that_states_it(reader: LlamaReader) -> None:
    for question, gold in QUESTIONS:
        _cold(reader)
        r = reader.read_each(question, PASSAGES, 16)
        p = r.passages
        assert gold in r.reply, (question, r)
        assert gold in PASSAGES[p.chosen].text and gold in p.answer and p.passages[p.chosen].is_span
        assert len(p.passages) == 3 and r.p_answerable == max(s.p_yes for s in p.passages)
        assert 0.0 < p.p_verify < 1.0  # the chosen answer was checked against its passage
        assert all(s.reply for s in p.passages)  # every passage answered (the answer task always answers)
        assert r.kv == ("miss", "miss", "miss")


def test_the_same_answers_with_and_without_the_store_and_only_the_question_prefilled(reader: LlamaReader,
                                                                                    tmp_path: Path) -> None:
    store = PassageStateStore(tmp_path / "kv")
    for question, _ in QUESTIONS:
        _cold(reader)
        plain = reader.read_each(question, PASSAGES, 16)
        _cold(reader)
        first = reader.read_each(question, PASSAGES, 16, store)  # fills the store (misses after the first question)
        _cold(reader)
        stored = reader.read_each(question, PASSAGES, 16, store)
        assert stored.kv == ("hit", "hit", "hit")
        assert stored.reply == plain.reply == first.reply
        assert [s.p_yes for s in stored.passages.passages] == pytest.approx(
            [s.p_yes for s in plain.passages.passages], abs=1e-4)
        assert stored.passages.chosen == plain.passages.chosen
        prefix_tokens = stored.cached_prompt_tokens
        assert prefix_tokens > 150  # three system+passage prefixes came from the store
        # Only the question suffixes (the probe's, the answer's, one check's): plain prefilled the passages
        # too (less the system prompt's tokens, which the cache kept from one passage to the next).
        assert stored.prefilled_tokens < 7 * 50 and plain.prefilled_tokens - stored.prefilled_tokens > 100
        assert stored.timings["restore"] > 0
    assert len(store) == 3 and store.stats.corrupt == 0


def test_a_corrupt_state_is_recomputed_never_loaded(reader: LlamaReader, tmp_path: Path) -> None:
    store = PassageStateStore(tmp_path / "kv")
    question = QUESTIONS[0][0]
    _cold(reader)
    good = reader.read_each(question, PASSAGES[:1], 16, store)
    path = store.path(reader.state_key(reader.passage_prompt(question, PASSAGES[0]).prefix))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    _cold(reader)
    again = reader.read_each(question, PASSAGES[:1], 16, store)
    assert again.kv == ("miss",) and again.reply == good.reply and store.stats.corrupt == 1
    _cold(reader)
    assert reader.read_each(question, PASSAGES[:1], 16, store).kv == ("hit",)  # stored again, intact


HOUSES = [Passage("Houses", "The red house is owned by John."), Passage("Houses", "The blue house is owned by Mary.")]


def test_another_passages_state_under_this_name_is_never_read_as_its_own(reader: LlamaReader, tmp_path: Path) -> None:
    """Issue 22, finding 1: `cp kv/<red>.kv kv/<blue>.kv` made "Who owns the blue house?" answer "John";
    a state of another length was a llama_decode traceback, kept for every later question."""
    store = PassageStateStore(tmp_path / "kv")
    question = "Who owns the blue house?"
    red, blue = (reader.passage_prompt(question, p).prefix for p in HOUSES)
    assert len(reader._prefix_tokens(red)) == len(reader._prefix_tokens(blue))  # the same shape: only the key differs
    for p in HOUSES:
        _cold(reader)
        reader.read_each(question, [p], 8, store)
    red_path, blue_path = store.path(reader.state_key(red)), store.path(reader.state_key(blue))
    blue_path.write_bytes(red_path.read_bytes())  # the copy
    _cold(reader)
    copied = reader.read_each(question, HOUSES[1:], 8, store)
    assert copied.kv == ("miss",) and "Mary" in copied.reply and store.stats.corrupt == 1
    # A state whose checksum was made for this key (forged) but of another length: refused by llama.cpp's
    # own count of positions, deleted, the passage prefilled — no traceback, and stored right again.
    longer = reader._prefix_tokens(reader.passage_prompt(question, PASSAGES[0]).prefix)
    assert len(longer) != len(reader._prefix_tokens(blue))
    _cold(reader)
    reader.read_each(question, PASSAGES[:1], 8, store)
    store.put(reader.state_key(blue), store.get(reader.state_key(reader.passage_prompt(question, PASSAGES[0]).prefix)))
    _cold(reader)
    forged = reader.read_each(question, HOUSES[1:], 8, store)
    assert forged.kv == ("miss",) and "Mary" in forged.reply and store.stats.corrupt == 2
    _cold(reader)
    assert reader.read_each(question, HOUSES[1:], 8, store).kv == ("hit",)


def test_a_changed_model_template_or_passage_misses(reader: LlamaReader, tmp_path: Path) -> None:
    store = PassageStateStore(tmp_path / "kv")
    question = QUESTIONS[0][0]
    _cold(reader)
    reader.read_each(question, PASSAGES[:1], 8, store)
    _cold(reader)
    assert reader.read_each(question, PASSAGES[:1], 8, store).kv == ("hit",)
    sha, template = reader._model_sha256, reader.template_sha256
    try:
        reader._model_sha256 = "0" * 64  # another model file
        _cold(reader)
        assert reader.read_each(question, PASSAGES[:1], 8, store).kv == ("miss",)
        reader._model_sha256 = sha
        reader.template_sha256 = "1" * 64  # another chat template
        _cold(reader)
        assert reader.read_each(question, PASSAGES[:1], 8, store).kv == ("miss",)
    finally:
        reader._model_sha256, reader.template_sha256 = sha, template
    edited = Passage(PASSAGES[0].title, PASSAGES[0].text.replace("1612", "1613"))
    _cold(reader)
    assert reader.read_each(question, [edited], 8, store).kv == ("miss",)
    assert len(store) == 4


def test_the_model_hash_of_a_manifest_file_is_the_manifest_one(reader: LlamaReader) -> None:
    from reading.model_manifest import get_spec

    assert reader.model_sha256 == get_spec("qwen2.5-coder-0.5b-instruct").sha256


def test_prepare_stores_what_reading_then_restores(reader: LlamaReader, tmp_path: Path) -> None:
    store = PassageStateStore(tmp_path / "kv")
    assert reader.prepare(PASSAGES, store) == ["miss", "miss", "miss"]
    assert reader.prepare(PASSAGES, store) == ["hit", "hit", "hit"]
    _cold(reader)
    assert reader.read_each(QUESTIONS[1][0], PASSAGES, 8, store).kv == ("hit", "hit", "hit")


LONG_QUESTIONS = [
    ("Who were the Normans descended from?", "Norse raiders"),
    ("When was the Brindlewick Orchestra founded and by whom?", "1887"),
    ("Where does the Brindlewick Orchestra play?", "Copperhall"),
]


def test_the_lean_plan_reads_what_it_derives_from_the_full_reading(reader: LlamaReader, tmp_path: Path) -> None:
    """`make calibrate` fits the lean plans on readings derived from recorded full ones: with the real model,
    the lean reading (every passage probed, the best answered, no check) is that derived reading."""
    from reading.passages import FULL, ReadPlan, under_plan

    store = PassageStateStore(tmp_path / "kv")
    lean = ReadPlan("best", verify=False)
    for question, gold in QUESTIONS + LONG_QUESTIONS:
        _cold(reader)
        full = reader.read_each(question, PASSAGES, 16, store, FULL).passages
        _cold(reader)
        r = reader.read_each(question, PASSAGES, 16, store, lean)
        derived = under_plan(full, lean, [p.score for p in PASSAGES])
        assert r.passages.answer == derived.answer, (question, r.passages, derived)
        assert gold in r.passages.answer or (question, gold) in LONG_QUESTIONS
        assert [s.p_yes for s in r.passages.passages] == pytest.approx([s.p_yes for s in derived.passages], abs=1e-3)
        assert sum(s.asked for s in r.passages.passages) == 1 and r.passages.p_verify == 0.5


def test_speculative_decoding_gives_the_same_answers(reader: LlamaReader, tmp_path: Path) -> None:
    """Prompt-lookup drafts checked in one forward pass: the drafts copied from the passage are accepted, and
    the answers are the greedy ones. Not always to the token: a pass over several tokens rounds differently
    from one token at a time, and greedy decoding flips on near-ties (96.3% of `make bench-edge-speed`'s
    replies were the same; one of LONG_QUESTIONS' replies here differs from the fourth word on)."""
    from reading.reader import SpecStats

    store = PassageStateStore(tmp_path / "kv")
    reader.spec_stats = SpecStats()
    try:
        for question, gold in QUESTIONS:
            replies = []
            for speculative in (False, True):
                reader.speculative = speculative
                _cold(reader)
                r = reader.read_each(question, PASSAGES, 16, store)
                replies.append([(s.reply, s.answer) for s in r.passages.passages])
            assert replies[0] == replies[1], question
            assert gold in replies[1][PASSAGES.index(next(p for p in PASSAGES if gold in p.text))][1]
    finally:
        reader.speculative = False
    assert reader.spec_stats.checks > 0 and reader.spec_stats.accepted > 0


def test_a_passages_next_task_keeps_its_question_and_reads_as_after_a_restore(reader: LlamaReader,
                                                                              tmp_path: Path) -> None:
    """The answer after the probe on the same passage prefills only its own instruction (the question is still in
    the cache), and gives, to the bit, what it gives after the passage's state is restored and the question
    prefilled again: the question line is evaluated apart from the task either way."""
    from reading.prompts import ANSWER, PROBE, Task
    from reading.reader import Generation, _stage_times

    store = PassageStateStore(tmp_path / "kv")
    question, passage = "When was the Brindlewick Orchestra founded and by whom?", PASSAGES[1]

    def run(task: Task, memo: dict[str, bytes]) -> tuple[Generation, str, int]:
        pp = reader.passage_prompt(question, passage, task)
        t = _stage_times()
        gen, source = reader._prefixed(pp.prefix, pp.suffix, 16, reader.stop if task is ANSWER else (), 5, 1, store,
                                       memo, t)
        return gen, source, int(t["prefilled"])

    with reader._lock:
        _cold(reader)
        run(PROBE, {})
        after_probe, source, prefilled = run(ANSWER, {})
        pp = reader.passage_prompt(question, passage, ANSWER)
        question_line = reader._question_tokens(pp.suffix, reader._suffix_tokens(pp.suffix))
        assert source == "live" and question_line >= 5
        assert prefilled == len(reader._suffix_tokens(pp.suffix)) - question_line  # the instruction and the turn's end
        _cold(reader)
        restored, source, prefilled = run(ANSWER, {})
        assert source == "hit" and prefilled == len(reader._suffix_tokens(pp.suffix))
    assert (after_probe.text, after_probe.top_logprobs) == (restored.text, restored.top_logprobs)
