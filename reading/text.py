"""Reading a model's reply: answer normalisation, cleaning, "no answer" detection and span finding.

Both tiers parse replies with these (the edge reader and the cloud gateway), so an answer means
the same on either side.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def find_span(answer: str, passage: str) -> tuple[int, int] | None:
    """Character span ``(start, end)`` of ``answer`` inside ``passage``, case-insensitively.

    Tries the answer as given, then without surrounding quotes/punctuation and a leading article,
    because small models often add those around a span they copied.
    """
    if not answer.strip():
        return None
    hay = passage.lower()
    candidates = [answer.strip()]
    trimmed = answer.strip().strip(" \"'`.,;:!?()[]")
    candidates.append(trimmed)
    candidates.append(re.sub(r"^(the|a|an)\s+", "", trimmed, flags=re.IGNORECASE))
    for cand in candidates:
        if not cand:
            continue
        start = passage.find(cand)  # the same case first: "Steam" at a sentence start is not "steam"
        if start < 0:
            start = hay.find(cand.lower())
        if start >= 0:
            return start, start + len(cand)
    return None


_WORD = re.compile(r"\S+")
# Words that never make an answer on their own at the edge of a span.
_EDGE_STOP = frozenset(
    ["a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "of", "in", "on", "at", "to", "by", "for", "from", "with", "as", "and", "or", "its", "it", "their", "his", "her", "this", "that", "these", "those", "which", "who", "whom", "whose", "what", "when", "where", "why", "how", "answer", "passage"]
)


def _key(word: str) -> str:
    return word.lower().strip(string.punctuation + "“”‘’")


def extract_answer_span(reply: str, question: str, passages: list[str]) -> str | None:
    """The answer inside a sentence-style reply, as an exact span of a passage.

    Small models often answer "The capital of X is Miret." instead of "Miret". The answer is the
    longest run of reply words that occurs verbatim in a passage, trimmed of words that only
    repeat the question or are function words; ties go to the earliest run.

    :returns: the passage text of that span, or None when no run carries a word the question lacks.
    """
    words = [(m.start(), m.end()) for m in _WORD.finditer(reply)]
    if not words or not passages:
        return None
    lowered = [p.lower() for p in passages]
    q_words = {_key(w) for w in question.split()}
    best: tuple[int, int, str] | None = None  # (content words, -start, text)
    for i in range(len(words)):
        for j in range(len(words) - 1, i - 1, -1):
            a, b = i, j
            while a <= b and (_key(reply[words[a][0] : words[a][1]]) in q_words | _EDGE_STOP):
                a += 1
            while b >= a and (_key(reply[words[b][0] : words[b][1]]) in q_words | _EDGE_STOP):
                b -= 1
            if a > b:
                continue
            text = reply[words[a][0] : words[b][1]].strip(" \"'`.,;:!?()[]")
            if not text:
                continue
            content = sum(1 for k in range(a, b + 1) if _key(reply[words[k][0] : words[k][1]]) not in q_words)
            if best is not None and (content, -a) <= best[:2]:
                continue
            for passage, low in zip(passages, lowered):
                start = low.find(text.lower())
                if start >= 0:
                    best = (content, -a, passage[start : start + len(text)])
                    break
    return best[2] if best else None


# Replies that mean "the passages do not say" (checked on the lower-cased reply).
_NO_ANSWER = re.compile(
    r"^(unanswerable|no answer|none|n/?a|unknown|i (do not|don't) know|not (mentioned|stated|given|provided|specified))\b"
    r"|\b(unanswerable|cannot be answered|can't be answered|does not (say|mention|contain|provide)|"
    r"is not (mentioned|stated|provided|given)|no information)\b"
)
# A reply that is not a span of any passage is less likely right (SQuAD answers are spans).
NOT_A_SPAN_FACTOR = 0.5


def clean_reply(reply: str) -> str:
    """First line of the reply without wrapping quotes, 'Answer:' prefixes or a final period."""
    text = reply.strip().splitlines()[0].strip() if reply.strip() else ""
    text = re.sub(r"^(answer|a)\s*:\s*", "", text, flags=re.IGNORECASE)
    text = text.strip().strip("\"'`").strip()
    if text.endswith(".") and not re.search(r"\b[A-Z]\.$|\d\.$", text):
        text = text[:-1].rstrip()
    return text


def is_no_answer(text: str) -> bool:
    """Does a cleaned reply say that the passages hold no answer?"""
    return not text or bool(_NO_ANSWER.search(text.lower()))


def verbatim_span(reply: str, passages: Sequence[str]) -> str | None:
    """The passage text of ``reply`` when the reply (its first line, stripped; or without wrapping
    quotes, a final period or a leading article, see :func:`find_span`) occurs verbatim in a passage."""
    first = reply.strip().splitlines()[0].strip() if reply.strip() else ""
    for candidate in (first, clean_reply(reply)):
        if not candidate:
            continue
        for passage in passages:
            span = find_span(candidate, passage)
            if span is not None:
                return passage[span[0] : span[1]]
    return None


def ground_answer(answer: str, question: str, passages: Sequence[str]) -> str | None:
    """The passage span an answer stands for, or None when it is grounded in no passage.

    A reply that occurs verbatim in a passage is the answer as it is ("A Turing machine" stays
    whole, "T(n) = O(n2)" keeps its parentheses); only a sentence-style reply ("The capital is
    Miret.") is cut down to the span that carries what the question lacks.
    """
    if not answer.strip():
        return None
    return verbatim_span(answer, passages) or extract_answer_span(clean_reply(answer), question, list(passages))


def parse_answer(reply: str, question: str, passages: Sequence[str]) -> str:
    """The answer in a model reply ('' = no answer): a verbatim span of a passage as it is, else the
    cleaned reply cut down to the passage span that carries what the question lacks (a sentence, or
    a reply that echoes the question), else the cleaned reply."""
    text = clean_reply(reply)
    if is_no_answer(text):
        return ""
    return ground_answer(reply, question, passages) or text


def reply_confidence(token_logprobs: Sequence[float], is_span: bool, has_answer: bool) -> float:
    """The reply's geometric-mean token probability, discounted for an answer that is no
    passage's span; in [0, 1]."""
    lps = [lp for lp in token_logprobs if math.isfinite(lp)]
    confidence = math.exp(sum(lps) / len(lps)) if lps else 0.0
    if has_answer and not is_span:
        confidence *= NOT_A_SPAN_FACTOR
    return round(min(max(confidence, 0.0), 1.0), 4)
