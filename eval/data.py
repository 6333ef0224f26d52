"""SQuAD v2 questions from any file in the official format."""

from __future__ import annotations

import random
from pathlib import Path

from eval.squad_metrics import Question, gold_answers
from indexing.errors import InputFormatError
from indexing.loaders import read_squad


def load_questions(path: Path, limit: int | None = None, seed: int | None = None) -> list[Question]:
    """Questions of a SQuAD v2 file in file order; the first ``limit``, or a seeded sample of them.

    :raises InputFileError, InputFormatError: the file is not SQuAD v2.
    """
    out: list[Question] = []
    for article in read_squad(path):
        title = article["title"].replace("_", " ")
        for p, paragraph in enumerate(article["paragraphs"]):
            for n, qa in enumerate(paragraph.get("qas") or []):
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or "id" not in qa:
                    raise InputFormatError(
                        f"{path}: question {n} of paragraph {p} of {article['title']!r} needs 'id' and 'question' "
                        "— pass a SQuAD v2 file"
                    )
                out.append(Question(str(qa["id"]), qa["question"], paragraph["context"], title, gold_answers(qa)))
    if not out:
        raise InputFormatError(f"{path} holds no questions — pass a SQuAD v2 file with 'qas'")
    if seed is not None:
        random.Random(seed).shuffle(out)
    return out[:limit] if limit else out
