from __future__ import annotations

import math
import random
import threading
import time

import numpy as np
import pytest

from edge.answer_cache import (
    DEFAULT_THRESHOLD,
    AnswerCache,
    normalize_question,
    question_signature,
)
from edge.embedder import SentenceEmbedder

V1, V2 = "squad@1", "squad@2"
PIDS = ("p-1", "p-2", "p-3")
DIM = 384

# Every real sentence the tests embed, encoded in one batch: MiniLM is the slow part here.
SENTENCES = [
    "What is the capital of France?",
    "What's the capital city of France?",
    "Who built the bridge?",
    "Who constructed the bridge?",
    "Who did not build the bridge?",
    "Who won the election in 1990?",
    "Who won the election in 1999?",
]


@pytest.fixture(scope="module")
def vec(embedder: SentenceEmbedder) -> dict[str, list[float]]:
    return dict(zip(SENTENCES, embedder.encode(SENTENCES), strict=True))


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))


def basis(i: int, dim: int = DIM) -> list[float]:
    """A one-hot unit vector: distinct indices are orthogonal, so they never hit each other."""
    v = [0.0] * dim
    v[i] = 1.0
    return v


def at_cosine(c: float, i: int = 0, j: int = 1) -> list[float]:
    """A unit vector whose cosine with ``basis(i)`` is exactly ``c``."""
    v = [0.0] * DIM
    v[i], v[j] = c, math.sqrt(1.0 - c * c)
    return v


def answer(text: str) -> dict[str, object]:
    return {"answer": text, "source": "edge"}


# --- normalisation and the guard's extractor -----------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("What is the capital of France?", "what is the capital of france"),
        ("  What   is the\tcapital of France ?! ", "what is the capital of france"),
        ("WHAT’S THE CAPITAL...", "what's the capital"),
        ("Is 3.5 the answer?", "is 3.5 the answer"),
        ("?", ""),
    ],
)
def test_normalize_question(raw: str, key: str) -> None:
    assert normalize_question(raw) == key


@pytest.mark.parametrize(
    ("question", "negations"),
    [
        ("Who built the bridge?", ()),
        ("Who did not build the bridge?", ("not",)),
        ("Who didn't build the bridge?", ("not",)),
        ("Who didn’t build the bridge?", ("not",)),  # curly apostrophe
        ("Who didnt build the bridge", ("not",)),
        ("Which bird cannot fly?", ("not",)),
        ("Which bird can not fly?", ("not",)),
        ("Why isn't it and why wasn't it?", ("not", "not")),
        ("Who never won?", ("never",)),
        ("A city without walls?", ("without",)),
        ("Is there no king?", ("no",)),
        ("Nobody saw nothing?", ("nobody", "nothing")),
        ("Neither the king nor the queen?", ("neither", "nor")),
        ("None of them?", ("none",)),
        ("Is it non-deterministic?", ("non",)),
        ("Is the knot tied at noon?", ()),  # markers are whole words, not substrings
    ],
)
def test_negation_markers(question: str, negations: tuple[str, ...]) -> None:
    assert question_signature(question).negations == negations


@pytest.mark.parametrize(
    ("question", "numbers"),
    [
        ("What happened in 1990?", ("1990",)),
        ("A town of 4,000 people founded in 1612?", ("1612", "4000")),
        ("Is it 3.5 km long?", ("3.5",)),
        ("Count 1,2 and 3", ("1", "2", "3")),  # a comma before fewer than 3 digits separates numbers
        ("Who reigned 12,345,678 days?", ("12345678",)),
        ("In the 10th century?", ("10th",)),
        ("In the tenth century?", ("10th",)),
        ("The 1st, 2nd and 3rd kings?", ("1st", "2nd", "3rd")),
        ("The first, second and third kings?", ("1st", "2nd", "3rd")),
        ("In the 1990s?", ("1990s",)),
        ("Who ruled in the 1000's and 1100's", ("1000s", "1100s")),
        ("Twenty-one or ninety nine?", ("1", "20", "9", "90")),
        ("One hundred thousand or a million or a billion?", ("1", "100", "1000", "1000000", "1000000000")),
        ("Did the mp3 format win?", ("3",)),
        ("Who won in 1990 and again in 1990?", ("1990", "1990")),
        ("Who won the election?", ()),
    ],
)
def test_numbers(question: str, numbers: tuple[str, ...]) -> None:
    assert question_signature(question).numbers == numbers


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Who did not build the bridge?", "Who didn't build the bridge?"),
        ("Why can't birds swim?", "Why cannot birds swim?"),
        ("What happened in the 10th century?", "What happened in the tenth century?"),
        ("When did the first war start?", "When did the 1st war begin?"),
        ("Is the population 4,000?", "Is the population 4000?"),
        ("Who won in 1990 and 1999?", "Who won in 1999 and 1990?"),
        ("What is the capital of France?", "What's the capital city of France?"),
        ("Which city is the largest?", "What city is the largest?"),
        ("How many Huguenots were killed?", "How many Huguenots were slain?"),
    ],
)
def test_guard_lets_rewordings_through(a: str, b: str) -> None:
    assert question_signature(a).matches(question_signature(b))
    assert question_signature(b).matches(question_signature(a))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Who built the bridge?", "Who did not build the bridge?"),
        ("Who built the bridge?", "Who never built the bridge?"),
        ("A city with walls?", "A city without walls?"),
        ("Is anybody there?", "Is nobody there?"),
        ("What is an example not known to be in P?", "What is not an example not known to be in P?"),
        ("Who won the election in 1990?", "Who won the election in 1999?"),
        ("What happened in 1990?", "What happened in the 1990s?"),
        ("Is it 3.5 km?", "Is it 35 km?"),
        ("Who was the 1st king?", "Who was the 2nd king?"),
        ("Who was the first king?", "Who was the second king?"),
        ("Who was the first king?", "Who was king number 1?"),  # ordinal is not cardinal
        ("Did one man win?", "Did two men win?"),
        ("A hundred ships?", "A thousand ships?"),
        ("A town of 4,000?", "A town of 4,500?"),
        ("Who won?", "Who won in 1990?"),
        ("Who won in 1990?", "Who won in 1990 and 1990?"),
        ("Did the mp3 format win?", "Did the mp4 format win?"),
        ("What is the largest city?", "What is the smallest city?"),
        ("Who ruled before the Normans?", "Who ruled after the Normans?"),
        ("What is the proven assumption?", "What is the unproven assumption?"),
        ("Which graphs are connected?", "Which graphs are unconnected?"),
        ("Is it possible to sort?", "Is it impossible to sort?"),
        ("Is it a regular verb?", "Is it an irregular verb?"),
        ("Do they agree?", "Do they disagree?"),
        ("Who issued the edict?", "When was the edict issued?"),
        ("When did oil get priced in gold?", "Why did oil get priced in gold?"),
    ],
)
def test_guard_refuses_flips(a: str, b: str) -> None:
    assert not question_signature(a).matches(question_signature(b))
    assert not question_signature(b).matches(question_signature(a))


# --- exact level -------------------------------------------------------------------------------
def test_exact_hit_before_embedding() -> None:
    cache = AnswerCache()
    cache.put("What is the capital of France?", answer("Paris"), basis(0), PIDS, V1)
    entry = cache.lookup_exact("  what is the capital of   FRANCE ?", V1)
    assert entry is not None
    assert entry.answer == {"answer": "Paris", "source": "edge"}
    assert entry.question == "What is the capital of France?"
    assert entry.index_version == V1 and entry.passage_ids == PIDS
    assert entry.embedding is not None and entry.embedding[0] == 1.0 and len(entry.embedding) == DIM
    assert cache.lookup_exact("What is the capital of Germany?", V1) is None
    s = cache.stats()
    assert (s["hits"], s["exact_hits"], s["semantic_hits"], s["misses"], s["exact_misses"]) == (1, 1, 0, 0, 1)


def test_put_replaces_the_same_question_and_keeps_its_own_copy() -> None:
    cache = AnswerCache()
    record = answer("Paris")
    cache.put("What is the capital of France?", record, basis(0), PIDS, V1)
    record["answer"] = "changed by the caller"
    cache.put("what is the capital of france", answer("Paris, France"), basis(1), PIDS, V1)
    assert len(cache) == 1
    entry = cache.lookup_exact("What is the capital of France", V1)
    assert entry is not None and entry.answer["answer"] == "Paris, France"
    # The replaced row no longer answers for its old embedding, the new one does.
    assert cache.lookup("Capital of France please", basis(0), PIDS, V1) is None
    hit = cache.lookup("Capital of France please", basis(1), PIDS, V1)
    assert hit is not None and hit.answer["answer"] == "Paris, France"


# --- semantic level with the real MiniLM ---------------------------------------------------------
def test_paraphrases_hit_at_the_default_threshold(vec: dict[str, list[float]]) -> None:
    france = ("What is the capital of France?", "What's the capital city of France?")
    bridge = ("Who built the bridge?", "Who constructed the bridge?")
    # Measured: 0.957 and 0.984; the test relies on both clearing the 0.95 default.
    assert cosine(vec[france[0]], vec[france[1]]) >= DEFAULT_THRESHOLD == 0.95
    assert cosine(vec[bridge[0]], vec[bridge[1]]) >= DEFAULT_THRESHOLD
    cache = AnswerCache()
    cache.put(france[0], answer("Paris"), vec[france[0]], PIDS, V1)
    cache.put(bridge[0], answer("Eiffel"), vec[bridge[0]], ("p-9",), V1)
    assert cache.lookup_exact(france[1], V1) is None  # different text: only the semantic level can hit
    hit = cache.lookup(france[1], vec[france[1]], list(reversed(PIDS)), V1)  # passage order is irrelevant
    assert hit is not None and hit.answer["answer"] == "Paris"
    hit = cache.lookup(bridge[1], vec[bridge[1]], ["p-9"], V1)
    assert hit is not None and hit.answer["answer"] == "Eiffel"
    s = cache.stats()
    assert (s["semantic_hits"], s["exact_hits"], s["misses"], s["guard_rejections"]) == (2, 0, 0, 0)


def test_negation_guard_rejects_what_the_threshold_lets_through(vec: dict[str, list[float]]) -> None:
    built, not_built, constructed = (
        "Who built the bridge?",
        "Who did not build the bridge?",
        "Who constructed the bridge?",
    )
    threshold = 0.85
    assert cosine(vec[built], vec[not_built]) >= threshold  # measured 0.915: cosine alone would hit
    cache = AnswerCache(threshold=threshold)
    cache.put(built, answer("Eiffel"), vec[built], PIDS, V1)
    assert cache.lookup(not_built, vec[not_built], PIDS, V1) is None
    assert cache.stats()["guard_rejections"] == 1 and cache.stats()["misses"] == 1
    # Control: an un-negated rewording through the same cache does hit.
    hit = cache.lookup(constructed, vec[constructed], PIDS, V1)
    assert hit is not None and hit.answer["answer"] == "Eiffel"
    assert cache.stats()["guard_rejections"] == 1


def test_number_guard_rejects_another_year(vec: dict[str, list[float]]) -> None:
    y1990, y1999 = "Who won the election in 1990?", "Who won the election in 1999?"
    threshold = 0.8
    assert cosine(vec[y1990], vec[y1999]) >= threshold  # measured 0.828
    cache = AnswerCache(threshold=threshold)
    cache.put(y1990, answer("Kohl"), vec[y1990], PIDS, V1)
    assert cache.lookup(y1999, vec[y1999], PIDS, V1) is None
    assert cache.stats()["guard_rejections"] == 1
    assert cache.lookup(y1990, vec[y1990], PIDS, V1) is not None  # the cached year itself still hits


def test_different_passages_miss(vec: dict[str, list[float]]) -> None:
    q, para = "What is the capital of France?", "What's the capital city of France?"
    cache = AnswerCache()
    cache.put(q, answer("Paris"), vec[q], PIDS, V1)
    assert cache.lookup(para, vec[para], ["p-1", "p-2"], V1) is None
    assert cache.lookup(para, vec[para], [*PIDS, "p-4"], V1) is None
    # The exact level inside lookup() checks the passages too: a changed retrieval is a miss.
    assert cache.lookup(q, vec[q], ["p-7"], V1) is None
    s = cache.stats()
    assert (s["misses"], s["hits"], s["guard_rejections"]) == (3, 0, 0)


def test_best_candidate_wins_and_guard_falls_through_to_the_next() -> None:
    cache = AnswerCache(threshold=0.9)
    cache.put("Who erected the bridge?", answer("at 0.93"), at_cosine(0.93, 0, 1), PIDS, V1)
    cache.put("Who constructed the bridge?", answer("at 0.97"), at_cosine(0.97, 0, 2), PIDS, V1)
    cache.put("Who did not build the bridge?", answer("negated"), at_cosine(0.99, 0, 3), PIDS, V1)
    hit = cache.lookup("Who built the bridge?", basis(0), PIDS, V1)
    assert hit is not None and hit.answer["answer"] == "at 0.97"
    assert cache.stats()["guard_rejections"] == 0  # the lookup hit, so the guard prevented no miss


# --- index versions ------------------------------------------------------------------------------
def test_other_index_version_never_hits_and_invalidate_counts() -> None:
    cache = AnswerCache()
    cache.put("What is the capital of France?", answer("Paris"), basis(0), PIDS, V1)
    cache.put("Who built the bridge?", answer("Eiffel"), basis(1), PIDS, V1)
    cache.put("Who founded the orchestra?", answer("Velt"), basis(2), PIDS, V2)
    assert cache.lookup_exact("What is the capital of France?", V2) is None
    assert cache.lookup("What is the capital of France?", basis(0), PIDS, V2) is None
    assert cache.lookup("Capital of France?", basis(0), PIDS, V2) is None
    assert cache.invalidate(V2) == 2
    assert len(cache) == 1 and cache.stats()["entries"] == 1
    assert cache.lookup_exact("What is the capital of France?", V1) is None
    assert cache.lookup_exact("Who founded the orchestra?", V2) is not None
    assert cache.invalidate(V2) == 0
    assert cache.invalidate() == 1 and len(cache) == 0
    assert cache.lookup("Who founded the orchestra?", basis(2), PIDS, V2) is None
    assert cache.stats()["evictions"] == 0  # invalidation is not eviction


# --- LRU -------------------------------------------------------------------------------------
def test_lru_evicts_least_recently_used_and_hits_refresh() -> None:
    cache = AnswerCache(max_entries=3)
    for i, q in enumerate(["Question a", "Question b", "Question c"]):
        cache.put(q, answer(q), basis(i), PIDS, V1)
    assert cache.lookup_exact("question a", V1) is not None  # exact hit refreshes a
    assert cache.lookup("Question b, reworded", basis(1), PIDS, V1) is not None  # semantic hit refreshes b
    cache.put("Question d", answer("d"), basis(3), PIDS, V1)  # c is now the least recent
    assert cache.lookup_exact("Question c", V1) is None
    assert cache.lookup("Question c, reworded", basis(2), PIDS, V1) is None  # its row was freed
    cache.put("Question e", answer("e"), basis(4), PIDS, V1)  # then a
    assert [
        cache.lookup_exact(q, V1) is not None for q in ["Question a", "Question b", "Question d", "Question e"]
    ] == [
        False,
        True,
        True,
        True,
    ]
    # The reused rows answer for the new entries only.
    hit = cache.lookup("Question e, reworded", basis(4), PIDS, V1)
    assert hit is not None and hit.answer["answer"] == "e"
    s = cache.stats()
    assert (s["entries"], s["evictions"]) == (3, 2)


def test_matrix_grows_past_its_first_allocation() -> None:
    cache = AnswerCache(max_entries=200)
    for i in range(200):
        cache.put(f"Question {i}", answer(str(i)), basis(i), PIDS, V1)
    assert len(cache) == 200
    hit = cache.lookup("Question 150", basis(150), PIDS, V1)
    assert hit is not None and hit.answer["answer"] == "150"
    hit = cache.lookup("Tell me question 3", basis(3), PIDS, V1)
    assert hit is not None and hit.answer["answer"] == "3"
    cache.put("Question 200", answer("200"), basis(200), PIDS, V1)
    assert cache.stats()["evictions"] == 1
    assert cache.lookup_exact("Question 0", V1) is None  # 0 was least recent (3 and 150 were hit)


# --- stats -----------------------------------------------------------------------------------
def test_hit_rate_arithmetic() -> None:
    cache = AnswerCache()
    assert cache.stats()["hit_rate"] == 0.0
    cache.put("Who built the bridge?", answer("Eiffel"), basis(0), PIDS, V1)
    assert cache.lookup_exact("Who built the bridge", V1) is not None  # hit 1
    assert cache.lookup_exact("Who painted it?", V1) is None  # not a miss: the semantic level may answer
    assert cache.lookup("Who painted it?", basis(1), PIDS, V1) is None  # miss 1
    assert cache.lookup("Who built the bridge?", basis(0), PIDS, V1) is not None  # hit 2 (exact)
    assert cache.lookup("Who made the bridge?", basis(0), PIDS, V1) is not None  # hit 3 (semantic)
    assert cache.stats() == {
        "entries": 1,
        "hits": 3,
        "exact_hits": 2,
        "semantic_hits": 1,
        "misses": 1,
        "hit_rate": 0.75,
        "evictions": 0,
        "guard_rejections": 0,
        "exact_misses": 1,
    }


# --- bad input -------------------------------------------------------------------------------
def test_bad_parameters_and_embeddings() -> None:
    with pytest.raises(ValueError, match="at least 1 entry"):
        AnswerCache(max_entries=0)
    with pytest.raises(ValueError, match=r"lies in \[-1, 1\]"):
        AnswerCache(threshold=1.5)
    cache = AnswerCache()
    with pytest.raises(ValueError, match="zero or not finite"):
        cache.put("Q?", answer("a"), [0.0] * DIM, PIDS, V1)
    with pytest.raises(ValueError, match="flat vector"):
        cache.put("Q?", answer("a"), [], PIDS, V1)
    cache.put("Q?", answer("a"), basis(0), PIDS, V1)
    with pytest.raises(ValueError, match="has 768 dimensions, the cached ones 384"):
        cache.lookup("Other?", basis(0, dim=768), PIDS, V1)
    with pytest.raises(ValueError, match="has 768 dimensions"):
        cache.put("Other?", answer("b"), basis(0, dim=768), PIDS, V1)
    assert len(cache) == 1
    # Embeddings that are not unit length are normalised, so cosine stays cosine.
    assert cache.lookup("Q, reworded", [5.0] + [0.0] * (DIM - 1), PIDS, V1) is not None


# --- concurrency -----------------------------------------------------------------------------
def test_concurrent_puts_and_lookups_stay_consistent() -> None:
    cache = AnswerCache(max_entries=40)
    questions = [f"Shared question {i}" for i in range(60)]
    calls = [0] * 8  # lookup calls per thread: each counts exactly one hit, miss or exact miss
    wrong: list[str] = []

    def worker(n: int) -> None:
        rng = random.Random(n)
        for _ in range(300):
            i = rng.randrange(len(questions))
            if rng.random() < 0.4:
                cache.put(questions[i], answer(questions[i]), basis(i), PIDS, V1)
                continue
            if rng.random() < 0.5:
                got = cache.lookup(f"reworded {i}", basis(i), PIDS, V1)
            else:
                got = cache.lookup_exact(questions[i], V1)
            calls[n] += 1
            if got is not None and got.answer["answer"] != questions[i]:
                wrong.append(f"{questions[i]} -> {got.answer['answer']}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    s = cache.stats()
    assert s["hits"] + s["misses"] + s["exact_misses"] == sum(calls)
    assert s["hits"] == s["exact_hits"] + s["semantic_hits"] > 0
    assert s["entries"] == len(cache) <= 40
    present = sum(cache.lookup_exact(q, V1) is not None for q in questions)
    assert present == s["entries"]
    assert s["evictions"] >= 20  # 60 distinct questions through 40 slots


# --- latency ---------------------------------------------------------------------------------
def p95_ms(samples: list[float]) -> float:
    return sorted(samples)[int(0.95 * (len(samples) - 1))] * 1000.0


def test_hit_latency_with_1000_entries() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1000, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cache = AnswerCache(max_entries=1024)
    for i in range(1000):
        cache.put(f"What is fact {i} of the archive?", answer(str(i)), vectors[i].tolist(), PIDS, V1)
    # Queries near a cached vector, worded differently: each lookup goes through the exact miss,
    # the matrix product, the candidate checks and the guard, and ends in a semantic hit.
    probe = [int(i) for i in rng.integers(0, 1000, 300)]
    noisy = vectors[probe] + 0.01 * rng.standard_normal((len(probe), DIM)).astype(np.float32)
    queries = [v.tolist() for v in noisy]
    semantic, exact = [], []
    for i, q in zip(probe, queries, strict=True):
        t0 = time.perf_counter()
        hit = cache.lookup(f"Tell me fact {i} of the archive", q, PIDS, V1)
        semantic.append(time.perf_counter() - t0)
        assert hit is not None and hit.answer["answer"] == str(i)
    for i in probe:
        t0 = time.perf_counter()
        hit = cache.lookup_exact(f"what is fact {i} of the archive", V1)
        exact.append(time.perf_counter() - t0)
        assert hit is not None
    assert cache.stats()["semantic_hits"] == len(probe)
    print(f"lookup p95 {p95_ms(semantic):.3f} ms, lookup_exact p95 {p95_ms(exact):.4f} ms")
    assert p95_ms(semantic) < 5.0
    assert p95_ms(exact) < 0.5
