"""SQuAD v2 questions from any file in the official format."""

from __future__ import annotations

import random
from pathlib import Path

from eval.squad_metrics import Question, gold_answers
from pipelines.index import InputFormatError, read_squad


def load_questions(path: Path, limit: int | None = None, seed: int | None = None) -> list[Question]:
    """Questions of a SQuAD v2 file in file order; the first ``limit``, or a seeded sample of them.

    :raises InputFileError, InputFormatError: the file is not SQuAD v2.
    """
    out: list[Question] = []
    for article in read_squad(path):
        title = article["title"].replace("_", " ")
        for p, paragraph in enumerate(article["paragraphs"]):
            qas = paragraph.get("qas") or []
            if not isinstance(qas, list):
                raise InputFormatError(f"{path}: paragraph {p} of {article['title']!r} has 'qas' that is not a list "
                                       "— make it a list of questions, as in SQuAD v2")
            for n, qa in enumerate(qas):
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or "id" not in qa:
                    raise InputFormatError(
                        f"{path}: question {n} of paragraph {p} of {article['title']!r} needs 'id' and 'question' "
                        "— pass a SQuAD v2 file"
                    )
                qid = qa["id"]
                if isinstance(qid, bool) or not isinstance(qid, (str, int)):
                    raise InputFormatError(f"{path}: question {n} of paragraph {p} of {article['title']!r} has an 'id' "
                                           "that is not a string — give every question a string id")
                _check_answers(path, str(qid), qa)
                out.append(Question(str(qid), qa["question"], paragraph["context"], title, gold_answers(qa)))
    if not out:
        raise InputFormatError(f"{path} holds no questions — pass a SQuAD v2 file with 'qas'")
    if seed is not None:
        random.Random(seed).shuffle(out)
    return out[:limit] if limit else out


def _check_answers(path: Path, qid: str, qa: dict[str, object]) -> None:
    """:raises InputFormatError: 'answers' is not a list of objects with a string 'text' (the message names the id)."""
    answers = qa.get("answers")
    if answers is None:
        return
    if not isinstance(answers, list) or not all(isinstance(a, dict) and isinstance(a.get("text"), str) for a in answers):
        raise InputFormatError(
            f"{path}: question {qid[:80]!r} has 'answers' that is not a list of {{\"text\": …}} objects — write it as "
            "in SQuAD v2, e.g. \"answers\": [{\"text\": \"Rollo\", \"answer_start\": 0}] ([] when unanswerable)"
        )
