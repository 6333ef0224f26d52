"""Choose the answer cache's cosine threshold from data: how many distinct questions would wrongly hit.

Embeds the first ``--limit`` dev-a questions with MiniLM and, for each threshold, counts the pairs
of *different* questions (different ids, different normalised text) from the same article — a
stand-in for "the same retrieved passages" — whose cosine is at or above the threshold. Of those,
the guard refuses the ones that differ in negation, numbers or comparatives; the rest are false
hits. ``wrong answer`` counts the false hits whose gold answers share nothing, i.e. where serving
the cached answer would score 0.

Usage: ``python -m benchmarks.cache_threshold [--limit 600] [--examples 0.93]``
"""

from __future__ import annotations

# Imports inside functions: each phase (and each child process, after it sets its environment) imports
# only what it measures, so one phase never pays for another's models.

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

THRESHOLDS = (0.85, 0.9, 0.93, 0.95, 0.97)


def threshold_table(
    questions: list[Any], vectors: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS
) -> tuple[list[dict[str, Any]], dict[float, list[tuple[str, str, float]]]]:
    """Per threshold: pairs above it, guard refusals, false hits; plus the false-hit pairs themselves.

    :param questions: ``eval.squad_metrics.Question`` records, in the order of ``vectors``.
    :param vectors: their unit embeddings, one row each.
    :returns: table rows and, per threshold, the (question, question, cosine) false hits.
    """
    from edge.answer_cache import normalize_question, question_signature
    from eval.squad_metrics import normalize_answer

    norms = [normalize_question(q.question) for q in questions]
    sigs = [question_signature(q.question) for q in questions]
    golds = [{normalize_answer(a) for a in q.answers} for q in questions]
    sims = vectors @ vectors.T
    upper = np.triu(np.ones_like(sims, dtype=bool), k=1)
    titles = np.array([q.title for q in questions])
    same_title = (titles[:, None] == titles[None, :]) & upper
    distinct = [
        (int(i), int(j))
        for i, j in zip(*np.nonzero(same_title), strict=True)
        if questions[i].id != questions[j].id and norms[i] != norms[j]
    ]
    rows: list[dict[str, Any]] = []
    examples: dict[float, list[tuple[str, str, float]]] = {}
    for t in thresholds:
        above = [(i, j) for i, j in distinct if sims[i, j] >= t]
        passed = [(i, j) for i, j in above if sigs[i].matches(sigs[j])]
        wrong = [(i, j) for i, j in passed if not golds[i] & golds[j]]
        affected = {k for pair in passed for k in pair}
        rows.append(
            {
                "threshold": t,
                "pairs": len(distinct),
                "above": len(above),
                "guard_refused": len(above) - len(passed),
                "false_hits": len(passed),
                "wrong_answer": len(wrong),
                "false_hit_rate": len(passed) / len(distinct) if distinct else 0.0,
                "questions_affected": len(affected) / len(questions),
            }
        )
        examples[t] = [(questions[i].question, questions[j].question, float(sims[i, j])) for i, j in passed]
    return rows, examples


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as GitHub markdown."""
    lines = [
        (
            "| threshold | same-article distinct pairs | cosine ≥ t | guard refused | false hits | same answer "
            "| wrong answer | false-hit rate | questions with a false hit |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['threshold']:.2f} | {r['pairs']} | {r['above']} | {r['guard_refused']} | {r['false_hits']} "
            f"| {r['false_hits'] - r['wrong_answer']} | {r['wrong_answer']} | {r['false_hit_rate']:.2e} | {100 * r['questions_affected']:.1f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from edge.embedder import SentenceEmbedder
    from eval.data import load_questions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/squad-v2-dev-a.json"))
    parser.add_argument("--limit", type=int, default=600, help="first N questions of the file")
    parser.add_argument("--skip", type=int, default=0, help="start after the first N (a held-out slice)")
    parser.add_argument("--seed", type=int, default=None, help="a seeded sample instead of the first N")
    parser.add_argument("--examples", type=float, default=None, help="print the false hits at this threshold")
    args = parser.parse_args(argv)

    questions = load_questions(args.data, seed=args.seed)[args.skip : args.skip + args.limit]
    vectors = np.asarray(SentenceEmbedder().load().encode([q.question for q in questions]), dtype=np.float32)
    thresholds = tuple(sorted(set(THRESHOLDS) | ({args.examples} if args.examples is not None else set())))
    rows, examples = threshold_table(questions, vectors, thresholds)
    articles = len({q.title for q in questions})
    print(f"{len(questions)} questions from {articles} articles of {args.data}\n")
    print(markdown(rows))
    if args.examples is not None:
        print(f"\nfalse hits at {args.examples}:")
        for a, b, cos in sorted(examples[args.examples], key=lambda e: -e[2]):
            print(f"  {cos:.3f}  {a!r}  ~  {b!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
