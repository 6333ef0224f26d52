"""A bounded, thread-safe answer cache for the edge: an exact level and a semantic level.

The exact level is keyed on the normalised question text and the index version and is checked
before the question is embedded (an embedding costs ~10 ms here, over the 5 ms budget of a hit).
The semantic level is checked after embedding and retrieval: cosine similarity of the question
embeddings at or above a threshold, the same index version, the same set of retrieved passage
ids, and a guard that refuses near-duplicates differing in negation, numbers, a comparative, a
typed question word or a negating prefix ("who did X" vs "who did not do X", "in 1990" vs "in
1999", "largest" vs "smallest", "who" vs "when", "proven" vs "unproven").
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Semantic-level cosine threshold, chosen by `python -m benchmarks.cache_threshold`: MiniLM on the first
# 600 dev-a questions, 98,164 pairs of different questions from the same article (a stand-in for
# "the same retrieved passages"); false hits = pairs at cosine >= t that the guard lets through,
# "wrong" = those whose gold answers differ (same-answer ones are harmless):
#   t     0.85  0.90  0.93  0.95  0.97
#   false   36    20    11     8     3   (0.95: 8.2e-05 of pairs; 2.7% of questions have one)
#   wrong   33    18    11     8     3
# On all 3,708 dev-a questions (724,502 pairs) 0.93 / 0.95 / 0.97 give 97 / 53 / 21 wrong and
# 17 / 14 / 6 same-answer hits: 0.95 keeps most useful hits and cuts wrong ones by almost half
# against 0.93, while close rewordings sit at 0.94-0.98 ("What is the capital of France?" vs
# "What's the capital city of France?" = 0.957), most of which 0.97 would miss. The false hits left are SQuAD v2's
# adversarial twins with one content word swapped ("problem" vs "solution"), beyond a lexical guard.
DEFAULT_THRESHOLD = 0.95

_TRAILING = " \t\r\n?.!"
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
# Thousands separators only when followed by exactly three digits, so "1,2" stays two numbers.
_NUMBER = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(st|nd|rd|th|'?s)?(?![a-z0-9])|(\d+(?:\.\d+)?)")

_NEGATION_WORDS = frozenset(
    ["not", "no", "never", "without", "none", "nobody", "nothing", "neither", "nor", "nowhere", "non"]
)
# Spellings that mean plain "not": "did not" == "didn't" == "didnt", "can not" == "cannot".
_NOT_FORMS = frozenset(
    ["cannot", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "cant", "couldnt", "wont",
     "wouldnt", "shouldnt", "hasnt", "havent", "hadnt", "mustnt", "neednt", "aint"]
)  # fmt: skip
# "proven" vs "unproven", "connected" vs "unconnected": SQuAD v2's unanswerable questions are
# often made exactly this way, and MiniLM puts such pairs at cosine 0.93-0.98. "a" is left out:
# "way"/"away", "live"/"alive" are not opposites.
_NEGATING_PREFIXES = ("un", "in", "im", "il", "ir", "non", "dis")
# Question words that fix the answer's type. "what"/"which" are left out: "What is the capital"
# and "Which city is the capital" ask the same thing.
_TYPED_WH = frozenset(["who", "whom", "whose", "when", "where", "why", "how"])
_CARDINALS = {
    word: str(value)
    for value, word in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
    )
} | {
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
    "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000",
    "trillion": "1000000000000",
}  # fmt: skip
_ORDINALS = {
    "first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th", "sixth": "6th",
    "seventh": "7th", "eighth": "8th", "ninth": "9th", "tenth": "10th", "eleventh": "11th", "twelfth": "12th",
    "twentieth": "20th", "hundredth": "100th", "thousandth": "1000th",
}  # fmt: skip
# Words whose swap flips the answer while barely moving the embedding ("largest" vs "smallest").
_CONTRAST_WORDS = frozenset(
    ["before", "after", "earlier", "later", "earliest", "latest", "last", "most", "least", "more", "less",
     "fewer", "fewest", "larger", "largest", "smaller", "smallest", "bigger", "biggest", "higher", "highest",
     "lower", "lowest", "longer", "longest", "shorter", "shortest", "older", "oldest", "younger", "youngest",
     "newer", "newest", "better", "best", "worse", "worst", "maximum", "minimum"]
)  # fmt: skip


def normalize_question(text: str) -> str:
    """The exact-level key of a question: lowercased, whitespace collapsed, trailing ?.! dropped."""
    # A curly apostrophe is what phones type for "What's"; it must not make a different key.
    return " ".join(text.replace("\u2019", "'").lower().split()).rstrip(_TRAILING)


@dataclass(frozen=True)
class QuestionSignature:
    """What the guard compares: two questions may share an answer only if :meth:`matches` says so."""

    negations: tuple[str, ...]  # sorted: a multiset, so "not ... not" differs from one "not"
    numbers: tuple[str, ...]  # sorted: a multiset
    contrasts: frozenset[str]
    asks: frozenset[str]  # who/when/where/why/how: "who issued X" vs "in what year was X issued"
    words: frozenset[str] = field(default=frozenset(), compare=False)

    def matches(self, other: QuestionSignature) -> bool:
        """Equal negations, numbers, comparatives and question words; no word negated by a prefix in the other."""
        if self != other:
            return False
        mine, theirs = self.words - other.words, other.words - self.words
        return not any(p + w in theirs for w in mine for p in _NEGATING_PREFIXES) and not any(
            p + w in mine for w in theirs for p in _NEGATING_PREFIXES
        )


def _canonical_number(integral: str, fraction: str | None, suffix: str | None) -> str:
    """'4,000' -> '4000', '10th' -> '10th', "1990's" -> '1990s', '2.5' -> '2.5'."""
    text = integral.replace(",", "") + (fraction or "")
    if suffix:
        text += "s" if suffix in ("s", "'s") else suffix
    return text


def question_signature(question: str) -> QuestionSignature:
    """Negation markers, numbers (digits and number words), comparatives and question words of a question."""
    text = question.replace("\u2019", "'").lower()
    negations: list[str] = []
    numbers: list[str] = []
    contrasts: set[str] = set()
    asks: set[str] = set()
    for match in _NUMBER.finditer(text):
        if match.group(4) is not None:  # digits glued to letters ("mp3", "covid19x") still count
            numbers.append(match.group(4))
        else:
            numbers.append(_canonical_number(match.group(1), match.group(2), match.group(3)))
    words = _WORD.findall(text)
    for word in words:
        if word.endswith("n't") or word in _NOT_FORMS or word == "not":
            negations.append("not")
        elif word in _NEGATION_WORDS:
            negations.append(word)
        elif word in _CARDINALS:
            numbers.append(_CARDINALS[word])
        elif word in _ORDINALS:
            numbers.append(_ORDINALS[word])
        elif word in _CONTRAST_WORDS:
            contrasts.add(word)
        elif word in _TYPED_WH:
            asks.add(word)
    return QuestionSignature(
        negations=tuple(sorted(negations)),
        numbers=tuple(sorted(numbers)),
        contrasts=frozenset(contrasts),
        asks=frozenset(asks),
        words=frozenset(w for w in words if len(w) > 2),
    )


@dataclass(frozen=True)
class CacheEntry:
    """One cached answer and what it was computed from."""

    question: str
    answer: dict[str, Any]  # the JSON-able answer record; shared by every hit, copy before changing it
    index_version: str
    passage_ids: tuple[str, ...]
    embedding: tuple[float, ...] | None
    created_at: float


@dataclass(slots=True)
class _Slot:
    entry: CacheEntry
    key: tuple[str, str]
    passages: frozenset[str]
    signature: QuestionSignature


def _unit_vector(embedding: Sequence[float]) -> np.ndarray:
    """``embedding`` as a float32 unit vector.

    :raises ValueError: not a 1-d vector, or zero / non-finite.
    """
    vec = np.asarray(embedding, dtype=np.float32)
    if vec.ndim != 1 or vec.size == 0:
        raise ValueError(f"the embedding must be a flat vector of floats, got shape {vec.shape}")
    norm = float(np.linalg.norm(vec))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("the embedding is zero or not finite — pass the question's sentence embedding")
    return vec / norm


class AnswerCache:
    """Exact + semantic answer cache with LRU eviction, safe to share between threads.

    Hits of either level count as hits. A miss of :meth:`lookup_exact` is not counted as a miss
    (the semantic level may still answer); misses are counted by :meth:`lookup`, so with the
    intended call order (``lookup_exact`` → embed + retrieve → ``lookup`` → ``put``) each question
    counts once and ``hit_rate`` is per question.

    :param max_entries: entries kept; a put beyond it evicts the least recently used.
    :param threshold: minimum cosine similarity of question embeddings for a semantic hit.
    :raises ValueError: ``max_entries`` < 1 or ``threshold`` outside [-1, 1].
    """

    def __init__(self, max_entries: int = 1024, threshold: float = DEFAULT_THRESHOLD) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries is {max_entries} — the cache needs room for at least 1 entry")
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is {threshold} — a cosine threshold lies in [-1, 1]")
        self.max_entries = max_entries
        self.threshold = threshold
        self._lock = threading.Lock()
        self._slots: list[_Slot | None] = []
        self._free: list[int] = []
        self._lru: OrderedDict[int, None] = OrderedDict()  # slot -> None, least recent first
        self._exact: dict[tuple[str, str], int] = {}
        # Rows of the cached unit embeddings; row i belongs to slot i. Grown by doubling up to
        # max_entries, so a large max_entries costs no memory until it is used.
        self._matrix: np.ndarray | None = None
        self._active = np.zeros(0, dtype=bool)
        self._counts: Counter[str] = Counter()

    def __len__(self) -> int:
        with self._lock:
            return len(self._lru)

    def lookup_exact(self, question: str, index_version: str) -> CacheEntry | None:
        """The entry for this question text (normalised) and index version; no embedding needed."""
        key = (normalize_question(question), index_version)
        with self._lock:
            slot = self._exact.get(key)
            if slot is None:
                self._counts["exact_misses"] += 1
                return None
            return self._hit(slot, "exact_hits")

    def lookup(
        self, question: str, embedding: Sequence[float], passage_ids: Sequence[str], index_version: str
    ) -> CacheEntry | None:
        """The best entry for a question already embedded and retrieved for, or None (a miss).

        Tries the exact level first (same text, same passages), then the cached entry with the
        highest cosine ≥ threshold that has the same index version, the same set of passage ids
        and the same negations, numbers and comparatives.

        :raises ValueError: the embedding is malformed or has another dimension than the cached ones.
        """
        key = (normalize_question(question), index_version)
        vec = _unit_vector(embedding)
        passages = frozenset(passage_ids)
        signature = question_signature(question)
        with self._lock:
            slot = self._exact.get(key)
            if slot is not None and self._slot(slot).passages == passages:
                return self._hit(slot, "exact_hits")
            if self._matrix is None:
                self._counts["misses"] += 1
                return None
            self._check_dimension(vec)
            rows = len(self._slots)
            scores = self._matrix[:rows] @ vec
            candidates = np.flatnonzero((scores >= self.threshold) & self._active[:rows])
            guarded = False
            for cand in candidates[np.argsort(-scores[candidates], kind="stable")]:
                found = self._slot(int(cand))
                if found.entry.index_version != index_version or found.passages != passages:
                    continue
                if not found.signature.matches(signature):
                    guarded = True
                    continue
                return self._hit(int(cand), "semantic_hits")
            self._counts["misses"] += 1
            if guarded:
                self._counts["guard_rejections"] += 1
                logger.debug("answer cache: guard refused a near-duplicate of %r", question)
            return None

    def put(
        self,
        question: str,
        answer: dict[str, Any],
        embedding: Sequence[float],
        passage_ids: Sequence[str],
        index_version: str,
    ) -> None:
        """Cache ``answer``, replacing an entry of the same normalised text and index version.

        :raises ValueError: the embedding is malformed or has another dimension than the cached ones.
        """
        vec = _unit_vector(embedding)
        key = (normalize_question(question), index_version)
        entry = CacheEntry(
            question=question,
            answer=copy.deepcopy(answer),  # later edits of the caller's dict must not leak into hits
            index_version=index_version,
            passage_ids=tuple(passage_ids),
            embedding=tuple(float(x) for x in embedding),
            created_at=time.time(),
        )
        record = _Slot(entry, key, frozenset(entry.passage_ids), question_signature(question))
        with self._lock:
            if self._matrix is None:
                self._matrix = np.zeros((min(self.max_entries, 64), vec.size), dtype=np.float32)
                self._active = np.zeros(self._matrix.shape[0], dtype=bool)
            self._check_dimension(vec)
            slot = self._exact.get(key)
            if slot is None:
                if len(self._lru) >= self.max_entries:
                    self._evict_oldest()
                slot = self._new_slot()
                self._exact[key] = slot
            self._slots[slot] = record
            self._matrix[slot] = vec
            self._active[slot] = True
            self._lru[slot] = None
            self._lru.move_to_end(slot)

    def invalidate(self, index_version: str | None = None) -> int:
        """Drop the entries of every index version but ``index_version`` (None: drop all).

        :returns: how many entries were dropped.
        """
        with self._lock:
            stale = [
                slot
                for slot in self._lru
                if index_version is None or self._slot(slot).entry.index_version != index_version
            ]
            for slot in stale:
                self._release(slot)
        if stale:
            logger.info("answer cache: dropped %s entries not of index version %s", len(stale), index_version)
        return len(stale)

    def stats(self) -> dict[str, float]:
        """entries, hits, exact_hits, semantic_hits, misses, hit_rate, evictions, guard_rejections, exact_misses."""
        with self._lock:
            c = self._counts
            hits = c["exact_hits"] + c["semantic_hits"]
            looked = hits + c["misses"]
            return {
                "entries": len(self._lru),
                "hits": hits,
                "exact_hits": c["exact_hits"],
                "semantic_hits": c["semantic_hits"],
                "misses": c["misses"],
                "hit_rate": hits / looked if looked else 0.0,
                "evictions": c["evictions"],
                "guard_rejections": c["guard_rejections"],
                "exact_misses": c["exact_misses"],
            }

    # --- internals: callers hold self._lock --------------------------------------------------
    def _slot(self, slot: int) -> _Slot:
        record = self._slots[slot]
        assert record is not None, "an indexed slot is always occupied"
        return record

    def _hit(self, slot: int, level: str) -> CacheEntry:
        self._lru.move_to_end(slot)
        self._counts[level] += 1
        return self._slot(slot).entry

    def _check_dimension(self, vec: np.ndarray) -> None:
        assert self._matrix is not None
        if vec.size != self._matrix.shape[1]:
            raise ValueError(
                f"the embedding has {vec.size} dimensions, the cached ones {self._matrix.shape[1]} "
                "— call invalidate() after changing the embedding model"
            )

    def _new_slot(self) -> int:
        if self._free:
            return self._free.pop()
        slot = len(self._slots)
        assert self._matrix is not None
        if slot == self._matrix.shape[0]:
            rows = min(self.max_entries, 2 * slot)
            grown = np.zeros((rows, self._matrix.shape[1]), dtype=np.float32)
            grown[:slot] = self._matrix
            self._matrix = grown
            self._active = np.concatenate([self._active, np.zeros(rows - slot, dtype=bool)])
        self._slots.append(None)
        return slot

    def _release(self, slot: int) -> None:
        record = self._slot(slot)
        del self._exact[record.key]
        del self._lru[slot]
        self._slots[slot] = None
        self._active[slot] = False
        self._free.append(slot)

    def _evict_oldest(self) -> None:
        slot = next(iter(self._lru))
        self._release(slot)
        self._counts["evictions"] += 1
