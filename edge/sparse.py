"""BM25 sparse vectors for Qdrant hybrid retrieval.

Documents carry BM25's saturated term frequency; the collection's sparse vector uses Qdrant's
``Modifier.IDF`` so the server multiplies in the inverse document frequency at query time.
Queries send each distinct term with weight 1. Terms are hashed to 31-bit indices (collisions
among a collection's few hundred thousand terms are negligible).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

_TOKEN = re.compile(r"[0-9a-z]+")
# Short English stop list: the words that carry no retrieval signal in SQuAD-style questions.
_STOP = frozenset(
    ["a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "yourselves"]
)
K1 = 1.2
B = 0.75


def terms(text: str) -> list[str]:
    """Lower-cased word tokens without stop words, with a light plural strip."""
    out = []
    for tok in _TOKEN.findall(text.lower()):
        if tok in _STOP:
            continue
        if len(tok) > 4 and tok.endswith("s") and not tok.endswith("ss"):
            tok = tok[:-1]
        out.append(tok)
    return out


def term_id(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little") & 0x7FFFFFFF


def document_vector(text: str, avg_len: float) -> tuple[list[int], list[float]]:
    """BM25 term weights of a passage (without IDF, which Qdrant applies)."""
    toks = terms(text)
    counts = Counter(toks)
    norm = K1 * (1 - B + B * len(toks) / max(avg_len, 1.0))
    weights: dict[int, float] = {}
    for term, tf in counts.items():
        idx = term_id(term)
        weights[idx] = weights.get(idx, 0.0) + tf * (K1 + 1) / (tf + norm)
    return list(weights), list(weights.values())


def query_vector(text: str) -> tuple[list[int], list[float]]:
    ids = sorted({term_id(t) for t in terms(text)})
    return ids, [1.0] * len(ids)


def average_length(texts: list[str]) -> float:
    return sum(len(terms(t)) for t in texts) / max(len(texts), 1)
